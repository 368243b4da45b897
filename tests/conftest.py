"""Test harness: one embedded PostgreSQL per session, built by the migrations.

Each test runs inside a transaction that is rolled back; the app's session
dependency is pointed at that transaction. Set KEEL_TEST_DATABASE_URL to run the
suite against an external PostgreSQL 17+ instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncSession

from keel.app import create_app
from keel.config import Settings
from keel.core.db import get_session
from keel.core.embedded import EmbeddedPostgres
from keel.migrations import runner

MakeDatabase = Callable[..., Awaitable[str]]


def url_for_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def asyncpg_dsn(url: str) -> str:
    """asyncpg wants a plain libpq URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "testing",
        "database_url": database_url,
        "data_dir": data_dir,
        "auto_migrate": False,
        "redis_url": None,
        "log_json": True,
        "worker_enabled": False,  # tests run the worker themselves, when they need it
        **overrides,
    }
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keel-data")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A migrated database for this test session."""
    external = os.environ.get("KEEL_TEST_DATABASE_URL")
    if external:
        url = Settings(_env_file=None, database_url=external).database_url
        assert url is not None
        runner.upgrade(url)
        yield url
        return
    # Outside pytest's basetemp: another pytest session resets that tree to 0700,
    # which would lock the server's own system user out mid-run.
    data_dir = Path(tempfile.mkdtemp(prefix="keel-test-pg-"))
    server = EmbeddedPostgres(data_dir, database="keel_test")
    try:
        url = server.ensure_running()
        runner.upgrade(url)
        yield url
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(database_url: str, data_dir: Path) -> Settings:
    return make_settings(database_url, data_dir)


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def db_session(app: FastAPI) -> AsyncIterator[AsyncSession]:
    """A session whose work, including the app's commits, is rolled back after the test."""
    async with app.state.db.engine.connect() as connection:
        transaction = await connection.begin()
        session = AsyncSession(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )

        async def session_in_test_transaction() -> AsyncIterator[AsyncSession]:
            # A savepoint per request: a failed request undoes only its own work,
            # never the data the test set up before it.
            request_savepoint = await session.begin_nested()
            try:
                yield session
            except BaseException:
                # After a failed flush the savepoint is inactive but still needs rolling
                # back; after an explicit commit in the request it is already closed.
                with contextlib.suppress(InvalidRequestError):
                    await request_savepoint.rollback()
                raise
            if request_savepoint.is_active:
                await request_savepoint.commit()

        app.dependency_overrides[get_session] = session_in_test_transaction
        try:
            yield session
        finally:
            app.dependency_overrides.pop(get_session, None)
            await session.close()
            await transaction.rollback()


@pytest.fixture
async def client(app: FastAPI, db_session: AsyncSession) -> AsyncIterator[AsyncClient]:
    await app.state.ratelimiter.reset()  # each test starts with fresh rate-limit budgets
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as http:
        yield http


@pytest.fixture
async def make_database(database_url: str) -> AsyncIterator[MakeDatabase]:
    """Create throwaway databases on the test server; they are dropped afterwards."""
    created: list[str] = []
    admin_dsn = asyncpg_dsn(url_for_database(database_url, "postgres"))

    async def make(*, migrated: bool = False) -> str:
        name = f"keel_scratch_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        created.append(name)
        url = url_for_database(database_url, name)
        if migrated:
            await asyncio.to_thread(runner.upgrade, url)
        return url

    yield make
    conn = await asyncpg.connect(admin_dsn)
    try:
        for name in created:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def running(settings: Settings, base_url: str = "http://test") -> AsyncIterator[AsyncClient]:
    """A separate app on `settings`, its lifespan run, and a client for it."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url=base_url) as http:
            yield http
