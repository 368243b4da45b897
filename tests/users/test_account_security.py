"""Account security through the users API: deactivation, email changes, password changes."""

from __future__ import annotations

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from structlog.testing import capture_logs

from tests.auth.mailbox import mails, token_in
from tests.users.factory import PASSWORD, bearer, make_user, sign_in, signed_in

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


async def test_email_change_needs_password_and_the_new_address_confirming_it(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client, email="owner@example.com")
    new = {"email": "elsewhere@example.com"}
    # A stolen access token alone changes nothing, on either path to the account.
    for url in (f"{USERS}/me", f"{USERS}/{user.id}"):
        assert (await client.patch(url, headers=auth, json=new)).status_code == 400
    wrong = {**new, "current_password": "not the password"}
    assert (await client.patch(f"{USERS}/me", headers=auth, json=wrong)).status_code == 401
    with capture_logs() as logs:
        staged = await client.patch(
            f"{USERS}/me", headers=auth, json={**new, "current_password": PASSWORD}
        )
        # Not the account's address yet: a reset for it mails nothing.
        await client.post(f"{AUTH}/password-reset/request", json=new)
    assert staged.status_code == 200
    assert staged.json()["email"] == "owner@example.com"
    assert staged.json()["pending_email"] == "elsewhere@example.com"
    assert [m["subject"] for m in mails(logs, to="owner@example.com")] == [
        "Your Keel email is about to change"
    ]
    confirmations = mails(logs, to="elsewhere@example.com")
    assert len(confirmations) == 1
    confirm = await client.post(
        f"{AUTH}/verify/confirm", json={"token": token_in(confirmations[0])}
    )
    assert confirm.status_code == 204
    me = (await client.get(f"{USERS}/me", headers=auth)).json()
    assert (me["email"], me["pending_email"], me["is_verified"]) == (
        "elsewhere@example.com",
        None,
        True,
    )
    await sign_in(client, "elsewhere@example.com")


async def test_a_password_change_cancels_a_pending_email_change(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, auth = await signed_in(app, db_session, client)
    body = {"email": "thief@example.com", "current_password": PASSWORD}
    with capture_logs() as logs:
        assert (await client.patch(f"{USERS}/me", headers=auth, json=body)).status_code == 200
    token = token_in(mails(logs, to="thief@example.com")[0])
    changed = await client.post(
        f"{USERS}/me/password",
        headers=auth,
        json={"current_password": PASSWORD, "new_password": "a brand new secret"},
    )
    assert changed.status_code == 204
    assert (await client.post(f"{AUTH}/verify/confirm", json={"token": token})).status_code == 400
    me = (await client.get(f"{USERS}/me", headers=auth)).json()
    assert me["pending_email"] is None
    assert me["email"] != "thief@example.com"


async def test_current_password_failures_are_limited_like_sign_in_failures(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    url = f"{USERS}/me/password"
    wrong = {"current_password": "a wrong guess", "new_password": "a brand new secret"}
    statuses = [(await client.post(url, headers=auth, json=wrong)).status_code for _ in range(3)]
    # An email change and a sign-in spend the same budget of the account.
    email_guess = {"email": "guess@example.com", "current_password": "a wrong guess"}
    patched = await client.patch(f"{USERS}/me", headers=auth, json=email_guess)
    statuses.append(patched.status_code)
    login = await client.post(
        f"{AUTH}/login", data={"username": user.email, "password": "a wrong guess"}
    )
    statuses.append(login.status_code)
    right = {"current_password": PASSWORD, "new_password": "a brand new secret"}
    limited = await client.post(url, headers=auth, json=right)
    assert limited.status_code == 429
    assert statuses == [401] * 5
    assert int(limited.headers["retry-after"]) >= 1
    # Still the old password, and the session is intact.
    assert (await client.get(f"{USERS}/me", headers=auth)).status_code == 200


async def test_email_change_mails_are_throttled_per_address(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    body = {"email": "victim@example.com", "current_password": PASSWORD}
    with capture_logs() as logs:
        statuses = [
            (await client.patch(f"{USERS}/me", headers=auth, json=body)).status_code
            for _ in range(5)
        ]
    assert statuses == [200] * 5
    assert len(mails(logs, to="victim@example.com")) == 3
    assert len(mails(logs, to=user.email)) == 3
