"""Account security through the users API: deactivation, email changes, password changes."""

from __future__ import annotations

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.users.factory import bearer, make_user, sign_in, signed_in

USERS = "/api/v1/users"
AUTH = "/api/v1/auth"


async def _session_works(client: AsyncClient, tokens: dict[str, str]) -> tuple[int, int]:
    me = await client.get(f"{USERS}/me", headers=bearer(tokens))
    refreshed = await client.post(
        f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    return me.status_code, refreshed.status_code


async def test_admin_deactivation_ends_sessions_for_good(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user = await make_user(app, db_session)
    tokens = await sign_in(client, user.username)
    _, admin = await signed_in(app, db_session, client, admin=True)
    off = await client.patch(f"{USERS}/{user.id}", headers=admin, json={"is_active": False})
    on = await client.patch(f"{USERS}/{user.id}", headers=admin, json={"is_active": True})
    assert (off.status_code, on.status_code) == (200, 200)
    # Reactivated, but the tokens from before the deactivation stay dead.
    assert await _session_works(client, tokens) == (401, 401)
    await sign_in(client, user.username)  # a new sign-in works


async def test_deactivation_by_any_path_ends_sessions(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user = await make_user(app, db_session)
    tokens = await sign_in(client, user.username)
    for active in (False, True):
        await db_session.execute(
            text("UPDATE app.users SET is_active = :active WHERE id = :id"),
            {"active": active, "id": user.id},
        )
    assert await _session_works(client, tokens) == (401, 401)
    reasons = await db_session.scalars(
        text("SELECT revoked_reason FROM app.token_families WHERE user_id = :id"),
        {"id": user.id},
    )
    assert set(reasons) == {"account deactivated"}
