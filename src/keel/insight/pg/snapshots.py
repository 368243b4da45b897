"""The snapshot job: query statistics and relation sizes into insight's own tables.

Periodic on the existing job queue: each run queues the next one (in the same commit),
and `ensure_scheduled` starts the chain when a server starts. Old snapshots are purged
by the same job, past the retention.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from keel.config import Settings
from keel.insight.pg import repository
from keel.jobs import service as jobs
from keel.jobs.worker import Handler, JobRun

SNAPSHOT_JOB = "insight_snapshot"
log = structlog.get_logger(__name__)


async def take_snapshot(session: AsyncSession, settings: Settings, at: datetime) -> None:
    await repository.guard(
        session, timeout_ms=settings.insight_statement_timeout_ms * 10, read_only=False
    )
    info = await repository.server_info(session)
    await repository.snapshot(session, at, with_queries=info.has_pg_stat_statements)
    retention = timedelta(days=settings.insight_snapshot_retention_days)
    await repository.purge_snapshots(session, at - retention)


def snapshot_handler(settings: Settings) -> Handler:
    async def handle(run: JobRun, payload: dict[str, Any]) -> None:
        async with run.write() as session:
            at = datetime.now(UTC)
            await take_snapshot(session, settings, at)
            if payload.get("periodic") and settings.insight_snapshot_minutes:
                await jobs.enqueue_periodic(
                    session,
                    SNAPSHOT_JOB,
                    {"periodic": True},
                    delay_seconds=settings.insight_snapshot_minutes * 60,
                    current=run.job.id,
                )
        log.info("insight.snapshot", captured_at=at.isoformat())

    return handle


def handlers(settings: Settings) -> dict[str, Handler]:
    """The job kinds insight adds to a worker."""
    return {SNAPSHOT_JOB: snapshot_handler(settings)}


async def ensure_scheduled(session: AsyncSession, settings: Settings) -> UUID | None:
    """Start the periodic chain if no snapshot job is queued or running (first one now)."""
    if not settings.insight_snapshot_minutes:
        return None
    return await jobs.enqueue_periodic(session, SNAPSHOT_JOB, {"periodic": True}, delay_seconds=0)


async def request_snapshot(session: AsyncSession) -> UUID:
    """Queue a one-off snapshot now (it does not extend the periodic chain)."""
    [job_id] = await jobs.enqueue(session, SNAPSHOT_JOB, [{"periodic": False}])
    return job_id
