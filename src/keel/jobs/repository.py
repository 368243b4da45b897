"""The queue's SQL: enqueue, claim with FOR UPDATE SKIP LOCKED, finish, fail with backoff."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from keel.core import tracing
from keel.core.ids import uuid7
from keel.jobs.models import Job, JobStatus

MAX_BACKOFF_SECONDS = 300
MAX_ERROR_CHARS = 2_000


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    id: UUID
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    trace_parent: str | None = None  # the span that queued it (OpenTelemetry)


async def enqueue(
    session: AsyncSession, kind: str, payload: dict[str, Any], *, max_attempts: int = 5
) -> UUID:
    job = Job(
        id=uuid7(),
        kind=kind,
        payload=payload,
        max_attempts=max_attempts,
        trace_parent=tracing.current_traceparent(),
    )
    session.add(job)
    await session.flush()
    return job.id


async def enqueue_many(
    session: AsyncSession,
    kind: str,
    payloads: list[dict[str, Any]],
    *,
    max_attempts: int = 5,
    tenant_id: UUID | None = None,
) -> list[UUID]:
    trace_parent = tracing.current_traceparent()
    jobs = [
        Job(
            id=uuid7(),
            tenant_id=tenant_id,
            kind=kind,
            payload=p,
            max_attempts=max_attempts,
            trace_parent=trace_parent,
        )
        for p in payloads
    ]
    session.add_all(jobs)
    await session.flush()
    return [job.id for job in jobs]


_CLAIM = text(
    """
    UPDATE app.jobs SET status = 'running', attempts = attempts + 1,
                        locked_at = now(), locked_by = :worker
    WHERE id IN (
        SELECT id FROM app.jobs
        WHERE status = 'queued' AND run_at <= now()
        ORDER BY run_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, kind, payload, attempts, max_attempts, trace_parent
    """
)


async def claim(session: AsyncSession, worker: str, limit: int) -> list[ClaimedJob]:
    """Take up to `limit` due jobs; other workers skip them (SKIP LOCKED), never wait."""
    rows = await session.execute(_CLAIM, {"worker": worker, "limit": limit})
    return [
        ClaimedJob(
            id=row.id,
            kind=row.kind,
            payload=row.payload if isinstance(row.payload, dict) else orjson.loads(row.payload),
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            trace_parent=row.trace_parent,
        )
        for row in rows
    ]


async def requeue_stale(session: AsyncSession, lease_seconds: int) -> int:
    """Give back jobs whose worker vanished (claimed longer ago than the lease)."""
    result = await session.execute(
        text(
            "UPDATE app.jobs SET status = 'queued', locked_at = NULL, locked_by = NULL "
            "WHERE status = 'running' AND locked_at < now() - make_interval(secs => :lease)"
        ),
        {"lease": lease_seconds},
    )
    return int(getattr(result, "rowcount", 0) or 0)


# The claim still holds the job: not taken back, not claimed again (by anyone).
_LOCK_CLAIM = text(
    "SELECT 1 FROM app.jobs WHERE id = :id AND status = 'running' "
    "AND locked_by = :worker AND attempts = :attempts FOR UPDATE"
)
_FAIL = text(
    "UPDATE app.jobs SET status = :status, locked_at = NULL, locked_by = NULL, "
    "last_error = :error, run_at = now() + make_interval(secs => :delay) "
    "WHERE id = :id AND status = 'running' AND locked_by = :worker AND attempts = :attempts"
)


def _held(job: ClaimedJob, worker: str) -> dict[str, Any]:
    return {"id": job.id, "worker": worker, "attempts": job.attempts}


async def lock_claim(session: AsyncSession, job: ClaimedJob, worker: str) -> bool:
    """Lock the job's row if this claim still holds it (not taken back, not re-claimed).

    Locked, the claim can't be taken back before this transaction ends.
    """
    result = await session.execute(_LOCK_CLAIM, _held(job, worker))
    return result.first() is not None


async def release(session: AsyncSession, jobs: list[ClaimedJob], worker: str) -> int:
    """Give claims back to the queue, due now; their attempt doesn't count. Returns how many."""
    result = await session.execute(
        text(
            "UPDATE app.jobs SET status = 'queued', attempts = greatest(attempts - 1, 0), "
            "locked_at = NULL, locked_by = NULL "
            "WHERE status = 'running' AND locked_by = :worker "
            "AND (id, attempts) IN (SELECT * FROM unnest(CAST(:ids AS uuid[]), "
            "CAST(:attempts AS integer[])))"
        ),
        {
            "worker": worker,
            "ids": [job.id for job in jobs],
            "attempts": [job.attempts for job in jobs],
        },
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def finish(session: AsyncSession, job_id: UUID) -> None:
    """A finished job is deleted, in the same transaction as the work it did."""
    await session.execute(text("DELETE FROM app.jobs WHERE id = :id"), {"id": job_id})


def backoff_seconds(attempts: int) -> float:
    """Exponential with jitter: about 2, 4, 8, ... seconds, at most five minutes."""
    base: float = min(2**attempts, MAX_BACKOFF_SECONDS)
    return base * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not security


async def fail(session: AsyncSession, job: ClaimedJob, worker: str, error: str) -> JobStatus:
    """Retry later with backoff, or mark failed once out of attempts. Returns the new status.

    Only while this claim still holds the job: one taken back meanwhile is left alone.
    """
    status = JobStatus.FAILED if job.attempts >= job.max_attempts else JobStatus.QUEUED
    await session.execute(
        _FAIL,
        {
            "status": status.value,
            "error": error[:MAX_ERROR_CHARS],
            "delay": backoff_seconds(job.attempts),
            **_held(job, worker),
        },
    )
    return status


def _by_status(rows: Any) -> dict[str, int]:
    found = {str(status): int(n) for status, n in rows}
    return {status.value: found.get(status.value, 0) for status in JobStatus}


async def counts(session: AsyncSession, tenant_id: UUID) -> dict[str, int]:
    """The organization's jobs by status."""
    rows = await session.execute(
        select(col(Job.status), func.count())
        .where(col(Job.tenant_id) == tenant_id)
        .group_by(col(Job.status))
    )
    return _by_status(rows.all())


async def list_jobs(
    session: AsyncSession, tenant_id: UUID, status: JobStatus | None, limit: int
) -> list[Job]:
    """The organization's latest jobs (in `status`, if given), newest first."""
    statement = select(Job).where(col(Job.tenant_id) == tenant_id)
    if status is not None:
        statement = statement.where(col(Job.status) == status.value)
    statement = statement.order_by(col(Job.created_at).desc()).limit(limit)
    return list((await session.scalars(statement)).all())


async def counts_all_tenants(session: AsyncSession) -> dict[str, int]:
    """The whole queue by status (platform admins)."""
    rows = await session.execute(select(col(Job.status), func.count()).group_by(col(Job.status)))
    return _by_status(rows.all())


async def list_jobs_all_tenants(session: AsyncSession, status: JobStatus, limit: int) -> list[Job]:
    statement = (
        select(Job)
        .where(col(Job.status) == status.value)
        .order_by(col(Job.updated_at).desc())
        .limit(limit)
    )
    return list((await session.scalars(statement)).all())


async def retry_all_tenants(session: AsyncSession, job_id: UUID) -> bool:
    """Put a failed job back in the queue with fresh attempts (platform admins)."""
    result = await session.execute(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.status) == JobStatus.FAILED.value)
        .values(status=JobStatus.QUEUED.value, attempts=0, run_at=func.now(), last_error=None)
    )
    return bool(getattr(result, "rowcount", 0))


