"""The engine, the per-request session and the server checks, on real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.pool import AsyncAdaptedQueuePool
from structlog.testing import capture_logs

from keel.app import create_app
from keel.config import Settings
from keel.core.db import Database, SessionDep, create_database
from keel.core.server_checks import (
    DatabaseUnsupported,
    missing_extensions_message,
    verify_server,
)
from tests.conftest import make_settings

# The machine's system PostgreSQL 15: too old for Keel, handy to prove the refusal.
SYSTEM_POSTGRES_15 = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
async def database(settings: Settings, database_url: str) -> AsyncIterator[Database]:
    db = create_database(settings, database_url)
    yield db
    await db.dispose()


async def test_accepts_postgres_17_or_newer(database: Database) -> None:
    version = await verify_server(database.engine)
    assert int(version.split(".")[0]) >= 17


async def test_refuses_postgres_15_naming_both_versions(settings: Settings) -> None:
    old = create_database(settings, SYSTEM_POSTGRES_15)
    try:
        with pytest.raises(DatabaseUnsupported) as refused:
            await verify_server(old.engine)
    finally:
        await old.dispose()
    message = str(refused.value)
    assert "PostgreSQL 15." in message
    assert "needs PostgreSQL 17 or newer" in message
    assert "127.0.0.1:5432/postgres" in message


async def test_refuses_server_lacking_a_required_extension(database: Database) -> None:
    with pytest.raises(DatabaseUnsupported, match="no_such_extension"):
        await verify_server(database.engine, required=("vector", "no_such_extension"))


def test_missing_vector_message_says_how_to_install() -> None:
    message = missing_extensions_message(["vector"], "17.6", 170006, "db.example:5432/app")
    assert "pgvector" in message
    assert "apt install postgresql-17-pgvector" in message


async def test_pool_settings_are_explicit(database: Database, settings: Settings) -> None:
    pool = database.engine.pool
    assert isinstance(pool, AsyncAdaptedQueuePool)
    assert pool.size() == settings.db_pool_size
    assert pool._max_overflow == 0
    assert pool._pre_ping is False  # dead connections are found on use; reads retry once
    assert pool._recycle == settings.db_pool_recycle
    async with database.engine.connect() as conn:
        assert await conn.scalar(text("SHOW application_name")) == "keel"
        assert await conn.scalar(text("SHOW jit")) == "off"
        assert await conn.scalar(text("SHOW statement_timeout")) == "30s"


async def test_pool_status_counts_checked_out_connections(database: Database) -> None:
    async with database.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        busy = database.pool_status()
    idle = database.pool_status()
    assert busy.checked_out == 1
    assert idle.checked_out == 0
    assert idle.size == busy.size


@pytest.fixture
async def committing_app(
    test_database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    """An app with the real session dependency, on a scratch table.

    The table's unique constraint is deferred: a duplicate passes the INSERT and
    fails at COMMIT, which is what the failed-commit test is about.
    """
    application = create_app(make_settings(test_database_url, tmp_path))

    @application.post("/notes/{note}")
    async def add_note(note: str, session: SessionDep, fail: bool = False) -> dict[str, str]:
        await session.execute(text("INSERT INTO session_notes VALUES (:n)"), {"n": note})
        if fail:
            raise RuntimeError("after the write")
        return {"note": note}

    async with application.router.lifespan_context(application):
        async with application.state.db.engine.begin() as conn:
            await conn.execute(
                text(
                    "CREATE TABLE session_notes (note text,"
                    " CONSTRAINT session_notes_once UNIQUE (note) DEFERRABLE INITIALLY DEFERRED)"
                )
            )
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://t") as http:
            yield application, http
        async with application.state.db.engine.begin() as conn:
            await conn.execute(text("DROP TABLE session_notes"))


async def _notes(application: FastAPI) -> list[str]:
    async with application.state.db.engine.connect() as conn:
        return list((await conn.scalars(text("SELECT note FROM session_notes"))).all())


async def test_session_commits_on_success(committing_app: tuple[FastAPI, AsyncClient]) -> None:
    application, http = committing_app
    response = await http.post("/notes/kept")
    assert response.status_code == 200
    assert await _notes(application) == ["kept"]


async def test_session_rolls_back_on_error(committing_app: tuple[FastAPI, AsyncClient]) -> None:
    application, http = committing_app
    response = await http.post("/notes/lost", params={"fail": "true"})
    assert response.status_code == 500
    assert await _notes(application) == []


async def test_failed_commit_is_an_error_response_not_a_lost_write(
    committing_app: tuple[FastAPI, AsyncClient],
) -> None:
    application, http = committing_app
    assert (await http.post("/notes/same")).status_code == 200
    with capture_logs() as logs:
        duplicate = await http.post("/notes/same")  # the INSERT passes; COMMIT refuses it
    assert duplicate.status_code == 409
    assert duplicate.headers["content-type"] == "application/problem+json"
    assert await _notes(application) == ["same"]
    assert not [entry for entry in logs if entry["event"] == "unhandled_error"]
