"""The role matrix, operation by operation, through the API; and the README's copy of it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.viewer import Role
from keel.orgs.permissions import MATRIX, Permission, allows, matrix_markdown
from tests.orgs.factory import ORGS, add_member, create_org
from tests.users.factory import signed_in

README = Path(__file__).resolve().parents[2] / "README.md"

# operation -> expected status for owner, admin, member, viewer (written out by hand).
EXPECTED = {
    "get organization": (200, 200, 200, 200),
    "rename organization": (200, 200, 403, 403),
    "list members": (200, 200, 200, 200),
    "change a viewer's role": (200, 200, 403, 403),
    "remove a viewer": (204, 204, 403, 403),
    "invite": (201, 201, 403, 403),
    "list invitations": (200, 200, 403, 403),
    "revoke an invitation": (204, 204, 403, 403),
    "delete organization": (204, 403, 403, 403),
}


@pytest.mark.parametrize("role", list(Role))
async def test_each_operation_for_each_role(
    role: Role, app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    creator, creator_auth = await signed_in(app, db_session, client)
    org = await create_org(client, creator_auth)
    if role is Role.OWNER:
        actor_auth = creator_auth
    else:
        actor, actor_auth = await signed_in(app, db_session, client)
        await add_member(db_session, org["id"], actor.id, role)
    target, _ = await signed_in(app, db_session, client)
    await add_member(db_session, org["id"], target.id, Role.VIEWER)
    invited = await client.post(
        f"{ORGS}/{org['id']}/invitations", json={"email": "x@example.com"}, headers=creator_auth
    )
    assert invited.status_code == 201

    base = f"{ORGS}/{org['id']}"
    column = list(Role).index(role)
    requests = {
        "get organization": ("GET", base, None),
        "rename organization": ("PATCH", base, {"name": "Renamed"}),
        "list members": ("GET", f"{base}/members", None),
        "change a viewer's role": ("PATCH", f"{base}/members/{target.id}", {"role": "member"}),
        "remove a viewer": ("DELETE", f"{base}/members/{target.id}", None),
        "invite": ("POST", f"{base}/invitations", {"email": "y@example.com", "role": "viewer"}),
        "list invitations": ("GET", f"{base}/invitations", None),
        "revoke an invitation": ("DELETE", f"{base}/invitations/{invited.json()['id']}", None),
        "delete organization": ("DELETE", base, None),
    }
    for operation, (method, url, body) in requests.items():
        response = await client.request(method, url, json=body, headers=actor_auth)
        expected = EXPECTED[operation][column]
        assert response.status_code == expected, (operation, response.text)
        if expected == 403:
            assert response.headers["content-type"] == "application/problem+json"


async def test_nobody_grants_or_touches_a_role_stronger_than_their_own(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    owner, owner_auth = await signed_in(app, db_session, client)
    org = await create_org(client, owner_auth)
    admin, admin_auth = await signed_in(app, db_session, client)
    other_admin, _ = await signed_in(app, db_session, client)
    member, _ = await signed_in(app, db_session, client)
    for user, role in ((admin, "admin"), (other_admin, "admin"), (member, "member")):
        await add_member(db_session, org["id"], user.id, role)
    base = f"{ORGS}/{org['id']}"

    promote = await client.patch(
        f"{base}/members/{member.id}", json={"role": "owner"}, headers=admin_auth
    )
    assert promote.status_code == 403
    demote_owner = await client.patch(
        f"{base}/members/{owner.id}", json={"role": "member"}, headers=admin_auth
    )
    assert demote_owner.status_code == 403
    assert (
        await client.delete(f"{base}/members/{owner.id}", headers=admin_auth)
    ).status_code == 403
    owner_invite = await client.post(
        f"{base}/invitations", json={"email": "z@example.com", "role": "owner"}, headers=admin_auth
    )
    assert owner_invite.status_code == 403
    # Up to their own role is fine.
    to_admin = await client.patch(
        f"{base}/members/{member.id}", json={"role": "admin"}, headers=admin_auth
    )
    assert to_admin.status_code == 200
    demote_admin = await client.patch(
        f"{base}/members/{other_admin.id}", json={"role": "viewer"}, headers=admin_auth
    )
    assert demote_admin.status_code == 200
    roles = {
        m["user_id"]: m["role"]
        for m in (await client.get(f"{base}/members", headers=admin_auth)).json()
    }
    assert roles == {
        str(owner.id): "owner",
        str(admin.id): "admin",
        str(other_admin.id): "viewer",
        str(member.id): "admin",
    }
    missing = await client.patch(
        f"{base}/members/{owner.id.hex[:-4]}0000", json={"role": "viewer"}, headers=owner_auth
    )
    assert missing.status_code == 404
    bad_role = await client.patch(
        f"{base}/members/{member.id}", json={"role": "emperor"}, headers=owner_auth
    )
    assert bad_role.status_code == 422


def test_matrix_covers_every_permission_and_roles_nest() -> None:
    assert set(MATRIX) == set(Permission)
    for permission in Permission:
        holders = [allows(role, permission) for role in Role]  # strongest first
        assert holders == sorted(holders, reverse=True), permission  # a stronger role has it too
        assert allows(Role.OWNER, permission)


def test_readme_table_is_the_code_matrix() -> None:
    section = README.read_text()
    match = re.search(
        r"<!-- permission-matrix:start -->\n(.*?)\n<!-- permission-matrix:end -->", section, re.S
    )
    assert match, "README.md lacks the permission matrix markers"
    assert match.group(1).strip() == matrix_markdown()
