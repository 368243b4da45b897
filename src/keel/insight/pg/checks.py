"""The overview's checks: each turns measured figures into ok / warning / critical."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keel.insight.pg.schemas import Check, Status

WRAPAROUND = 2**31  # transaction and multixact ids wrap here
MIN_BLOCKS_FOR_HIT_RATIO = 10_000  # too few reads to judge a cache by
MIN_CHECKPOINTS = 10


@dataclass(frozen=True, slots=True)
class Thresholds:
    long_query_seconds: float
    idle_in_transaction_seconds: float
    unused_index_min_bytes: int
    slot_wal_warning_bytes: int


def graded(value: float, warning: float, critical: float, *, low_is_bad: bool = False) -> Status:
    if low_is_bad:
        value, warning, critical = -value, -warning, -critical
    if value >= critical:
        return Status.critical
    if value >= warning:
        return Status.warning
    return Status.ok


def cache_hit(hit: int, read: int) -> Check:
    total = hit + read
    ratio = hit / total if total else 1.0
    judged = total >= MIN_BLOCKS_FOR_HIT_RATIO
    status = graded(ratio, 0.99, 0.95, low_is_bad=True) if judged else Status.ok
    return Check(
        name="cache_hit_ratio",
        title="Cache hit ratio",
        status=status,
        value=round(ratio, 4),
        unit="ratio",
        threshold=f"warning < 0.99, critical < 0.95 (judged after {MIN_BLOCKS_FOR_HIT_RATIO:,} "
        "block reads)",
        advice="Most reads come from shared buffers."
        if status is Status.ok
        else "Reads miss the cache: raise shared_buffers or add RAM, and look for seq scans "
        "on the Indexes page.",
    )


def connections(used: int, available: int) -> Check:
    ratio = used / available if available else 1.0
    status = graded(ratio, 0.7, 0.9)
    return Check(
        name="connections",
        title="Connections",
        status=status,
        value=used,
        unit="connections",
        threshold=f"warning >= 70%, critical >= 90% of {available} available",
        advice="Plenty of connections left."
        if status is Status.ok
        else "Close to max_connections: lower pool sizes or workers, or add PgBouncer.",
    )


def long_queries(seconds: float, limit: float) -> Check:
    status = graded(seconds, limit, limit * 5)
    return Check(
        name="long_running_queries",
        title="Long-running queries",
        status=status,
        value=round(seconds, 1),
        unit="seconds",
        threshold=f"warning >= {limit:g} s, critical >= {limit * 5:g} s",
        advice="No query has run for long."
        if status is Status.ok
        else "Look at the Live page; cancel the query if it is stuck, or add an index.",
    )


def idle_in_transaction(seconds: float, limit: float) -> Check:
    status = graded(seconds, limit, limit * 5)
    return Check(
        name="idle_in_transaction",
        title="Idle in transaction",
        status=status,
        value=round(seconds, 1),
        unit="seconds",
        threshold=f"warning >= {limit:g} s, critical >= {limit * 5:g} s",
        advice="No transaction sits open doing nothing."
        if status is Status.ok
        else "A transaction holds locks and blocks vacuum: terminate it on the Live page and "
        "set idle_in_transaction_session_timeout.",
    )


def blocked(count: int) -> Check:
    status = Status.warning if count else Status.ok
    return Check(
        name="blocked_queries",
        title="Blocked queries",
        status=status,
        value=count,
        unit="backends",
        threshold="warning > 0",
        advice="Nothing waits on a lock."
        if status is Status.ok
        else "See the blocking tree on the Live page; end the root blocker if it is stuck.",
    )


def index_check(name: str, title: str, found: list[dict[str, Any]], advice: str) -> Check:
    status = Status.warning if found else Status.ok
    return Check(
        name=name,
        title=title,
        status=status,
        value=len(found),
        unit="indexes",
        threshold="warning > 0",
        advice="None found." if not found else advice,
        details=found,
    )


def maintenance(name: str, title: str, tables: list[dict[str, Any]], advice: str) -> Check:
    status = Status.warning if tables else Status.ok
    return Check(
        name=name,
        title=title,
        status=status,
        value=len(tables),
        unit="tables",
        threshold="warning > 0 tables past autovacuum's trigger",
        advice="Autovacuum is keeping up." if not tables else advice,
        details=[{"table": t["table"], "dead_tuples": t["dead_tuples"]} for t in tables],
    )


def wraparound(name: str, title: str, age: int) -> Check:
    ratio = age / WRAPAROUND
    status = graded(ratio, 0.4, 0.7)
    return Check(
        name=name,
        title=title,
        status=status,
        value=age,
        unit="ids",
        threshold=f"warning >= 40%, critical >= 70% of {WRAPAROUND:,}",
        advice="Far from wraparound."
        if status is Status.ok
        else "Autovacuum is not freezing fast enough: find blockers (old transactions, slots, "
        "prepared transactions) and run VACUUM (FREEZE) on the oldest tables.",
    )


def sequences(rows: list[dict[str, Any]]) -> Check:
    used = []
    for row in rows:
        last, limit = row["last_value"], row["max_value"]
        if last is not None and limit:
            used.append({**row, "used": round(float(last) / float(limit), 4)})
    used.sort(key=lambda r: r["used"], reverse=True)
    top = used[0]["used"] if used else 0.0
    status = graded(top, 0.75, 0.9)
    near = [
        {
            "sequence": r["sequence"],
            "column": r["column"],
            "last_value": int(r["last_value"]),
            "max_value": int(r["max_value"]),
            "used": r["used"],
        }
        for r in used
        if r["used"] >= 0.75  # noqa: PLR2004
    ]
    return Check(
        name="sequences",
        title="Sequences near their maximum",
        status=status,
        value=top,
        unit="ratio",
        threshold="warning >= 75%, critical >= 90% of the sequence's or its column's maximum",
        advice="Every sequence has room."
        if status is Status.ok
        else "Widen the column to bigint (and the sequence with ALTER SEQUENCE ... AS bigint) "
        "before inserts fail.",
        details=near,
    )


def replication_slots(slots: list[dict[str, Any]], warning_bytes: int) -> Check:
    bad = [
        {k: s[k] for k in ("slot_name", "active", "wal_status", "retained_bytes")}
        for s in slots
        if not s["active"]
        or (s["retained_bytes"] or 0) >= warning_bytes
        or s["wal_status"] in ("unreserved", "lost")
    ]
    lost = any(s["wal_status"] in ("unreserved", "lost") for s in bad)
    status = Status.critical if lost else Status.warning if bad else Status.ok
    return Check(
        name="replication_slots",
        title="Replication slots",
        status=status,
        value=len(bad),
        unit="slots",
        threshold=f"warning: inactive or retaining >= {warning_bytes:,} bytes of WAL; "
        "critical: WAL unreserved or lost",
        advice="No slot holds WAL back."
        if status is Status.ok
        else "A slot keeps WAL (and old rows) for a consumer that is gone or behind: "
        "reconnect it or drop it with pg_drop_replication_slot().",
        details=bad,
    )


def checkpoints(timed: int, requested: int) -> Check:
    total = timed + requested
    ratio = requested / total if total else 0.0
    # Tuning advice, never critical: CHECKPOINT, CREATE/DROP DATABASE and base backups
    # count as requested too, so a high ratio is not always WAL pressure.
    status = graded(ratio, 0.2, float("inf")) if total >= MIN_CHECKPOINTS else Status.ok
    return Check(
        name="checkpoints",
        title="Requested vs timed checkpoints",
        status=status,
        value=round(ratio, 4),
        unit="ratio requested",
        threshold=f"warning >= 20% requested (judged after {MIN_CHECKPOINTS} checkpoints)",
        advice="Checkpoints come on schedule."
        if status is Status.ok
        else "WAL fills up before checkpoint_timeout (or CHECKPOINT runs often): raise "
        "max_wal_size.",
    )
