"""A database that restarts or goes away: 503 with Retry-After, never 500, and back by itself.

These run on a private embedded server, so stopping it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from keel.app import create_app
from keel.core.embedded import EmbeddedPostgres
from keel.migrations import runner
from tests.conftest import make_settings
from tests.posts.factory import posts_url
from tests.users.factory import bearer, make_user, sign_in

ME = "/api/v1/users/me"


@pytest.fixture
async def outage() -> AsyncIterator[tuple[EmbeddedPostgres, FastAPI, AsyncClient]]:
    data_dir = Path(tempfile.mkdtemp(prefix="keel-outage-"))
    server = EmbeddedPostgres(data_dir, database="keel_outage")
    try:
        url = await asyncio.to_thread(server.ensure_running)
        await asyncio.to_thread(runner.upgrade, url)
        app = create_app(make_settings(url, data_dir, db_connect_timeout=2.0))
        async with app.router.lifespan_context(app):
            transport = ASGITransport(app=app)
            async with AsyncClient(transport=transport, base_url="http://test") as http:
                yield server, app, http
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(data_dir, ignore_errors=True)


async def _signed_in(app: FastAPI, http: AsyncClient) -> tuple[str, dict[str, str]]:
    """The posts URL of a new user's personal organization, and their Authorization header."""
    async with app.state.db.sessionmaker() as session:
        user = await make_user(app, session)
        await session.commit()
    return posts_url(user.id), bearer(await sign_in(http, user.username))


async def test_reads_survive_a_restart_without_an_error(
    outage: tuple[EmbeddedPostgres, FastAPI, AsyncClient],
) -> None:
    server, app, http = outage
    posts, auth = await _signed_in(app, http)
    assert (await http.post(posts, json={"title": "before"}, headers=auth)).status_code == 201
    assert (await http.get(ME, headers=auth)).status_code == 200
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.ensure_running)
    # Every pooled connection is dead now; the read is retried once on a fresh one.
    assert (await http.get(ME, headers=auth)).status_code == 200
    assert (await http.get(f"{posts}?limit=5", headers=auth)).status_code == 200
    # A write is not retried (it may not be idempotent): at worst a 503, never a 500.
    first = await http.post(posts, json={"title": "after"}, headers=auth)
    assert first.status_code in (201, 503)
    assert (await http.post(posts, json={"title": "again"}, headers=auth)).status_code == 201


async def test_a_stopped_database_is_503_then_service_returns_by_itself(
    outage: tuple[EmbeddedPostgres, FastAPI, AsyncClient],
) -> None:
    server, app, http = outage
    posts, auth = await _signed_in(app, http)
    assert (await http.get(ME, headers=auth)).status_code == 200
    await asyncio.to_thread(server.stop)
    for method, url, body in (("GET", ME, None), ("POST", posts, {"title": "down"})):
        response = await http.request(method, url, json=body, headers=auth)
        assert response.status_code == 503, (method, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert int(response.headers["retry-after"]) >= 1
    await asyncio.to_thread(server.ensure_running)
    back_at = time.monotonic() + 5
    while (await http.get(ME, headers=auth)).status_code != 200:
        assert time.monotonic() < back_at, "service did not come back within 5 s"
        await asyncio.sleep(0.1)
    assert (await http.post(posts, json={"title": "up"}, headers=auth)).status_code == 201
