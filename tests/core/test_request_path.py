"""The request path: one round trip per authenticated read, and no body read before auth."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.posts.factory import make_post
from tests.users.factory import signed_in

POSTS = "/api/v1/posts"


async def _reset_statements(session: AsyncSession) -> None:
    await session.execute(
        text(
            "SELECT pg_stat_statements_reset(0, oid, 0) FROM pg_database"
            " WHERE datname = current_database()"
        )
    )


async def _statements(session: AsyncSession) -> dict[str, int]:
    """Every statement this database ran since the reset (BEGIN and COMMIT included)."""
    rows = await session.execute(
        text(
            "SELECT query, calls FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            # this test's own bookkeeping is left out of the count
            " AND query NOT ILIKE '%pg_stat_statements%' AND query NOT ILIKE '%pg_database%'"
        )
    )
    return {query: int(calls) for query, calls in rows.all()}


async def test_an_authenticated_read_is_one_round_trip(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    author, auth = await signed_in(app, db_session, client)
    post = await make_post(db_session, author, "Counted")
    urls = [f"{POSTS}/{post.id}", "/api/v1/users/me", f"{POSTS}?limit=20"]
    for url in urls:  # warm: the viewer is cached, statements are prepared
        assert (await client.get(url, headers=auth)).status_code == 200
    for url in urls:
        await _reset_statements(db_session)
        for _ in range(5):
            assert (await client.get(url, headers=auth)).status_code == 200
        statements = await _statements(db_session)
        # One statement, run once per request: no BEGIN/COMMIT, no ping, no viewer lookup.
        assert list(statements.values()) == [5], (url, statements)
        assert not any(q.upper().startswith(("BEGIN", "COMMIT")) for q in statements)


async def test_a_write_is_one_transaction_committed_before_the_answer(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, auth = await signed_in(app, db_session, client)
    await client.get("/api/v1/users/me", headers=auth)
    await _reset_statements(db_session)
    created = await client.post(POSTS, json={"title": "Written"}, headers=auth)
    assert created.status_code == 201
    statements = await _statements(db_session)
    assert statements.get("BEGIN") == 1
    assert statements.get("COMMIT") == 1
    # Committed by the time the client has its answer.
    found = await db_session.execute(
        text("SELECT title FROM app.posts WHERE id = :id"), {"id": created.json()["id"]}
    )
    assert found.scalar_one() == "Written"


class CountingBody:
    """A request body that records how much of it the server pulled."""

    def __init__(self, chunks: int, size: int = 64 * 1024) -> None:
        self.pulled = 0
        self._chunks, self._size = chunks, size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"document": ['
        for _ in range(self._chunks):
            self.pulled += 1
            yield b"1," * (self._size // 2)
        yield b'1], "rows_path": "$[*]", "columns": {"title": "$"}}'


async def test_the_body_is_never_read_before_authentication_and_authorization(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    url = "/api/v1/admin/import/json"
    headers = {"Content-Type": "application/json"}
    anonymous = CountingBody(16)
    response = await client.post(url, content=anonymous, headers=headers)
    assert response.status_code == 401
    assert anonymous.pulled == 0
    _, user = await signed_in(app, db_session, client)
    not_admin = CountingBody(16)
    response = await client.post(url, content=not_admin, headers={**headers, **user})
    assert response.status_code == 403
    assert not_admin.pulled == 0
    _, admin = await signed_in(app, db_session, client, admin=True)
    allowed = CountingBody(16)
    response = await client.post(url, content=allowed, headers={**headers, **admin})
    assert response.status_code != 401
    assert allowed.pulled == 16  # an admin's body is read (and judged on its merits)


async def test_paths_answer_with_and_without_a_trailing_slash_registered_once(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, auth = await signed_in(app, db_session, client)
    for url in (POSTS, f"{POSTS}/", "/api/v1/users/me", "/api/v1/users/me/"):
        response = await client.get(url, headers=auth)
        assert response.status_code == 200, url
        assert "location" not in response.headers
    registered = list(_route_keys(app.router.routes))
    assert len(registered) == len(set(registered))  # each path and method once
    assert not [key for key in registered if key[0].endswith("/")]


def _route_keys(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(path, methods) of every route, walking into included routers."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _route_keys(included.routes, prefix + getattr(route, "prefix", ""))
        elif isinstance(route, APIRoute):
            yield prefix + route.path, ",".join(sorted(route.methods or ()))
