"""Every insight statement against an older PostgreSQL (the system's 15, when there is one).

Keel refuses servers older than 17 at startup; insight refuses them again on its own
(`require_supported`). This pins down *why*: exactly these statements fail there, for
these reasons, so the version check is deliberate, not a guess.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from sqlalchemy import TextClause
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from keel.insight.pg import service, sql, sql_objects
from keel.insight.pg.service import InsightConfig
from tests.conftest import make_settings
from tests.test_cli import OLD_DATABASE_URL

PARAMS = {"query_chars": 100, "limit": 5, "pid": 1, "names": ["work_mem"], "min_rows": 1}
SIGNALS = {"CANCEL", "TERMINATE", "RESET_QUERY_STATS"}  # writes: not run here
# What PostgreSQL 15 lacks, statement by statement.
FAILS_ON_15 = {
    "CONNECTIONS": "reserved_connections",  # 16
    "REPLICATION_SLOTS": "inactive_since",  # 17
    "CHECKPOINTER": "pg_stat_checkpointer",  # 17 (15 has it in pg_stat_bgwriter)
    "INDEXES": "last_idx_scan",  # 16
    "IO_17": "pg_stat_io",  # 16
    "IO_18": "pg_stat_io",  # 16 (and read_bytes, 18)
    # Not a version matter: that server doesn't preload pg_stat_statements.
    "query_stats(total_time)": "shared_preload_libraries",
    "query_stats(mean_time)": "shared_preload_libraries",
    "query_stats(calls)": "shared_preload_libraries",
    "METRICS": None,  # works: only views 15 has
}


def statements() -> Iterator[tuple[str, TextClause]]:
    for module in (sql, sql_objects):
        for name, value in vars(module).items():
            if isinstance(value, TextClause) and name not in SIGNALS:
                yield name, value
    for order in sql.QUERY_ORDER:
        yield f"query_stats({order})", sql.query_stats(order)


async def _version_num(url: str) -> int | None:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        return int(await conn.fetchval("SHOW server_version_num"))
    finally:
        await conn.close()


@pytest.fixture
async def old_server() -> AsyncIterator[AsyncEngine]:
    """A scratch database with pg_stat_statements and pgstattuple on the old server."""
    version = await _version_num(OLD_DATABASE_URL)
    if version is None:
        pytest.skip(f"no PostgreSQL answers at {OLD_DATABASE_URL}")
    if version >= service.MIN_VERSION_NUM:
        pytest.skip(f"the server at {OLD_DATABASE_URL} is 17 or newer")
    name = f"keel_insight_probe_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(OLD_DATABASE_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(OLD_DATABASE_URL).set(drivername="postgresql+asyncpg", database=name)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            for extension in ("pg_stat_statements", "pgstattuple"):
                await conn.exec_driver_sql(f"CREATE EXTENSION IF NOT EXISTS {extension}")
        yield engine
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_which_statements_fail_on_15_and_why(old_server: AsyncEngine) -> None:
    failures: dict[str, str] = {}
    for name, statement in statements():
        params = {key: PARAMS[key] for key in statement.compile().params}
        async with old_server.connect() as conn:
            try:
                await conn.execute(statement, params)
            except DBAPIError as exc:
                failures[name] = str(exc.orig)
    expected = {name: why for name, why in FAILS_ON_15.items() if why is not None}
    assert set(failures) == set(expected), failures
    for name, why in expected.items():
        assert why in failures[name], (name, failures[name])


async def test_insight_refuses_the_old_server_by_version(
    old_server: AsyncEngine, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = make_settings(str(old_server.url), tmp_path_factory.mktemp("old"))
    async with old_server.begin() as conn:
        session = AsyncSession(bind=conn)
        with pytest.raises(service.InsightUnsupported, match="older than 17"):
            await service.overview(session, InsightConfig.from_settings(settings))
