"""Sign-in limits: failures per resolved account and per client IP; successes are free."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession
from structlog.testing import capture_logs

from tests.auth.mailbox import mails, token_in
from tests.conftest import make_settings, redis_test_url, running
from tests.users.factory import PASSWORD, make_user

LOGIN = "/api/v1/auth/login"
REDIS_URL = redis_test_url()

Login = Callable[[str, str], Awaitable[int]]


@pytest.fixture
def login_from_many_ips(app: FastAPI) -> Login:
    """Each attempt comes from another client IP, so only per-account limits can apply."""
    attempts = iter(range(1, 250))

    async def login(username: str, password: str) -> int:
        transport = ASGITransport(app=app, client=(f"10.0.0.{next(attempts)}", 40000))
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.post(LOGIN, data={"username": username, "password": password})
        return response.status_code

    return login


async def _login(http: AsyncClient, username: str, password: str = PASSWORD) -> int:
    response = await http.post(LOGIN, data={"username": username, "password": password})
    return response.status_code


async def test_correct_logins_never_count_against_the_ip(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    # Behind a reverse proxy every user shares one IP: the site must not close after 5.
    people = [await make_user(app, db_session) for _ in range(7)]
    assert [await _login(client, person.username) for person in people] == [200] * 7


async def test_failures_count_per_account_whatever_the_spelling(
    app: FastAPI, db_session: AsyncSession, login_from_many_ips: Login
) -> None:
    await make_user(app, db_session, email="Spelling@Example.com", username="Spelling")
    spellings = ["spelling", "SPELLING@example.com", "Spelling", "spelling@EXAMPLE.COM", "sPeLLing"]
    failures = [await login_from_many_ips(login, "wrong guess") for login in spellings]
    assert failures == [401] * 5
    # The budget is the account's: the right password is refused too, under any name.
    assert await login_from_many_ips("spelling@example.com", PASSWORD) == 429


async def test_unknown_logins_lock_like_real_ones(login_from_many_ips: Login) -> None:
    ghost = f"Ghost-{uuid.uuid4().hex[:8]}"
    statuses = [
        await login_from_many_ips(spelling, "wrong guess")
        for spelling in (ghost, ghost.upper(), f" {ghost.lower()} ", ghost, ghost, ghost)
    ]
    assert statuses == [401] * 5 + [429]


async def test_a_success_resets_the_account_count(
    app: FastAPI, db_session: AsyncSession, login_from_many_ips: Login
) -> None:
    user = await make_user(app, db_session)
    for _ in range(2):
        assert [await login_from_many_ips(user.username, "wrong guess") for _ in range(4)] == [
            401
        ] * 4
        assert await login_from_many_ips(user.email, PASSWORD) == 200


async def test_failures_per_ip_have_their_own_higher_limit(
    test_database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        test_database_url,
        tmp_path,
        rate_limit_login="3/15 minutes",
        rate_limit_login_ip="6/15 minutes",
    )
    async with running(settings) as http:
        ghosts = [f"ghost-{uuid.uuid4().hex[:8]}" for _ in range(7)]
        # Two failures on each of three accounts: under every account's limit of 3 ...
        statuses = [await _login(http, ghost, "wrong guess") for ghost in ghosts[:3] * 2]
        # ... but the IP has spent its 6.
        statuses.append(await _login(http, ghosts[6], "wrong guess"))
    assert statuses == [401] * 6 + [429]


async def test_a_success_resets_the_account_count_in_redis(
    test_database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(test_database_url, tmp_path, redis_url=REDIS_URL)
    username = f"redis_{uuid.uuid4().hex[:8]}"
    statuses: list[int] = []
    async with running(settings) as http:
        account = {"email": f"{username}@example.com", "username": username}
        signup = await http.post("/api/v1/auth/signup", json={**account, "password": PASSWORD})
        assert signup.status_code == 201
        for _ in range(2):
            statuses += [await _login(http, username, "wrong guess") for _ in range(4)]
            statuses.append(await _login(http, username))
    redis = Redis.from_url(REDIS_URL)
    ip_counters = await redis.keys("keel:ratelimit:*password-failures-ip*")
    await redis.aclose()
    assert statuses == ([401] * 4 + [200]) * 2
    assert ip_counters  # the counters really were in Redis


async def test_a_password_reset_unlocks_sign_in(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, login_from_many_ips: Login
) -> None:
    user = await make_user(app, db_session)
    assert [await login_from_many_ips(user.username, "wrong guess") for _ in range(6)] == [
        401
    ] * 5 + [429]
    with capture_logs() as logs:
        await client.post("/api/v1/auth/password-reset/request", json={"email": user.email})
    confirm = {"token": token_in(mails(logs, to=user.email)[-1]), "new_password": "fresh pass 42"}
    reset = await client.post("/api/v1/auth/password-reset/confirm", json=confirm)
    assert reset.status_code == 204
    assert await login_from_many_ips(user.username, "fresh pass 42") == 200
