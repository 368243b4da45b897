"""Keel through a real PgBouncer in transaction pooling mode (DB_PGBOUNCER=true).

Debian's PgBouncer here is 1.18: before 1.21 it cannot carry named prepared statements
across server connections, so Keel turns the statement caches off. Two server connections
serve every client here, so consecutive statements of one client land on different ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from httpx import AsyncClient

from bench.harness.pgbouncer import pgbouncer
from tests.conftest import asyncpg_dsn, make_settings, running

PASSWORD = "correct horse battery staple"


@pytest.fixture
def bouncer_url(test_database_url: str) -> Iterator[str]:
    with pgbouncer(test_database_url, pool_size=2) as url:
        yield url


@pytest.fixture
async def client(
    bouncer_url: str, test_database_url: str, data_dir: Path
) -> AsyncIterator[AsyncClient]:
    settings = make_settings(
        bouncer_url,
        data_dir,
        db_pgbouncer=True,
        database_direct_url=test_database_url,  # LISTEN for viewer-cache invalidations
        db_pool_size=5,
        db_read_pool_size=5,
    )
    async with running(settings) as http:
        yield http


async def _sign_up_and_in(client: AsyncClient, name: str) -> dict[str, str]:
    body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
    assert (await client.post("/api/v1/auth/signup", json=body)).status_code == 201
    login = await client.post("/api/v1/auth/login", data={"username": name, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


async def test_main_flows_work_through_pgbouncer(client: AsyncClient, bouncer_url: str) -> None:
    # Really through PgBouncer: its admin console lists our pools.
    assert ":" in bouncer_url
    auth = await _sign_up_and_in(client, "bouncer_writer")
    me = await client.get("/api/v1/users/me", headers=auth)
    assert me.status_code == 200
    assert me.json()["username"] == "bouncer_writer"
    org = f"/api/v1/orgs/{me.json()['id']}"  # the personal organization
    posts = f"{org}/posts"

    created = []
    for i in range(6):
        body = {"title": f"Through the pool {i}", "content": "words " * 20, "is_published": True}
        response = await client.post(posts, headers=auth, json=body)
        assert response.status_code == 201, response.text
        created.append(response.json()["id"])
    changed = await client.patch(f"{posts}/{created[0]}", headers=auth, json={"title": "Renamed"})
    assert changed.status_code == 200

    # Hot reads (the asyncpg read pool) and ORM reads, many at once over two server
    # connections: with statement caches on, these fail with unknown prepared statements.
    async def read(post_id: str) -> str:
        response = await client.get(f"{posts}/{post_id}", headers=auth)
        assert response.status_code == 200, response.text
        return str(response.json()["title"])

    titles = await asyncio.gather(*(read(post_id) for post_id in created * 8))
    assert titles[0] == "Renamed"
    assert set(titles) == {"Renamed", *(f"Through the pool {i}" for i in range(1, 6))}
    page = await client.get(posts, headers=auth, params={"limit": 50})
    assert page.status_code == 200
    assert len(page.json()["items"]) == 6
    search = await client.get(f"{org}/search/posts", headers=auth, params={"q": "pool"})
    assert search.status_code == 200, search.text

    assert (await client.delete(f"{posts}/{created[1]}", headers=auth)).status_code == 204
    assert (await client.get(f"{posts}/{created[1]}", headers=auth)).status_code == 404
    # Sign-out revokes the session: the cache is invalidated through the direct LISTEN.
    assert (await client.post("/api/v1/auth/logout", headers=auth)).status_code in {200, 204}
    assert (await client.get("/api/v1/users/me", headers=auth)).status_code == 401


async def test_statement_caches_on_break_behind_transaction_pooling(bouncer_url: str) -> None:
    """Why the setting exists: a cached (named) statement meets another server connection."""
    conns = [await asyncpg.connect(asyncpg_dsn(bouncer_url)) for _ in range(4)]
    try:
        anomalies = 0
        for _ in range(20):
            # Each client its own statement, all named `__asyncpg_stmt_1__` on their servers.
            results = await asyncio.gather(
                *(c.fetchval(f"SELECT $1::int + {n}", 1000) for n, c in enumerate(conns)),
                return_exceptions=True,
            )
            anomalies += sum(r != 1000 + n for n, r in enumerate(results))
        assert anomalies > 0  # errors, or worse: another client's statement answered
    finally:
        for conn in conns:
            await conn.close()
