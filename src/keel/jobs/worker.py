"""The worker: claims due jobs, runs each, retries failures, gives claims back when stopped.

`keel worker` runs one in its own process; `keel serve` runs one inside each API process
unless WORKER_ENABLED=false. Any number may run at once: claiming uses SKIP LOCKED.

A job never holds a connection while it computes. A handler reads what it needs in one
short transaction (`JobRun.read`), works with no connection at all, and writes its results
in another (`JobRun.write`), which first re-checks the claim and deletes the job in the same
commit: work lands once, and only while this worker still holds the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from keel.core import tracing
from keel.core.db import Database
from keel.jobs import repository
from keel.jobs.models import JobStatus

log = structlog.get_logger(__name__)


class LeaseLost(Exception):  # noqa: N818 - a state, not a failure of the job
    """The job was taken back (its lease ran out) before this worker wrote its results."""


class JobRun:
    """One claimed job, as its handler sees it: a read transaction, then a write one."""

    def __init__(self, database: Database, worker: str, job: repository.ClaimedJob) -> None:
        self.database = database
        self.worker = worker
        self.job = job
        self.writing = False  # inside `write()`: a stop waits for the commit
        self.finished = False  # `write()` committed, the job is gone

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A short transaction for reads; the connection goes back to the pool after it."""
        async with self.database.sessionmaker() as session, session.begin():
            yield session

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """The job's one write transaction: it still holds the claim, and is deleted with it.

        Raises LeaseLost (writing nothing) if another worker took the job back meanwhile.
        """
        if self.finished:
            raise RuntimeError("a job writes its results once")
        self.writing = True
        try:
            async with self.database.sessionmaker() as session, session.begin():
                if not await repository.lock_claim(session, self.job, self.worker):
                    raise LeaseLost(str(self.job.id))
                yield session
                await repository.finish(session, self.job.id)
            self.finished = True
        finally:
            self.writing = False


# A handler reads through run.read(), computes with no connection, writes through run.write().
# A handler that never calls write() has nothing to store: the worker deletes the job itself.
Handler = Callable[[JobRun, dict[str, Any]], Awaitable[None]]


class Worker:
    def __init__(
        self,
        database: Database,
        handlers: Mapping[str, Handler],
        *,
        batch: int = 4,
        poll_seconds: float = 1.0,
        lease_seconds: int = 300,
    ) -> None:
        self.database = database
        self.handlers = dict(handlers)
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.lease_seconds = lease_seconds
        self.name = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.processed = 0
        self.failed = 0
        self.released = 0

    async def run_once(self, stop: asyncio.Event | None = None) -> int:
        """Claim and run the jobs that are due now. Returns how many were claimed.

        Once `stop` is set, the job in hand is abandoned unless it is committing its results,
        and every claim not finished is given back to the queue, its attempt not counted.
        """
        stop = stop or asyncio.Event()
        async with self.database.sessionmaker() as session, session.begin():
            await repository.requeue_stale(session, self.lease_seconds)
            jobs = await repository.claim(session, self.name, self.batch)
        pending = list(jobs)
        try:
            while pending and not stop.is_set():
                if not await self._run(pending[0], stop):
                    break
                pending.pop(0)
        finally:
            if pending:
                await asyncio.shield(self._release(pending))
        return len(jobs)

    async def drain(self) -> int:
        """Run jobs until none is due (for the CLI and tests). Returns how many ran."""
        total = 0
        while claimed := await self.run_once():
            total += claimed
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, sleeping `poll_seconds` whenever the queue is empty."""
        log.info("worker.started", worker=self.name, kinds=sorted(self.handlers))
        while not stop.is_set():
            try:
                claimed = await self.run_once(stop)
            except Exception:  # the database went away, say: log, wait, try again
                log.exception("worker.poll_failed", worker=self.name)
                claimed = 0
            if not claimed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_seconds)
        log.info(
            "worker.stopped", worker=self.name, processed=self.processed, released=self.released
        )

    async def _release(self, jobs: list[repository.ClaimedJob]) -> None:
        try:
            async with self.database.sessionmaker() as session, session.begin():
                released = await repository.release(session, jobs, self.name)
        except Exception:  # the lease will hand them back instead
            log.exception("worker.release_failed", worker=self.name, jobs=len(jobs))
            return
        self.released += released
        if released:
            log.info("worker.released", worker=self.name, jobs=released)

    async def _run(self, job: repository.ClaimedJob, stop: asyncio.Event) -> bool:
        """Run one job. False: a stop abandoned it before it wrote anything (to be released)."""
        run = JobRun(self.database, self.name, job)
        task = asyncio.create_task(self._handle(run))
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and not run.writing:
                task.cancel()  # mid-read or mid-computation: nothing is lost
            await asyncio.wait({task})
        finally:
            stopped.cancel()
            task.cancel()  # a no-op once done; if we are cancelled, so is the handler
        return not task.cancelled()

    async def _handle(self, run: JobRun) -> None:
        job = run.job
        with tracing.job_span(job.kind, job.id, job.trace_parent):
            await self._handle_traced(run)

    async def _handle_traced(self, run: JobRun) -> None:
        job = run.job
        handler = self.handlers.get(job.kind)
        try:
            if handler is None:
                raise LookupError(f"no handler for job kind {job.kind!r}")
            await handler(run, job.payload)
            if not run.finished:
                async with run.write():
                    pass
        except LeaseLost:
            log.warning("job.lease_lost", job_id=str(job.id), kind=job.kind, worker=self.name)
            return
        except Exception as exc:
            async with self.database.sessionmaker() as session, session.begin():
                error = f"{type(exc).__name__}: {exc}"
                status = await repository.fail(session, job, self.name, error)
            self.failed += 1
            event = "job.failed" if status is JobStatus.FAILED else "job.retry"
            log.warning(
                event,
                job_id=str(job.id),
                kind=job.kind,
                attempt=job.attempts,
                error=type(exc).__name__,
            )
            return
        self.processed += 1
