"""Runs insight's SQL: read-only transactions with a short timeout, signals, snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import TextClause, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from keel.insight.pg import sql

QUERY_CHARS = 2000  # query text kept per statement (API, snapshots)
SNAPSHOT_TOP_QUERIES = 500
SNAPSHOT_TOP_TABLES = 200


@dataclass(frozen=True, slots=True)
class ServerInfo:
    version_num: int
    version: str
    database: str
    in_recovery: bool
    own_pid: int
    has_pg_stat_statements: bool
    has_pgstattuple: bool


async def guard(session: AsyncSession, *, timeout_ms: int, read_only: bool = True) -> None:
    """Bound this transaction: statement and lock timeouts, read-only unless signalling.

    `set_config(..., true)` is SET LOCAL with bound values: it ends with the transaction,
    so a pooled connection never carries it further.
    """
    settings = [
        func.set_config("statement_timeout", str(timeout_ms), True),
        func.set_config("lock_timeout", str(timeout_ms), True),
    ]
    if read_only:
        settings.append(func.set_config("transaction_read_only", "on", True))
    await session.execute(select(*settings))


async def rows(session: AsyncSession, statement: TextClause, **params: Any) -> list[dict[str, Any]]:
    result = await session.execute(statement, params)
    return [dict(row) for row in result.mappings()]


async def one(session: AsyncSession, statement: TextClause, **params: Any) -> dict[str, Any]:
    result = await session.execute(statement, params)
    return dict(result.mappings().one())


async def server_info(session: AsyncSession) -> ServerInfo:
    return ServerInfo(**await one(session, sql.SERVER))


async def is_signallable(session: AsyncSession, pid: int) -> bool:
    return (await session.execute(sql.SIGNALLABLE, {"pid": pid})).first() is not None


async def cancel_backend(session: AsyncSession, pid: int) -> bool:
    return bool((await session.execute(sql.CANCEL, {"pid": pid})).scalar_one())


async def terminate_backend(session: AsyncSession, pid: int, wait_ms: int) -> bool:
    result = await session.execute(sql.TERMINATE, {"pid": pid, "wait_ms": wait_ms})
    return bool(result.scalar_one())


async def reset_query_stats(session: AsyncSession) -> None:
    await session.execute(sql.RESET_QUERY_STATS)


_SNAPSHOT_QUERIES = text(
    """
    INSERT INTO app.insight_query_snapshots (captured_at, queryid, calls, total_ms, rows, query)
    SELECT CAST(:at AS timestamptz), queryid, sum(calls), sum(total_exec_time), sum(rows),
           min(left(query, :chars))
    FROM pg_stat_statements(true)
    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND toplevel AND queryid IS NOT NULL
    GROUP BY queryid
    ORDER BY sum(total_exec_time) DESC
    LIMIT :top
    """
)
_SNAPSHOT_SPACE = text(
    """
    INSERT INTO app.insight_space_snapshots (captured_at, relation, total_bytes)
    SELECT CAST(:at AS timestamptz), '', pg_database_size(current_database())
    UNION ALL
    (SELECT CAST(:at AS timestamptz), n.nspname || '.' || c.relname, pg_total_relation_size(c.oid)
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'm', 'p')
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
     ORDER BY 3 DESC LIMIT :top)
    """
)


async def snapshot(session: AsyncSession, at: datetime, *, with_queries: bool) -> None:
    """Store this instant's query counters (if pg_stat_statements is there) and sizes."""
    if with_queries:
        await session.execute(
            _SNAPSHOT_QUERIES, {"at": at, "chars": QUERY_CHARS, "top": SNAPSHOT_TOP_QUERIES}
        )
    await session.execute(_SNAPSHOT_SPACE, {"at": at, "top": SNAPSHOT_TOP_TABLES})


async def purge_snapshots(session: AsyncSession, before: datetime) -> None:
    for table in ("insight_query_snapshots", "insight_space_snapshots"):
        await session.execute(
            text(f"DELETE FROM app.{table} WHERE captured_at < :before"),  # noqa: S608 - constant
            {"before": before},
        )


_QUERY_HISTORY = text(
    """
    SELECT captured_at, calls, total_ms, rows, query
    FROM app.insight_query_snapshots
    WHERE queryid = :queryid AND captured_at >= :since
    ORDER BY captured_at
    """
)
_SPACE_HISTORY = text(
    """
    SELECT captured_at, relation, total_bytes
    FROM app.insight_space_snapshots
    WHERE captured_at >= :since AND (relation = '' OR relation IN (
        SELECT relation FROM app.insight_space_snapshots
        WHERE captured_at = (SELECT max(captured_at) FROM app.insight_space_snapshots)
          AND relation <> '' ORDER BY total_bytes DESC LIMIT :tables))
    ORDER BY relation, captured_at
    """
)
_SNAPSHOT_COUNT = text(
    "SELECT count(DISTINCT captured_at)::int AS snapshots, max(captured_at) AS latest "
    "FROM app.insight_query_snapshots"
)


async def query_history(
    session: AsyncSession, queryid: int, since: datetime
) -> list[dict[str, Any]]:
    return await rows(session, _QUERY_HISTORY, queryid=queryid, since=since)


async def space_history(
    session: AsyncSession, since: datetime, tables: int
) -> list[dict[str, Any]]:
    return await rows(session, _SPACE_HISTORY, since=since, tables=tables)


async def snapshot_summary(session: AsyncSession) -> dict[str, Any]:
    return await one(session, _SNAPSHOT_COUNT)
