"""Migrations are reversible and the models match them exactly."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from keel.migrations import runner
from keel.models import metadata
from tests.conftest import MakeDatabase


async def _scalar(url: str, sql: str) -> Any:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(text(sql))
    finally:
        await engine.dispose()


APP_SCHEMA_EXISTS = "SELECT count(*) FROM pg_namespace WHERE nspname = 'app'"
TRIGGER_FN_EXISTS = "SELECT to_regprocedure('app.set_updated_at()') IS NOT NULL"
VECTOR_EXISTS = "SELECT count(*) FROM pg_extension WHERE extname = 'vector'"


async def test_upgrade_downgrade_upgrade(make_database: MakeDatabase) -> None:
    url = await make_database()
    await asyncio.to_thread(runner.upgrade, url)
    assert await _scalar(url, APP_SCHEMA_EXISTS) == 1
    assert await _scalar(url, TRIGGER_FN_EXISTS) is True
    assert await _scalar(url, VECTOR_EXISTS) == 1

    await asyncio.to_thread(runner.downgrade, url, "base")
    assert await _scalar(url, APP_SCHEMA_EXISTS) == 0
    assert await _scalar(url, VECTOR_EXISTS) == 0

    await asyncio.to_thread(runner.upgrade, url)
    assert await _scalar(url, "SELECT version_num FROM alembic_version") == runner.head_revision()


async def test_concurrent_upgrades_from_several_processes_apply_once(
    make_database: MakeDatabase,
) -> None:
    url = await make_database()
    env = {**os.environ, "DATABASE_URL": url, "ENVIRONMENT": "testing"}
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "keel",
            "migrate",
            "upgrade",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    results = [await process.communicate() for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], results
    assert await _scalar(url, "SELECT count(*) FROM alembic_version") == 1
    assert await _scalar(url, "SELECT version_num FROM alembic_version") == runner.head_revision()


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts=runner.COMPARE_OPTIONS)
    return list(compare_metadata(context, metadata))


# Alembic can't compare expression indexes with an operator class (the trigram
# index); it says so in a warning and skips only that index.
@pytest.mark.filterwarnings("ignore:Expression #1.*gin_trgm_ops:UserWarning")
async def test_models_match_migrations(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()
