"""Fixtures for database insight: an admin's header, raw connections to the test database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import asyncpg_dsn
from tests.users.factory import signed_in

DB = "/api/v1/admin/db"
Connect = Callable[[], Awaitable[asyncpg.Connection]]


@pytest.fixture
async def admin(app: FastAPI, db_session: AsyncSession, client: AsyncClient) -> dict[str, str]:
    _, auth = await signed_in(app, db_session, client, admin=True)
    return auth


@pytest.fixture
async def connect(test_database_url: str) -> AsyncIterator[Connect]:
    """Open extra connections to the test's database (closed afterwards)."""
    opened: list[asyncpg.Connection] = []

    async def open_one() -> asyncpg.Connection:
        conn = await asyncpg.connect(asyncpg_dsn(test_database_url))
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        if not conn.is_closed():
            conn.terminate()


async def get(client: AsyncClient, auth: dict[str, str], path: str, **params: Any) -> Any:
    response = await client.get(f"{DB}{path}", headers=auth, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def until(probe: Callable[[], Awaitable[Any]], attempts: int = 100) -> Any:
    """Poll `probe` until it returns something truthy (statistics arrive asynchronously)."""
    for _ in range(attempts):
        if found := await probe():
            return found
        await asyncio.sleep(0.1)
    raise AssertionError("condition never held")


def check(overview: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in overview["checks"] if c["name"] == name)
    return found
