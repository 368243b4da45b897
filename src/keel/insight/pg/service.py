"""Database insight: the overview's checks and each report, for the API, dashboard and CLI.

Every function takes a session in a transaction (`TransactionDep`, or one the CLI opens)
and bounds it first: statement and lock timeouts, read-only except the two signals and
the statistics reset.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from keel.config import Settings
from keel.core.errors import Conflict, Forbidden, NotFound, ServiceUnavailable
from keel.core.viewer import Viewer
from keel.insight.pg import checks, indexes, repository, sql, sql_objects
from keel.insight.pg.repository import ServerInfo
from keel.insight.pg.schemas import (
    ActivityReport,
    HistoryPoint,
    Overview,
    QueriesReport,
    QueryHistory,
    QueryOrder,
    SignalAction,
    SignalResult,
    worst,
)


def audit(event: str, **fields: Any) -> None:
    """One audit line per admin action. A fresh logger each time (actions are rare): it
    follows the logging configuration of the moment, never a cached one."""
    structlog.get_logger("keel.insight.audit").warning(event, **fields)


MIN_VERSION_NUM = 170000  # pg_stat_checkpointer, pg_stat_io's layout, last_idx_scan
PG18 = 180000
INSUFFICIENT_PRIVILEGE = "42501"
TERMINATE_WAIT_MS = 2000
MAINTENANCE_TABLES = 1000
LIST_LIMIT = 50
MISSING_INDEX_MIN_ROWS = 10_000


class InsightUnsupported(ServiceUnavailable):
    slug, title = "insight-unsupported-server", "Unsupported Server For Insight"


class InsightPrivilege(Forbidden):
    slug, title = "insight-privilege", "Database Role Lacks A Privilege"


class BackendNotFound(NotFound):
    slug = "backend-not-found"


class OwnBackend(Conflict):
    slug, title = "own-backend", "Refusing To Signal Own Backend"


@dataclass(frozen=True, slots=True)
class InsightConfig:
    timeout_ms: int
    thresholds: checks.Thresholds

    @classmethod
    def from_settings(cls, settings: Settings) -> InsightConfig:
        return cls(
            timeout_ms=settings.insight_statement_timeout_ms,
            thresholds=checks.Thresholds(
                long_query_seconds=settings.insight_long_query_seconds,
                idle_in_transaction_seconds=settings.insight_idle_in_transaction_seconds,
                unused_index_min_bytes=settings.insight_unused_index_min_bytes,
                slot_wal_warning_bytes=settings.insight_slot_wal_warning_bytes,
            ),
        )


def require_supported(info: ServerInfo) -> None:
    """A deliberate check: below 17 the views insight reads don't exist or differ."""
    if info.version_num < MIN_VERSION_NUM:
        raise InsightUnsupported(
            f"PostgreSQL {info.version} is older than 17: insight reads pg_stat_checkpointer, "
            "pg_stat_io and pg_stat_user_indexes.last_idx_scan, which it lacks."
        )


async def begin(
    session: AsyncSession, config: InsightConfig, *, read_only: bool = True
) -> ServerInfo:
    await repository.guard(session, timeout_ms=config.timeout_ms, read_only=read_only)
    info = await repository.server_info(session)
    require_supported(info)
    return info


async def overview(session: AsyncSession, config: InsightConfig) -> Overview:
    info = await begin(session, config)
    limits = config.thresholds
    stats = await repository.one(session, sql.CACHE_HIT)
    conns = await repository.one(session, sql.CONNECTIONS)
    longest = await repository.one(session, sql.LONGEST)
    all_indexes = await repository.rows(session, sql_objects.INDEXES)
    tables = await repository.rows(session, sql.MAINTENANCE, limit=MAINTENANCE_TABLES)
    ages = await repository.one(session, sql.DATABASE_AGE)
    sequences = await repository.rows(session, sql.SEQUENCES)
    slots = await repository.rows(session, sql.REPLICATION_SLOTS)
    checkpointer = await repository.one(session, sql.CHECKPOINTER)
    unused = [i for i in indexes.unused(all_indexes) if i["bytes"] >= limits.unused_index_min_bytes]
    found = [
        checks.cache_hit(stats["hit"], stats["read"]),
        checks.connections(conns["used"], conns["available"]),
        checks.long_queries(longest["longest_query_seconds"], limits.long_query_seconds),
        checks.idle_in_transaction(
            longest["longest_idle_in_transaction_seconds"], limits.idle_in_transaction_seconds
        ),
        checks.blocked(longest["blocked"]),
        checks.index_check(
            "invalid_indexes",
            "Invalid indexes",
            indexes.invalid(all_indexes),
            "A CREATE INDEX CONCURRENTLY failed: DROP INDEX CONCURRENTLY it and build it again.",
        ),
        checks.index_check(
            "duplicate_indexes",
            "Duplicate indexes",
            indexes.duplicate(all_indexes),
            "Drop the duplicates (DROP INDEX CONCURRENTLY): each slows every write.",
        ),
        checks.index_check(
            "unused_indexes",
            "Unused indexes",
            unused,
            "Never scanned since the statistics reset: drop them if that spans a full "
            "business cycle.",
        ),
        checks.maintenance(
            "vacuum_overdue",
            "Tables overdue for vacuum",
            [t for t in tables if t["vacuum_overdue"]],
            "Dead rows pile up: VACUUM them, and check autovacuum is on and not blocked.",
        ),
        checks.maintenance(
            "analyze_overdue",
            "Tables overdue for analyze",
            [t for t in tables if t["analyze_overdue"]],
            "The planner's statistics are stale: ANALYZE these tables.",
        ),
        checks.wraparound("transaction_id_age", "Transaction ID age", ages["xid_age"]),
        checks.wraparound("multixact_age", "Multixact ID age", ages["mxid_age"]),
        checks.sequences(sequences),
        checks.replication_slots(slots, limits.slot_wal_warning_bytes),
        checks.checkpoints(checkpointer["timed"], checkpointer["requested"]),
    ]
    return Overview(
        database=info.database,
        server_version=info.version,
        status=worst([c.status for c in found]),
        checks=found,
        generated_at=datetime.now(UTC),
    )


