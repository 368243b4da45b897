"""The job queue: `/api/v1/admin/jobs` for platform administrators (every organization's
jobs and the platform's own; failures stay visible here, and can be retried), and
`/api/v1/orgs/{org_id}/jobs` for an organization's owners and admins (its own jobs)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import Query, status
from pydantic import BaseModel, ConfigDict

from keel.core.db import SessionDep
from keel.core.deps import SIGNED_IN_ERRORS, AdminViewer
from keel.core.routing import KeelRouter, Responses
from keel.jobs import service
from keel.jobs.models import JobStatus
from keel.orgs.deps import ORG_ERRORS, ActiveOrg

admin_router = KeelRouter(prefix="/admin/jobs", tags=["admin"])
org_router = KeelRouter(prefix="/orgs/{org_id}/jobs", tags=["jobs"])
ADMIN_ERRORS: Responses = {**SIGNED_IN_ERRORS, 403: {"description": "Administrators only"}}


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    kind: str
    status: str
    attempts: int
    max_attempts: int
    run_at: datetime
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class JobOverview(BaseModel):
    counts: dict[str, int]
    jobs: list[JobPublic]


@admin_router.get(
    "",
    response_model=JobOverview,
    responses=ADMIN_ERRORS,
    summary="Queue counts by status, and the latest jobs in one status (failed by default)",
)
async def list_jobs(
    session: SessionDep,
    admin: AdminViewer,
    job_status: Annotated[JobStatus, Query(alias="status")] = JobStatus.FAILED,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Any:
    counts, jobs = await service.overview(session, job_status, limit)
    return JobOverview(counts=counts, jobs=jobs)


@admin_router.post(
    "/{job_id}/retry",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**ADMIN_ERRORS, 404: {"description": "No failed job with this id"}},
    summary="Queue a failed job again, with fresh attempts",
)
async def retry_job(job_id: UUID, session: SessionDep, admin: AdminViewer) -> None:
    await service.retry(session, job_id)


@org_router.get(
    "",
    response_model=JobOverview,
    responses={
        **SIGNED_IN_ERRORS,
        **ORG_ERRORS,
        403: {"description": "Your role may not see jobs (owners and admins may)"},
    },
    summary="The organization's jobs: counts by status, and the latest ones",
)
async def list_organization_jobs(
    session: SessionDep,
    actor: ActiveOrg,
    job_status: Annotated[
        JobStatus | None, Query(alias="status", description="Only jobs in this status.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Any:
    counts, jobs = await service.organization_overview(session, actor, job_status, limit)
    return JobOverview(counts=counts, jobs=jobs)


router = KeelRouter()
router.include_router(org_router)
router.include_router(admin_router)
