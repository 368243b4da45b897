"""The worker: claims due jobs, runs each in its own transaction, retries failures.

`keel worker` runs one in its own process; `keel serve` runs one inside each API process
unless WORKER_ENABLED=false. Any number may run at once: claiming uses SKIP LOCKED.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.db import Database
from keel.jobs import repository
from keel.jobs.models import JobStatus

log = structlog.get_logger(__name__)

# A handler does the job's work in the session it is given; the worker commits it together
# with the job's deletion, so work is never done twice nor lost.
Handler = Callable[[AsyncSession, dict[str, Any]], Awaitable[None]]


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

    async def run_once(self) -> int:
        """Claim and run the jobs that are due now. Returns how many were claimed."""
        async with self.database.sessionmaker() as session, session.begin():
            await repository.requeue_stale(session, self.lease_seconds)
            jobs = await repository.claim(session, self.name, self.batch)
        for job in jobs:
            await self._run(job)
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
                claimed = await self.run_once()
            except Exception:  # the database went away, say: log, wait, try again
                log.exception("worker.poll_failed", worker=self.name)
                claimed = 0
            if not claimed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_seconds)
        log.info("worker.stopped", worker=self.name, processed=self.processed)

    async def _run(self, job: repository.ClaimedJob) -> None:
        handler = self.handlers.get(job.kind)
        try:
            if handler is None:
                raise LookupError(f"no handler for job kind {job.kind!r}")
            async with self.database.sessionmaker() as session, session.begin():
                await handler(session, job.payload)
                await repository.finish(session, job.id)
        except Exception as exc:
            async with self.database.sessionmaker() as session, session.begin():
                status = await repository.fail(session, job, f"{type(exc).__name__}: {exc}")
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
