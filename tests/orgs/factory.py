"""Small helpers for organization tests: orgs made through the API, members added directly."""

from __future__ import annotations

import itertools
from typing import Any
from uuid import UUID

from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.viewer import Role
from keel.orgs.permissions import OrgActor
from keel.users.models import User
from tests.users.factory import as_viewer

ORGS = "/api/v1/orgs"
_serial = itertools.count(1)


async def create_org(client: AsyncClient, auth: dict[str, str], **fields: Any) -> dict[str, Any]:
    n = next(_serial)
    body = {"name": f"Org {n}", "slug": f"org-{n}-{id(client) % 10_000}", **fields}
    response = await client.post(ORGS, json=body, headers=auth)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def add_member(session: AsyncSession, org_id: UUID | str, user_id: UUID, role: str) -> None:
    """A membership as an operator would add it: the NOTIFY trigger still fires."""
    await session.execute(
        text("INSERT INTO app.memberships (tenant_id, user_id, role) VALUES (:t, :u, :r)"),
        {"t": str(org_id), "u": user_id, "r": role},
    )


async def personal_org(session: AsyncSession, user_id: UUID) -> dict[str, Any]:
    row = (
        await session.execute(
            text(
                "SELECT o.id, o.slug, o.name, m.role FROM app.organizations o"
                " JOIN app.memberships m ON m.tenant_id = o.id"
                " WHERE o.personal AND m.user_id = :u"
            ),
            {"u": user_id},
        )
    ).one()
    return dict(row._mapping)


def acting_in(user: User, org_id: UUID | None = None, role: Role = Role.OWNER) -> OrgActor:
    """`user` as services see them in `org_id` (their personal organization by default)."""
    return OrgActor(org_id or user.id, as_viewer(user), role)
