"""The async database layer: one engine per process, a per-request session, server checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool

from keel.config import Settings

MIN_SERVER_VERSION_NUM = 170000
REQUIRED_EXTENSIONS = ("vector", "pg_trgm", "pg_stat_statements", "citext")


class DatabaseUnsupported(RuntimeError):
    """The configured server cannot run Keel; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class PoolStatus:
    size: int
    checked_out: int
    checked_in: int
    overflow: int


@dataclass(slots=True)
class Database:
    """The process's engine and its session factory."""

    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]

    def pool_status(self) -> PoolStatus:
        pool = self.engine.pool
        if not isinstance(pool, AsyncAdaptedQueuePool):
            raise TypeError(f"unexpected pool class {type(pool).__name__}")
        return PoolStatus(
            size=pool.size(),
            checked_out=pool.checkedout(),
            checked_in=pool.checkedin(),
            overflow=max(pool.overflow(), 0),
        )

    async def dispose(self) -> None:
        await self.engine.dispose()


def create_database(settings: Settings, url: str) -> Database:
    """Build the engine with explicit pool settings, JIT off and an application_name."""
    server_settings = {"application_name": settings.app_name.lower(), "jit": "off"}
    if settings.db_statement_timeout_ms:
        server_settings["statement_timeout"] = str(settings.db_statement_timeout_ms)
    engine = create_async_engine(
        url,
        poolclass=AsyncAdaptedQueuePool,
        pool_size=settings.db_pool_size,
        max_overflow=0,
        pool_timeout=settings.db_pool_timeout,
        pool_pre_ping=True,
        pool_recycle=settings.db_pool_recycle,
        hide_parameters=True,  # errors must never carry values such as password hashes
        connect_args={"server_settings": server_settings, "timeout": settings.db_connect_timeout},
    )
    return Database(
        engine=engine,
        sessionmaker=async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False),
    )


def describe_url(url: str) -> str:
    """Where a URL points, without its password: for messages and logs."""
    parsed = make_url(url)
    where = parsed.query.get("host") or f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    return f"{where}/{parsed.database}"


async def verify_server(
    engine: AsyncEngine, required: tuple[str, ...] = REQUIRED_EXTENSIONS
) -> str:
    """Refuse servers older than PostgreSQL 17 or lacking Keel's extensions.

    Returns the server version string.
    """
    where = describe_url(engine.url.render_as_string(hide_password=True))
    async with engine.connect() as conn:
        version_num = int(await conn.scalar(text("SHOW server_version_num")) or 0)
        version = str(await conn.scalar(text("SHOW server_version")))
        if version_num < MIN_SERVER_VERSION_NUM:
            raise DatabaseUnsupported(
                f"PostgreSQL {version} found at {where}; Keel needs PostgreSQL 17 or newer "
                "(it uses JSON_TABLE, MERGE ... RETURNING and pg_stat_io). Upgrade the server, "
                "or unset DATABASE_URL to use the embedded PostgreSQL 18."
            )
        rows = await conn.execute(
            text("SELECT name FROM pg_available_extensions WHERE name = ANY(:names)"),
            {"names": list(required)},
        )
        missing = sorted(set(required) - {row[0] for row in rows})
    if missing:
        raise DatabaseUnsupported(missing_extensions_message(missing, version, version_num, where))
    return version


def missing_extensions_message(
    missing: list[str], version: str, version_num: int, where: str
) -> str:
    """Say which extensions are missing and how to install them."""
    if "vector" in missing:
        return (
            f"The pgvector extension is not installed on the server at {where} "
            f"(PostgreSQL {version}). Install it, e.g. `apt install postgresql-"
            f"{version_num // 10000}-pgvector` or build it from github.com/pgvector/pgvector, "
            "then run `keel migrate upgrade`."
        )
    return (
        f"Extensions {', '.join(missing)} are not available on the server at {where} "
        f"(PostgreSQL {version}); install the PostgreSQL contrib package for that version."
    )


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request: committed once on success, rolled back on any error."""
    database: Database = request.app.state.db
    async with database.sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


# scope="function": the commit finishes before the response is sent, so a failed
# commit becomes an error response instead of a lost write behind a 2xx.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under `session`, inside its transaction (for COPY)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    if not driver.is_in_transaction():
        # SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its first statement;
        # without one, raw statements would each commit on their own.
        await connection.execute(text("SELECT 1"))
    return driver
