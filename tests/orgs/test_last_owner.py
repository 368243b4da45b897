"""An organization always keeps an owner: in the service (409) and in the database (race-free)."""

from __future__ import annotations

import asyncpg
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import asyncpg_dsn
from tests.orgs.factory import ORGS, add_member, create_org
from tests.users.factory import signed_in


async def test_the_last_owner_cannot_be_demoted_removed_or_leave(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    owner, auth = await signed_in(app, db_session, client)
    org = await create_org(client, auth)
    base = f"{ORGS}/{org['id']}"
    for method, url, body in (
        ("PATCH", f"{base}/members/{owner.id}", {"role": "admin"}),
        ("DELETE", f"{base}/members/{owner.id}", None),
        ("POST", f"{base}/leave", None),
    ):
        response = await client.request(method, url, json=body, headers=auth)
        assert response.status_code == 409, (method, url)
        assert response.headers["content-type"] == "application/problem+json"
        assert "owner" in response.json()["detail"]

    # With a second owner, the first may step down, and then the second is the last.
    second, second_auth = await signed_in(app, db_session, client)
    await add_member(db_session, org["id"], second.id, "owner")
    assert (await client.post(f"{base}/leave", headers=auth)).status_code == 204
    assert (await client.get(base, headers=auth)).status_code == 404  # not a member any more
    last = await client.patch(
        f"{base}/members/{second.id}", json={"role": "member"}, headers=second_auth
    )
    assert last.status_code == 409


async def test_members_leave_and_owners_remove(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, owner_auth = await signed_in(app, db_session, client)
    org = await create_org(client, owner_auth)
    viewer, viewer_auth = await signed_in(app, db_session, client)
    member, _ = await signed_in(app, db_session, client)
    await add_member(db_session, org["id"], viewer.id, "viewer")
    await add_member(db_session, org["id"], member.id, "member")
    base = f"{ORGS}/{org['id']}"
    assert (
        await client.delete(f"{base}/members/{member.id}", headers=viewer_auth)
    ).status_code == 403
    assert (
        await client.delete(f"{base}/members/{viewer.id}", headers=viewer_auth)
    ).status_code == 204
    assert (await client.get(base, headers=viewer_auth)).status_code == 404
    assert (
        await client.delete(f"{base}/members/{member.id}", headers=owner_auth)
    ).status_code == 204
    again = await client.delete(f"{base}/members/{member.id}", headers=owner_auth)
    assert again.status_code == 404


async def _two_owners(
    db_session: AsyncSession, app: FastAPI, client: AsyncClient
) -> tuple[str, str, str]:
    first, auth = await signed_in(app, db_session, client)
    org = await create_org(client, auth)
    second, _ = await signed_in(app, db_session, client)
    await add_member(db_session, org["id"], second.id, "owner")
    return org["id"], str(first.id), str(second.id)


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE app.memberships SET role = 'member' WHERE tenant_id = $1 AND user_id = $2",
        "DELETE FROM app.memberships WHERE tenant_id = $1 AND user_id = $2",
    ],
)
async def test_two_concurrent_transactions_cannot_remove_both_owners(
    change: str,
    app: FastAPI,
    db_session: AsyncSession,
    client: AsyncClient,
    test_database_url: str,
) -> None:
    """Each demotes a different owner, both before either commits; only one may commit."""
    org_id, first, second = await _two_owners(db_session, app, client)
    dsn = asyncpg_dsn(test_database_url)
    one, two = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        one_tx, two_tx = one.transaction(), two.transaction()
        await one_tx.start()
        await two_tx.start()
        await one.execute(change, org_id, first)
        await two.execute(change, org_id, second)  # different rows: no row lock between them
        await one_tx.commit()
        with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="no owner"):
            await two_tx.commit()
    finally:
        await one.close()
        await two.close()
    owners = await asyncpg.connect(dsn)
    try:
        count = await owners.fetchval(
            "SELECT count(*) FROM app.memberships WHERE tenant_id = $1 AND role = 'owner'", org_id
        )
    finally:
        await owners.close()
    assert count == 1


async def test_deleting_the_organization_or_the_account_is_not_blocked(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, test_database_url: str
) -> None:
    owner, auth = await signed_in(app, db_session, client)
    org = await create_org(client, auth)
    assert (await client.delete(f"{ORGS}/{org['id']}", headers=auth)).status_code == 204
    conn = await asyncpg.connect(asyncpg_dsn(test_database_url))
    try:
        await conn.execute("DELETE FROM app.users WHERE id = $1", owner.id)
        left = await conn.fetchval(
            "SELECT count(*) FROM app.memberships WHERE user_id = $1", owner.id
        )
    finally:
        await conn.close()
    assert left == 0