# The check sits in a CTE: Citus rejects a parameterised INSERT ... SELECT whose WHERE
# reads the target table itself ("missing FROM-clause entry"); this form runs on both.
_ENQUEUE_ONCE = text(
    """
    WITH pending AS (
        SELECT 1 FROM app.jobs WHERE kind = :kind AND status IN ('queued', 'running')
          AND id <> :current
        LIMIT 1
    )
    INSERT INTO app.jobs (id, kind, payload, run_at, max_attempts)
    SELECT :id, :kind, CAST(:payload AS jsonb), now() + make_interval(secs => :delay), :attempts
    WHERE NOT EXISTS (SELECT 1 FROM pending)
    RETURNING id
    """
)


async def enqueue_once(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any],
    *,
    delay_seconds: float,
    max_attempts: int = 5,
    current: UUID | None = None,
) -> UUID | None:
    """Queue a `kind` job due in `delay_seconds`, unless one is already queued or running
    (apart from `current`, the job doing the queueing). For periodic jobs: one at a time.

    A transaction-level advisory lock per kind makes concurrent callers take turns.
    """
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('keel.jobs.once:' || :kind))"),
        {"kind": kind},
    )
    result = await session.execute(
        _ENQUEUE_ONCE,
        {
            "id": uuid7(),
            "kind": kind,
            "payload": orjson.dumps(payload).decode(),
            "delay": delay_seconds,
            "attempts": max_attempts,
            "current": current or uuid7(),
        },
    )
    found = result.scalar_one_or_none()
    return UUID(str(found)) if found is not None else None
