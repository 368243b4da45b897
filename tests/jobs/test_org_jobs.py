"""`GET /orgs/{org_id}/jobs`: an organization's owners and admins see its own jobs, and
only those; `/admin/jobs` stays the platform admins' view of every organization's."""

from __future__ import annotations

from uuid import UUID

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.ids import uuid7
from tests.orgs.factory import add_member
from tests.users.factory import bearer, make_user, sign_in, signed_in


async def _job(
    session: AsyncSession, tenant_id: UUID | None, status: str, kind: str = "embed_posts"
) -> UUID:
    job_id = uuid7()
    await session.execute(
        text(
            "INSERT INTO app.jobs (id, tenant_id, kind, status, payload) "
            "VALUES (:id, :t, :k, :s, '{}'::jsonb)"
        ),
        {"id": job_id, "t": tenant_id, "k": kind, "s": status},
    )
    return job_id


def _jobs(org: UUID) -> str:
    return f"/api/v1/orgs/{org}/jobs"


async def test_an_organization_sees_its_own_jobs_only(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    a, a_auth = await signed_in(app, db_session, client)
    b, b_auth = await signed_in(app, db_session, client)
    mine = [await _job(db_session, a.id, "queued"), await _job(db_session, a.id, "failed")]
    theirs = await _job(db_session, b.id, "failed")
    platform = await _job(db_session, None, "failed", kind="insight_snapshot")

    overview = await client.get(_jobs(a.id), headers=a_auth)
    failed = await client.get(_jobs(a.id), headers=a_auth, params={"status": "failed"})
    into_b = await client.get(_jobs(b.id), headers=a_auth)

    assert overview.status_code == 200, overview.text
    assert overview.json()["counts"] == {"queued": 1, "running": 0, "failed": 1}
    assert {job["id"] for job in overview.json()["jobs"]} == {str(i) for i in mine}
    assert [job["id"] for job in failed.json()["jobs"]] == [str(mine[1])]
    assert into_b.status_code == 404
    b_view = (await client.get(_jobs(b.id), headers=b_auth)).json()
    assert [job["id"] for job in b_view["jobs"]] == [str(theirs)]
    assert str(platform) not in {job["id"] for job in b_view["jobs"] + overview.json()["jobs"]}


async def test_imported_posts_queue_their_embeddings_as_the_organizations_jobs(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    owner, auth = await signed_in(app, db_session, client)
    other, other_auth = await signed_in(app, db_session, client)
    body = b'[{"title": "Embed me", "author_id": "%s"}]' % str(owner.id).encode()
    imported = await client.post(
        f"/api/v1/orgs/{owner.id}/imports/posts",
        content=body,
        headers={**auth, "Content-Type": "application/json"},
    )
    assert imported.status_code == 200, imported.text

    mine = (await client.get(_jobs(owner.id), headers=auth)).json()
    theirs = (await client.get(_jobs(other.id), headers=other_auth)).json()

    assert [job["kind"] for job in mine["jobs"]] == ["embed_posts"]
    assert mine["counts"]["queued"] == 1
    assert theirs["jobs"] == []


@pytest.mark.parametrize(("role", "status"), [("admin", 200), ("member", 403), ("viewer", 403)])
async def test_only_owners_and_admins_see_jobs(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, role: str, status: int
) -> None:
    owner = await make_user(app, db_session)
    await _job(db_session, owner.id, "failed")
    caller = await make_user(app, db_session)
    await add_member(db_session, owner.id, caller.id, role)
    auth = bearer(await sign_in(client, caller.username))

    response = await client.get(_jobs(owner.id), headers=auth)

    assert response.status_code == status, response.text


async def test_platform_admins_keep_the_cross_tenant_view(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    a = await make_user(app, db_session)
    b = await make_user(app, db_session)
    failed = {await _job(db_session, a.id, "failed"), await _job(db_session, b.id, "failed")}
    failed.add(await _job(db_session, None, "failed", kind="insight_snapshot"))
    _, user_auth = await signed_in(app, db_session, client)
    _, admin = await signed_in(app, db_session, client, admin=True)

    everything = await client.get("/api/v1/admin/jobs", headers=admin)
    in_a = await client.get(_jobs(a.id), headers=admin)
    denied = await client.get("/api/v1/admin/jobs", headers=user_auth)

    assert {job["id"] for job in everything.json()["jobs"]} == {str(i) for i in failed}
    assert everything.json()["counts"]["failed"] == 3
    assert in_a.status_code == 200
    assert in_a.json()["counts"]["failed"] == 1
    assert denied.status_code == 403
