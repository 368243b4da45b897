"""Insight reports beyond the overview: space, indexes, I/O, maintenance, replication."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from keel.insight.pg import indexes, repository, sql, sql_objects
from keel.insight.pg.schemas import (
    IndexReport,
    IoReport,
    MaintenanceReport,
    ReplicationReport,
    SpaceReport,
)
from keel.insight.pg.service import (
    LIST_LIMIT,
    MISSING_INDEX_MIN_ROWS,
    PG18,
    InsightConfig,
    begin,
)

GROWTH_DAYS = 30
GROWTH_TABLES = 10
BLOAT_TABLES = 20


def _growth(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault(row["relation"], []).append(
            {"captured_at": row["captured_at"], "bytes": row["total_bytes"]}
        )
    return [{"relation": name, "points": points} for name, points in series.items()]


async def space(session: AsyncSession, config: InsightConfig) -> SpaceReport:
    info = await begin(session, config)
    ages = await repository.one(session, sql.DATABASE_AGE)
    if info.has_pgstattuple:
        method = "pgstattuple_approx"
        table_bloat = await repository.rows(
            session, sql_objects.TABLE_BLOAT_PGSTATTUPLE, limit=BLOAT_TABLES
        )
    else:
        method = "estimate"
        table_bloat = await repository.rows(
            session, sql_objects.TABLE_BLOAT_ESTIMATE, limit=BLOAT_TABLES
        )
    since = datetime.now(UTC) - timedelta(days=GROWTH_DAYS)
    return SpaceReport(
        database_bytes=ages["database_bytes"],
        tables=await repository.rows(session, sql_objects.TABLE_SPACE, limit=LIST_LIMIT),
        indexes=await repository.rows(session, sql_objects.INDEX_SPACE, limit=LIST_LIMIT),
        bloat_method=method,
        table_bloat=table_bloat,
        index_bloat=await repository.rows(
            session, sql_objects.INDEX_BLOAT_ESTIMATE, limit=BLOAT_TABLES
        ),
        growth=_growth(await repository.space_history(session, since, GROWTH_TABLES)),
    )


async def index_report(session: AsyncSession, config: InsightConfig) -> IndexReport:
    await begin(session, config)
    all_indexes = await repository.rows(session, sql_objects.INDEXES)
    reset = await repository.one(session, sql_objects.STATS_RESET)
    return IndexReport(
        stats_since=reset["stats_reset"],
        invalid=indexes.invalid(all_indexes),
        duplicate=indexes.duplicate(all_indexes),
        redundant=indexes.redundant(all_indexes),
        unused=indexes.unused(all_indexes),
        missing_candidates=await repository.rows(
            session, sql_objects.SEQ_SCAN_HEAVY, min_rows=MISSING_INDEX_MIN_ROWS, limit=20
        ),
    )


async def io(session: AsyncSession, config: InsightConfig) -> IoReport:
    info = await begin(session, config)
    statement = sql_objects.IO_18 if info.version_num >= PG18 else sql_objects.IO_17
    return IoReport(
        server_version_num=info.version_num, rows=await repository.rows(session, statement)
    )


async def maintenance(session: AsyncSession, config: InsightConfig) -> MaintenanceReport:
    await begin(session, config)
    ages = await repository.one(session, sql.DATABASE_AGE)
    return MaintenanceReport(
        xid_age=ages["xid_age"],
        mxid_age=ages["mxid_age"],
        freeze_max_age=ages["freeze_max_age"],
        tables=await repository.rows(session, sql.MAINTENANCE, limit=LIST_LIMIT),
        running_vacuums=await repository.rows(session, sql.VACUUM_PROGRESS),
    )


async def replication(session: AsyncSession, config: InsightConfig) -> ReplicationReport:
    info = await begin(session, config)
    replicas = [] if info.in_recovery else await repository.rows(session, sql.REPLICATION_LAG)
    return ReplicationReport(
        in_recovery=info.in_recovery,
        slots=await repository.rows(session, sql.REPLICATION_SLOTS),
        replicas=replicas,
    )
