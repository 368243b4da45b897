"""Insight needs no superuser: a role with pg_monitor and pg_signal_backend reads every
report and terminates another (non-superuser) role's backend."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from keel.insight.pg import advice, reports, service
from keel.insight.pg.schemas import QueryOrder, SignalAction
from keel.insight.pg.service import InsightConfig
from tests.conftest import asyncpg_dsn
from tests.users.factory import as_viewer, make_user


@pytest.fixture
async def roles(db_session: AsyncSession, test_database_url: str) -> AsyncIterator[dict[str, str]]:
    """URLs of a monitoring role (pg_monitor, pg_signal_backend, the snapshot tables) and
    of a plain role to be signalled. Roles are cluster-wide: unique names."""
    suffix = uuid.uuid4().hex[:8]
    monitor, plain = f"insight_{suffix}", f"plain_{suffix}"
    for statement in (
        f"CREATE ROLE {monitor} LOGIN",
        f"CREATE ROLE {plain} LOGIN",
        f"GRANT pg_monitor, pg_signal_backend TO {monitor}",
        f"GRANT USAGE ON SCHEMA app TO {monitor}",
        f"GRANT SELECT ON app.insight_query_snapshots, app.insight_space_snapshots TO {monitor}",
    ):
        await db_session.execute(text(statement))
    url = make_url(test_database_url)
    yield {
        name: url.set(username=role).render_as_string(hide_password=False)
        for name, role in (("monitor", monitor), ("plain", plain))
    }
    for role in (monitor, plain):
        await db_session.execute(text(f"DROP OWNED BY {role}"))
        await db_session.execute(text(f"DROP ROLE {role}"))


async def test_reports_and_signals_as_a_monitoring_role(
    app: FastAPI, db_session: AsyncSession, roles: dict[str, str]
) -> None:
    config = InsightConfig.from_settings(app.state.settings)
    admin = as_viewer(await make_user(app, db_session, admin=True))
    engine = create_async_engine(roles["monitor"], poolclass=NullPool)
    victim = await asyncpg.connect(asyncpg_dsn(roles["plain"]))
    try:
        async with engine.connect() as conn:
            superuser = await conn.scalar(
                text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            )
            assert superuser is False
        for report in (
            service.overview,
            service.activity,
            reports.space,
            reports.index_report,
            reports.io,
            reports.maintenance,
            reports.replication,
        ):
            async with AsyncSession(engine) as session, session.begin():
                await report(session, config)
        async with AsyncSession(engine) as session, session.begin():
            await advice.settings_report(session, config, app.state.settings)
        async with AsyncSession(engine) as session, session.begin():
            found = await service.queries(session, config, QueryOrder.calls, 10)
        assert found.available
        assert found.queries  # pg_read_all_stats (in pg_monitor): every role's statements
        # The reset is superuser-only until granted: a clear 403, not a 500.
        async with AsyncSession(engine) as session, session.begin():
            with pytest.raises(service.InsightPrivilege, match="pg_stat_statements_reset"):
                await service.reset_query_stats(session, config, admin)
        pid = await victim.fetchval("SELECT pg_backend_pid()")
        async with AsyncSession(engine) as session, session.begin():
            result = await service.signal(session, config, pid, SignalAction.terminate, admin)
        assert result.signalled
        with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)):
            await victim.fetchval("SELECT 1")
    finally:
        victim.terminate()
        await engine.dispose()
