"""Walk cases for the organization's view of `keel.jobs.repository`, and why the rest of
it works across organizations (`CROSS_TENANT_JOBS`)."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import text

from keel.core.ids import uuid7
from keel.jobs import repository
from tests.tenancy.walk import World, case

_QUEUE = "the worker's queue: claims, leases and retries span organizations"
CROSS_TENANT_JOBS: dict[str, str] = {
    **{
        f"keel.jobs.repository.{name}": _QUEUE
        for name in ("claim", "requeue_stale", "lock_claim", "release", "finish", "fail")
    },
    **{
        f"keel.jobs.repository.{name}": "queues a job for the tenant its caller names (or none)"
        for name in ("enqueue", "enqueue_many", "enqueue_once")
    },
    **{
        f"keel.jobs.repository.{name}": "platform admins' view of every organization's jobs"
        for name in ("counts_all_tenants", "list_jobs_all_tenants", "retry_all_tenants")
    },
}


async def _jobs(world: World) -> tuple[list[UUID], list[UUID]]:
    made: dict[UUID, list[UUID]] = {world.a.id: [], world.b.id: []}
    for tenant_id, n in ((world.a.id, 1), (world.b.id, 2)):
        for _ in range(n):
            job_id = uuid7()
            await world.session.execute(
                text(
                    "INSERT INTO app.jobs (id, tenant_id, kind, status)"
                    " VALUES (:id, :t, 'walk', 'failed')"
                ),
                {"id": job_id, "t": tenant_id},
            )
            made[tenant_id].append(job_id)
    world.b.rows["jobs"] = made[world.b.id]
    return made[world.a.id], made[world.b.id]


@case(repository.counts)
async def _counts(world: World) -> set[UUID]:
    mine, theirs = await _jobs(world)
    failed = (await repository.counts(world.session, world.a.id))["failed"]
    return set(mine) if failed == len(mine) else set(mine) | set(theirs)


@case(repository.list_jobs)
async def _list_jobs(world: World) -> set[UUID]:
    await _jobs(world)
    return {job.id for job in await repository.list_jobs(world.session, world.a.id, None, 100)}
