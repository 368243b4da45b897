"""Test harness: one embedded PostgreSQL per session, built by the migrations.

Isolation without a test double: every test that uses the app gets its own
database, cloned from a migrated template (`CREATE DATABASE ... TEMPLATE`), and its
own app on it, so requests run through the real session dependency, the real read
pool and the real viewer cache. `db_session` sets up and inspects data on the same
database in autocommit, so what it writes is visible to the app at once.
Set KEEL_TEST_DATABASE_URL to run the suite against an external PostgreSQL 17+.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
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
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from keel.app import create_app
from keel.config import Settings
from keel.core.embedded import EmbeddedPostgres
from keel.migrations import runner

MakeDatabase = Callable[..., Awaitable[str]]


def url_for_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def asyncpg_dsn(url: str) -> str:
    """asyncpg wants a plain libpq URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def redis_test_url() -> str:
    """A Redis database of this pytest-xdist worker's own: tests may FLUSHDB it.

    Workers gw0, gw1, ... get databases 1, 2, ...; 0 is for prefixed keys only and 14 is
    the benchmarks'.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return f"redis://127.0.0.1:6379/{1 + int(worker.removeprefix('gw'))}"


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


# One template per pytest-xdist worker: workers may share an external server.
TEMPLATE_DATABASE = f"keel_template_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A migrated database for this test session (CLI tests use it directly)."""
    external = os.environ.get("KEEL_TEST_DATABASE_URL")
    if external:
        url = Settings(_env_file=None, database_url=external).database_url
        assert url is not None
        # pytest-xdist workers share the external database: one migrates at a time.
        with open(Path(tempfile.gettempdir()) / "keel-test-migrate.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
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


async def _admin(database_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(asyncpg_dsn(url_for_database(database_url, "postgres")))


@pytest.fixture(scope="session")
async def template_url(database_url: str) -> str:
    """A migrated database nobody connects to, to clone per test."""
    conn = await _admin(database_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DATABASE}" WITH (FORCE)')
        source = make_url(database_url).database
        await conn.execute(f'CREATE DATABASE "{TEMPLATE_DATABASE}" TEMPLATE "{source}"')
    finally:
        await conn.close()
    return url_for_database(database_url, TEMPLATE_DATABASE)


@pytest.fixture
async def test_database_url(database_url: str, template_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test, dropped afterwards."""
    name = f"keel_t_{uuid.uuid4().hex[:16]}"
    conn = await _admin(database_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DATABASE}"')
    finally:
        await conn.close()
    yield url_for_database(database_url, name)
    conn = await _admin(database_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def settings(test_database_url: str, data_dir: Path) -> Settings:
    return make_settings(test_database_url, data_dir)


@pytest.fixture(scope="session")
def app_shell(template_url: str, data_dir: Path) -> FastAPI:
    """The app's routes and middleware, built once: FastAPI takes ~0.1 s to build them."""
    return create_app(make_settings(template_url, data_dir))


@pytest.fixture
async def app(app_shell: FastAPI, settings: Settings) -> AsyncIterator[FastAPI]:
    """The real app on this test's own database: a fresh lifespan (pools, caches, services)."""
    app_shell.state.settings = settings
    async with app_shell.router.lifespan_context(app_shell):
        yield app_shell


@pytest.fixture
async def db_session(app: FastAPI, test_database_url: str) -> AsyncIterator[AsyncSession]:
    """A session on the test's database in autocommit: each statement is visible at once.

    Its own unpooled connection, so nothing it sets leaks into the app's pools.
    """
    engine = create_async_engine(
        test_database_url, poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        async with AsyncSession(bind=engine, expire_on_commit=False) as session:
            yield session
    finally:
        await engine.dispose()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
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
