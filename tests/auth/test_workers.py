"""Revocation reaches every worker process: `keel serve --workers 2` on the test database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx

from keel.auth.repository import VIEWER_QUERY
from tests.conftest import asyncpg_dsn
from tests.test_cli import KeelLauncher, KeelServer
from tests.test_cli import keel as keel  # the fixture that starts and reaps `keel serve`

PASSWORD = "correct horse battery staple"
ME = "/api/v1/users/me"
REQUESTS = 12  # fresh connections each: both workers get some


async def _sign_up(server: KeelServer, name: str) -> dict[str, str]:
    body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
    form = {"username": name, "password": PASSWORD}
    async with httpx.AsyncClient(base_url=server.base_url + "/api/v1/auth") as http:
        assert (await http.post("/signup", json=body)).status_code == 201
        login = await http.post("/login", data=form)
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


async def _statuses(server: KeelServer, auth: dict[str, str]) -> set[int]:
    """Each request on a fresh connection, so both workers serve some."""
    statuses = set()
    for _ in range(REQUESTS):
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            statuses.add((await http.get(ME, headers=auth)).status_code)
    return statuses


async def _viewer_lookups(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        calls = await conn.fetchval(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND query = $1",
            VIEWER_QUERY.strip(),
        )
        return int(calls)
    finally:
        await conn.close()


async def _sql(dsn: str, statement: str, *args: object) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement, *args)
    finally:
        await conn.close()


async def test_logout_and_deactivation_reach_every_worker_within_a_second(
    keel: KeelLauncher, test_database_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = keel.serve(
        data_dir, "--workers", "2", DATABASE_URL=test_database_url, KEEL_AUTO_MIGRATE="false"
    )
    server.wait_ready("/health/ready")
    dsn = asyncpg_dsn(test_database_url)

    leaving = await _sign_up(server, "leaving")
    assert await _statuses(server, leaving) == {200}
    assert await _statuses(server, leaving) == {200}
    # 2 × REQUESTS requests, at most one lookup per worker: the rest came from the caches.
    assert 1 <= await _viewer_lookups(dsn) <= 2

    async with httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.post("/api/v1/auth/logout", headers=leaving)).status_code == 204
    await asyncio.sleep(1.0)
    assert await _statuses(server, leaving) == {401}

    deactivated = await _sign_up(server, "deactivated")
    assert await _statuses(server, deactivated) == {200}
    # Deactivated outside the API (an import, an operator's SQL): only NOTIFY can tell.
    await _sql(dsn, "UPDATE app.users SET is_active = false WHERE username = $1", "deactivated")
    await asyncio.sleep(1.0)
    assert await _statuses(server, deactivated) == {401}
