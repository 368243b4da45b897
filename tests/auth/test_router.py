"""Auth flows end to end: sign-up, login, rotation, replay, logout, reset, verification."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import jwt
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from structlog.testing import capture_logs

from tests.conftest import make_settings, running
from tests.users.factory import PASSWORD, bearer, make_user, sign_in

AUTH = "/api/v1/auth"
ME = "/api/v1/users/me"


def _mailed_token(logs: Sequence[Mapping[str, Any]]) -> str:
    bodies = [str(entry["body"]) for entry in logs if entry["event"] == "mail.outbox"]
    assert bodies, "no mail was sent"
    match = re.search(r"\n\n(\S+)\n\n", bodies[-1])
    assert match
    return match.group(1)


async def test_signup_then_verify_email(client: AsyncClient, db_session: AsyncSession) -> None:
    with capture_logs() as logs:
        response = await client.post(
            f"{AUTH}/signup",
            json={"email": "Sam@Example.com", "username": "sam", "password": PASSWORD},
        )
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["is_verified"] is False
    assert "hashed_password" not in response.text
    token = _mailed_token(logs)
    assert (await client.post(f"{AUTH}/verify/confirm", json={"token": token})).status_code == 204
    again = await client.post(f"{AUTH}/verify/confirm", json={"token": token})
    assert again.status_code == 400
    tokens = await sign_in(client, "sam@example.com")
    assert (await client.get(ME, headers=bearer(tokens))).json()["is_verified"] is True


async def test_signup_can_be_turned_off(database_url: str, tmp_path: Path) -> None:
    async with running(make_settings(database_url, tmp_path, signup_enabled=False)) as http:
        response = await http.post(
            f"{AUTH}/signup",
            json={"email": "x@example.com", "username": "xx_x", "password": PASSWORD},
        )
    assert response.status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "username": "valid", "password": PASSWORD},
        {"email": "a@example.com", "username": "ab", "password": PASSWORD},
        {"email": "a@example.com", "username": "valid", "password": "short"},
        {"email": "a@example.com", "username": "valid", "password": "x" * 1025},
        {"email": "a@example.com", "username": "valid", "password": PASSWORD, "is_superuser": True},
    ],
)
async def test_signup_rejects_bad_input(client: AsyncClient, body: dict[str, object]) -> None:
    response = await client.post(f"{AUTH}/signup", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_login_by_username_or_email_updates_last_login(
    app: FastAPI, client: AsyncClient, db_session: AsyncSession
) -> None:
    user = await make_user(app, db_session, email="Login@Example.com", username="LoginName")
    assert user.last_login is None
    for login in ("loginname", "LOGIN@example.com"):
        response = await client.post(
            f"{AUTH}/login", data={"username": login, "password": PASSWORD}
        )
        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 15 * 60
        assert response.headers["cache-control"] == "no-store"
    await db_session.refresh(user)
    assert user.last_login is not None


async def test_wrong_password_and_unknown_account_look_the_same(
    app: FastAPI, client: AsyncClient, db_session: AsyncSession
) -> None:
    await make_user(app, db_session, username="known_user")
    wrong = await client.post(
        f"{AUTH}/login", data={"username": "known_user", "password": "wrong password"}
    )
    unknown = await client.post(
        f"{AUTH}/login", data={"username": "nobody_here", "password": "wrong password"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]
    assert wrong.headers["www-authenticate"] == "Bearer"


async def test_inactive_user_cannot_log_in_or_use_tokens(
    app: FastAPI, client: AsyncClient, db_session: AsyncSession
) -> None:
    user = await make_user(app, db_session)
    tokens = await sign_in(client, user.username)
    user.is_active = False
    await db_session.flush()
    assert (await client.get(ME, headers=bearer(tokens))).status_code == 401
    login = await client.post(
        f"{AUTH}/login", data={"username": user.username, "password": PASSWORD}
    )
    assert login.status_code == 401
    refreshed = await client.post(
        f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 401


async def test_refresh_rotates_and_replay_revokes_the_family(
    app: FastAPI, client: AsyncClient, db_session: AsyncSession
) -> None:
    user = await make_user(app, db_session)
    first = await sign_in(client, user.username)
    rotated = await client.post(f"{AUTH}/refresh", json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await client.get(ME, headers=bearer(second))).status_code == 200

    replay = await client.post(f"{AUTH}/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    # The whole family is gone: the newest tokens stop working too.
    assert (await client.get(ME, headers=bearer(second))).status_code == 401
    newest = await client.post(f"{AUTH}/refresh", json={"refresh_token": second["refresh_token"]})
    assert newest.status_code == 401


async def test_token_types_are_not_interchangeable(
    app: FastAPI, client: AsyncClient, db_session: AsyncSession
) -> None:
    user = await make_user(app, db_session)
    tokens = await sign_in(client, user.username)
    as_access = await client.get(ME, headers=bearer(tokens["refresh_token"]))
    as_refresh = await client.post(
        f"{AUTH}/refresh", json={"refresh_token": tokens["access_token"]}
    )
    assert as_access.status_code == 401
    assert as_refresh.status_code == 401


async def test_forged_tokens_are_refused(
    app: FastAPI, client: AsyncClient, db_session: AsyncSession
) -> None:
    user = await make_user(app, db_session)
    tokens = await sign_in(client, user.username)
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    header = jwt.get_unverified_header(tokens["access_token"])
    unsigned = jwt.encode(claims, key=None, algorithm="none", headers={"kid": header["kid"]})
    wrong_key = jwt.encode(claims, "k" * 64, algorithm="HS256", headers={"kid": header["kid"]})
    expired = {**claims, "exp": int((datetime.now(UTC) - timedelta(hours=1)).timestamp())}
    # Re-signed with the real key, so only `exp` is wrong.
    real_key = app.state.settings.resolved_secret_key()
    resigned = jwt.encode(expired, real_key, algorithm="HS256", headers=header)
    for token in (unsigned, wrong_key, resigned, "garbage", tokens["access_token"] + "x"):
        response = await client.get(ME, headers=bearer(token))
        assert response.status_code == 401, token
        assert response.headers["content-type"] == "application/problem+json"


async def test_logout_ends_the_session(
    app: FastAPI, client: AsyncClient, db_session: AsyncSession
) -> None:
    user = await make_user(app, db_session)
    tokens = await sign_in(client, user.username)
    other = await sign_in(client, user.username)
    assert (await client.post(f"{AUTH}/logout", headers=bearer(tokens))).status_code == 204
    assert (await client.get(ME, headers=bearer(tokens))).status_code == 401
    refreshed = await client.post(
        f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 401
    assert (await client.get(ME, headers=bearer(other))).status_code == 200
    assert (await client.post(f"{AUTH}/logout")).status_code == 401


async def test_password_reset_flow(
    app: FastAPI, client: AsyncClient, db_session: AsyncSession
) -> None:
    user = await make_user(app, db_session, email="reset@example.com")
    session_before = await sign_in(client, user.username)
    with capture_logs() as logs:
        known = await client.post(f"{AUTH}/password-reset/request", json={"email": user.email})
        unknown = await client.post(
            f"{AUTH}/password-reset/request", json={"email": "ghost@example.com"}
        )
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    assert len([e for e in logs if e["event"] == "mail.outbox"]) == 1
    token = _mailed_token(logs)
    confirm = {"token": token, "new_password": "fresh password 42"}
    assert (await client.post(f"{AUTH}/password-reset/confirm", json=confirm)).status_code == 204
    assert (await client.post(f"{AUTH}/password-reset/confirm", json=confirm)).status_code == 400
    assert (await client.get(ME, headers=bearer(session_before))).status_code == 401
    old = await client.post(f"{AUTH}/login", data={"username": user.username, "password": PASSWORD})
    assert old.status_code == 401
    await sign_in(client, user.username, "fresh password 42")


async def test_expired_reset_token_is_refused(
    app: FastAPI, client: AsyncClient, db_session: AsyncSession
) -> None:
    user = await make_user(app, db_session)
    with capture_logs() as logs:
        await client.post(f"{AUTH}/password-reset/request", json={"email": user.email})
    await db_session.execute(
        text("UPDATE app.action_tokens SET expires_at = now() - interval '1 minute'")
    )
    response = await client.post(
        f"{AUTH}/password-reset/confirm",
        json={"token": _mailed_token(logs), "new_password": "fresh password 42"},
    )
    assert response.status_code == 400


async def test_bcrypt_hash_verifies_and_is_rehashed_to_argon2id(
    app: FastAPI, client: AsyncClient, db_session: AsyncSession
) -> None:
    user = await make_user(app, db_session)
    user.hashed_password = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    await db_session.flush()
    await sign_in(client, user.username)
    stored = await db_session.scalar(
        text("SELECT hashed_password FROM app.users WHERE id = :id"), {"id": user.id}
    )
    assert str(stored).startswith("$argon2id$")


@pytest.mark.parametrize("password", ["é" * 100, "🔑" * 1024, "x" * 73])
async def test_long_passwords_never_fail(
    app: FastAPI, client: AsyncClient, db_session: AsyncSession, password: str
) -> None:
    user = await make_user(app, db_session, password=password)
    await sign_in(client, user.username, password)
    user.hashed_password = bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt(4)).decode()
    await db_session.flush()
    await sign_in(client, user.username, password)


async def test_login_is_rate_limited_per_account(
    app: FastAPI, client: AsyncClient, db_session: AsyncSession
) -> None:
    user = await make_user(app, db_session)
    for _ in range(5):
        await client.post(
            f"{AUTH}/login", data={"username": user.username, "password": "nope nope"}
        )
    blocked = await client.post(
        f"{AUTH}/login", data={"username": user.username, "password": PASSWORD}
    )
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) >= 1
    assert blocked.headers["content-type"] == "application/problem+json"


async def test_first_superuser_is_created_once(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(
        database_url,
        tmp_path,
        first_superuser_email="root@example.com",
        first_superuser_username="root_admin",
        first_superuser_password="bootstrap password",
    )
    try:
        async with running(settings) as http:
            tokens = await http.post(
                f"{AUTH}/login", data={"username": "root_admin", "password": "bootstrap password"}
            )
            me = await http.get(ME, headers=bearer(tokens.json()))
            assert me.json()["is_superuser"] is True
        async with running(settings) as http:
            pass
    finally:
        engine = create_async_engine(database_url)
        async with engine.begin() as conn:
            count = await conn.scalar(
                text("SELECT count(*) FROM app.users WHERE username = 'root_admin'")
            )
            await conn.execute(text("DELETE FROM app.users WHERE username = 'root_admin'"))
        await engine.dispose()
    assert count == 1
