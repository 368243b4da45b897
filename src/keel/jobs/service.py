"""The job queue: what other domains queue, what platform administrators see across
organizations (counts, retries), and what an organization's owners and admins see of its own."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.errors import NotFound
from keel.jobs import repository
from keel.jobs.models import Job, JobStatus
from keel.orgs.permissions import OrgActor, Permission


async def overview(
    session: AsyncSession, status: JobStatus, limit: int
) -> tuple[dict[str, int], list[Job]]:
    """Queue counts by status, and the latest `limit` jobs in `status` (platform admins)."""
    counts = await repository.counts_all_tenants(session)
    return counts, await repository.list_jobs_all_tenants(session, status, limit)


async def retry(session: AsyncSession, job_id: UUID) -> None:
    """Queue a failed job again, with fresh attempts; 404 if there is no such failed job."""
    if not await repository.retry_all_tenants(session, job_id):
        raise NotFound("No failed job with this id.")


async def enqueue(
    session: AsyncSession,
    kind: str,
    payloads: list[dict[str, Any]],
    *,
    tenant_id: UUID | None = None,
) -> list[UUID]:
    """Queue one `kind` job per payload, in the caller's transaction (they run once it commits).

    `tenant_id` is the organization the jobs work for (None: the platform's own jobs).
    """
    if not payloads:
        return []
    return await repository.enqueue_many(session, kind, payloads, tenant_id=tenant_id)


async def enqueue_periodic(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any],
    *,
    delay_seconds: float,
    current: UUID | None = None,
) -> UUID | None:
    """Queue the next run of a periodic job, unless one is already waiting or running."""
    return await repository.enqueue_once(
        session, kind, payload, delay_seconds=delay_seconds, current=current
    )


async def organization_overview(
    session: AsyncSession, actor: OrgActor, status: JobStatus | None, limit: int
) -> tuple[dict[str, int], list[Job]]:
    """The organization's jobs by status, and its latest `limit` (in `status`, if given)."""
    actor.require(Permission.JOBS_VIEW)
    tenant_id = actor.organization_id
    counts = await repository.counts(session, tenant_id)
    return counts, await repository.list_jobs(session, tenant_id, status, limit)
