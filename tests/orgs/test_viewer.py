"""The Viewer carries the caller's memberships: loaded in its one statement, evicted on change."""

from __future__ import annotations

import asyncio
from uuid import UUID

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from keel.auth.repository import VIEWER_QUERY
from keel.core.viewer import Role
from tests.core.test_request_path import _reset_statements, _statements
from tests.orgs.factory import ORGS, add_member, create_org, personal_org
from tests.posts.factory import make_post, posts_url
from tests.users.factory import signed_in


async def test_memberships_come_with_the_viewer_in_the_same_statement(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    org = await create_org(client, auth)
    _, other_auth = await signed_in(app, db_session, client)
    other_org = await create_org(client, other_auth)
    await add_member(db_session, other_org["id"], user.id, "viewer")
    personal = await personal_org(db_session, user.id)
    post = await make_post(db_session, user, "Counted")
    url = f"{posts_url(user.id)}/{post.id}"
    assert (await client.get(url, headers=auth)).status_code == 200  # statements prepared

    app.state.services.db.viewers.clear()  # a cold cache: the viewer is looked up again
    await _reset_statements(db_session)
    assert (await client.get(url, headers=auth)).status_code == 200
    statements = await _statements(db_session)
    # The viewer lookup (memberships included) and the read: two statements, no more.
    assert sorted(statements.values()) == [1, 1], statements
    assert VIEWER_QUERY.strip() in statements

    family = await db_session.scalar(
        text("SELECT id FROM app.token_families WHERE user_id = :u"), {"u": user.id}
    )
    viewer = await app.state.services.load_viewer(app.state.services.db.reads, user.id, family)
    assert dict(viewer.memberships) == {
        personal["id"]: Role.OWNER,
        UUID(org["id"]): Role.OWNER,
        UUID(other_org["id"]): Role.VIEWER,
    }


async def test_a_role_change_or_removal_outside_the_api_takes_effect_within_a_second(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, owner_auth = await signed_in(app, db_session, client)
    org = await create_org(client, owner_auth)
    member, member_auth = await signed_in(app, db_session, client)
    await add_member(db_session, org["id"], member.id, "admin")
    base = f"{ORGS}/{org['id']}"
    assert (await client.get(f"{base}/invitations", headers=member_auth)).status_code == 200

    # An operator's SQL: only the trigger's NOTIFY can tell the cached viewer.
    await db_session.execute(
        text("UPDATE app.memberships SET role = 'viewer' WHERE tenant_id = :t AND user_id = :u"),
        {"t": org["id"], "u": member.id},
    )
    await asyncio.sleep(1.0)
    assert (await client.get(f"{base}/invitations", headers=member_auth)).status_code == 403
    assert (await client.get(base, headers=member_auth)).json()["role"] == "viewer"

    await db_session.execute(
        text("DELETE FROM app.memberships WHERE tenant_id = :t AND user_id = :u"),
        {"t": org["id"], "u": member.id},
    )
    await asyncio.sleep(1.0)
    assert (await client.get(base, headers=member_auth)).status_code == 404
