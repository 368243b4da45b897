"""Organizations end to end: personal ones, creating, listing, 404 for non-members, admins."""

from __future__ import annotations

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from structlog.testing import capture_logs

from tests.orgs.factory import ORGS, add_member, create_org, personal_org
from tests.users.factory import PASSWORD, bearer, sign_in, signed_in


async def test_signup_creates_a_personal_organization_owned_by_the_new_account(
    client: AsyncClient, db_session: AsyncSession
) -> None:
    body = {"email": "Ann@Example.com", "username": "Ann", "password": PASSWORD}
    response = await client.post("/api/v1/auth/signup", json=body)
    assert response.status_code == 201
    personal = await personal_org(db_session, response.json()["id"])
    assert (personal["slug"], personal["name"], personal["role"]) == ("~ann", "Ann", "owner")

    auth = bearer(await sign_in(client, "ann"))
    listed = (await client.get(ORGS, headers=auth)).json()
    assert [(o["slug"], o["personal"], o["role"]) for o in listed] == [("~ann", True, "owner")]


async def test_a_failed_signup_leaves_no_organization(
    client: AsyncClient, db_session: AsyncSession
) -> None:
    body = {"email": "bo@example.com", "username": "bo-1", "password": PASSWORD}
    assert (await client.post("/api/v1/auth/signup", json=body)).status_code == 201
    again = {**body, "email": "other@example.com"}  # username taken
    assert (await client.post("/api/v1/auth/signup", json=again)).status_code == 409
    count = await db_session.scalar(text("SELECT count(*) FROM app.organizations"))
    assert count == 1


async def test_create_get_update_list_delete(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, auth = await signed_in(app, db_session, client)
    org = await create_org(client, auth, name="Acme", slug="acme")
    assert (org["role"], org["personal"]) == ("owner", False)

    got = await client.get(f"{ORGS}/{org['id']}", headers=auth)
    assert got.status_code == 200
    assert got.json()["slug"] == "acme"

    renamed = await client.patch(f"{ORGS}/{org['id']}", json={"name": "Acme Inc"}, headers=auth)
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Acme Inc"

    names = [o["name"] for o in (await client.get(ORGS, headers=auth)).json()]
    assert "Acme Inc" in names
    assert len(names) == 2  # and the personal one

    assert (await client.delete(f"{ORGS}/{org['id']}", headers=auth)).status_code == 204
    assert (await client.get(f"{ORGS}/{org['id']}", headers=auth)).status_code == 404
    assert len((await client.get(ORGS, headers=auth)).json()) == 1


async def test_slugs_are_validated_and_unique(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, auth = await signed_in(app, db_session, client)
    await create_org(client, auth, slug="taken")
    again = await client.post(ORGS, json={"name": "X", "slug": "taken"}, headers=auth)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["field"] == "slug"
    for slug in ("~me", "UPPER", "-dash", "a" * 60, ""):
        bad = await client.post(ORGS, json={"name": "X", "slug": slug}, headers=auth)
        assert bad.status_code == 422, slug
    long_name = await client.post(ORGS, json={"name": "n" * 101, "slug": "ok"}, headers=auth)
    assert long_name.status_code == 422


async def test_personal_organization_keeps_its_slug_and_cannot_be_deleted(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    personal = await personal_org(db_session, user.id)
    url = f"{ORGS}/{personal['id']}"
    assert (await client.patch(url, json={"slug": "mine"}, headers=auth)).status_code == 409
    assert (await client.delete(url, headers=auth)).status_code == 409
    assert (await client.patch(url, json={"name": "Mine"}, headers=auth)).status_code == 200


async def test_non_members_get_the_same_404_as_for_a_missing_organization(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, owner = await signed_in(app, db_session, client)
    _, stranger = await signed_in(app, db_session, client)
    org = await create_org(client, owner)
    missing = "00000000-0000-7000-8000-000000000000"
    for path in ("", "/members", "/invitations"):
        theirs = await client.get(f"{ORGS}/{org['id']}{path}", headers=stranger)
        nowhere = await client.get(f"{ORGS}/{missing}{path}", headers=stranger)
        assert theirs.status_code == nowhere.status_code == 404
        assert theirs.json()["detail"] == nowhere.json()["detail"]
    # Checked before the body is read: a stranger's malformed body still gets the 404.
    patch = await client.patch(f"{ORGS}/{org['id']}", content=b"{not json", headers=stranger)
    assert patch.status_code == 404
    invite = await client.post(
        f"{ORGS}/{org['id']}/invitations", json={"email": "x@example.com"}, headers=stranger
    )
    assert invite.status_code == 404
    assert (await client.get(f"{ORGS}/not-a-uuid", headers=stranger)).status_code == 422
    assert (await client.get(f"{ORGS}/{org['id']}")).status_code == 401


async def test_platform_admins_act_across_tenants_and_each_use_is_logged(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, owner = await signed_in(app, db_session, client)
    admin, admin_auth = await signed_in(app, db_session, client, admin=True)
    org = await create_org(client, owner)
    with capture_logs() as logs:
        got = await client.get(f"{ORGS}/{org['id']}", headers=admin_auth)
        members = await client.get(f"{ORGS}/{org['id']}/members", headers=admin_auth)
    assert got.status_code == members.status_code == 200
    assert got.json()["role"] is None
    uses = [entry for entry in logs if entry["event"] == "orgs.cross_tenant_access"]
    assert len(uses) == 2
    assert {entry["admin_id"] for entry in uses} == {str(admin.id)}
    assert {entry["organization_id"] for entry in uses} == {org["id"]}
    # Their own organizations are not cross-tenant: nothing logged.
    with capture_logs() as logs:
        assert (await client.get(ORGS, headers=admin_auth)).status_code == 200
    assert not [entry for entry in logs if entry["event"] == "orgs.cross_tenant_access"]


async def test_a_platform_admin_beyond_their_role_is_allowed_and_logged(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, owner = await signed_in(app, db_session, client)
    admin, admin_auth = await signed_in(app, db_session, client, admin=True)
    org = await create_org(client, owner)
    await add_member(db_session, org["id"], admin.id, "viewer")
    with capture_logs() as logs:
        renamed = await client.patch(
            f"{ORGS}/{org['id']}", json={"name": "Renamed"}, headers=admin_auth
        )
    assert renamed.status_code == 200
    overrides = [entry for entry in logs if entry["event"] == "orgs.admin_override"]
    assert [(e["admin_id"], e["permission"]) for e in overrides] == [(str(admin.id), "org.update")]