async def queries(
    session: AsyncSession, config: InsightConfig, order: QueryOrder, limit: int
) -> QueriesReport:
    info = await begin(session, config)
    found: list[dict[str, Any]] = []
    if info.has_pg_stat_statements:
        found = await repository.rows(
            session,
            sql.query_stats(order.value),
            limit=limit,
            query_chars=repository.QUERY_CHARS,
        )
    summary = await repository.snapshot_summary(session)
    return QueriesReport(
        available=info.has_pg_stat_statements,
        order=order,
        queries=found,
        snapshots=summary["snapshots"],
        latest_snapshot=summary["latest"],
    )


async def query_history(
    session: AsyncSession, config: InsightConfig, queryid: int, days: int
) -> QueryHistory:
    await begin(session, config)
    since = datetime.now(UTC) - timedelta(days=days)
    snapshots = await repository.query_history(session, queryid, since)
    points, previous = [], None
    for snap in snapshots:
        calls = snap["calls"] - previous["calls"] if previous else 0
        total = snap["total_ms"] - previous["total_ms"] if previous else 0.0
        if calls < 0:  # the statistics were reset in between: count from zero
            calls, total = snap["calls"], snap["total_ms"]
        points.append(
            HistoryPoint(
                captured_at=snap["captured_at"],
                calls=calls,
                mean_ms=round(total / calls, 3) if calls else None,
                total_calls=snap["calls"],
            )
        )
        previous = snap
    return QueryHistory(
        queryid=str(queryid), query=snapshots[-1]["query"] if snapshots else None, points=points
    )


async def reset_query_stats(session: AsyncSession, config: InsightConfig, admin: Viewer) -> None:
    info = await begin(session, config, read_only=False)
    if not info.has_pg_stat_statements:
        raise NotFound("pg_stat_statements is not installed in this database.")
    try:
        await repository.reset_query_stats(session)
    except DBAPIError as exc:
        raise _privilege_error(exc, "EXECUTE on pg_stat_statements_reset") from exc
    audit("insight.query_stats_reset", admin_id=str(admin.user_id), database=info.database)


def _privilege_error(exc: DBAPIError, needed: str) -> Exception:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code == INSUFFICIENT_PRIVILEGE:
        return InsightPrivilege(f"Keel's database role needs {needed} (see the README).")
    return exc


def blocking_tree(backends: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Roots are backends that block others without being blocked; children nest below."""
    by_pid = {b["pid"]: b for b in backends}
    children: dict[int, list[int]] = {}
    blocked = set()
    for b in backends:
        for blocker in b["blocked_by"]:
            children.setdefault(blocker, []).append(b["pid"])
            blocked.add(b["pid"])

    def node(pid: int, seen: frozenset[int]) -> dict[str, Any]:
        b = by_pid.get(pid, {"pid": pid})
        kids = [node(k, seen | {pid}) for k in children.get(pid, []) if k not in seen]
        return {
            "pid": pid,
            "state": b.get("state"),
            "wait_event": b.get("wait_event"),
            "query_seconds": b.get("query_seconds"),
            "query": b.get("query"),
            "blocked": kids,
        }

    roots = [pid for pid in children if pid not in blocked] or list(children)[:1]
    return [node(pid, frozenset()) for pid in sorted(roots)]


async def activity(session: AsyncSession, config: InsightConfig) -> ActivityReport:
    info = await begin(session, config)
    backends = await repository.rows(session, sql.ACTIVITY, query_chars=repository.QUERY_CHARS)
    for b in backends:
        b["blocked_by"] = list(b["blocked_by"] or [])
    return ActivityReport(
        own_pid=info.own_pid,
        connections_by_state=await repository.rows(session, sql.CONNECTIONS_BY_STATE),
        backends=backends,
        blocking_tree=blocking_tree(backends),
    )


async def signal(
    session: AsyncSession, config: InsightConfig, pid: int, action: SignalAction, admin: Viewer
) -> SignalResult:
    """Cancel or terminate a client backend of Keel's own database, never the caller's own."""
    info = await begin(session, config, read_only=False)
    if pid == info.own_pid:
        raise OwnBackend("That is the backend serving this request.")
    if not await repository.is_signallable(session, pid):
        raise BackendNotFound(f"No client backend {pid} in database {info.database}.")
    try:
        if action is SignalAction.cancel:
            done = await repository.cancel_backend(session, pid)
        else:
            done = await repository.terminate_backend(session, pid, TERMINATE_WAIT_MS)
    except DBAPIError as exc:
        raise _privilege_error(exc, "the pg_signal_backend role") from exc
    audit(
        f"insight.backend_{action.value}",
        admin_id=str(admin.user_id),
        pid=pid,
        database=info.database,
        signalled=done,
    )
    return SignalResult(pid=pid, action=action, signalled=done)
