"""Replication state and logical replication, for `keel db replication|publication|subscription`,
the admin API (`GET /api/v1/admin/replication`) and the database-insight console.

`replication_status()` is the one reusable read: physical and logical slots (active,
`wal_status`, retained WAL, `inactive_since`), standbys' write/flush/replay lag in bytes
and time, subscriptions with their `pg_stat_subscription_stats` errors, and `problems`, a
list of plain sentences for whatever needs a human.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from keel.replication import repository
from keel.replication.repository import InvalidName

__all__ = [
    "InvalidName",
    "create_publication",
    "create_subscription",
    "drop_publication",
    "drop_subscription",
    "list_publications",
    "list_subscriptions",
    "replication_status",
]

RETAINED_WARN_BYTES = 1024**3  # an inactive slot holding 1 GiB of WAL needs attention
LAG_WARN_MS = 10_000.0


async def replication_status(conn: asyncpg.Connection) -> dict[str, Any]:
    """Everything about replication this server can tell, plus the problems found in it."""
    server = dict(await conn.fetchrow(repository.RECOVERY) or {})
    slots = await repository.fetch(conn, repository.SLOTS)
    standbys = await repository.fetch(conn, repository.STANDBYS)
    subscriptions = await repository.fetch(conn, repository.SUBSCRIPTIONS)
    return {
        "server": server,
        "slots": slots,
        "standbys": standbys,
        "subscriptions": subscriptions,
        "problems": problems(slots, standbys, subscriptions),
    }


def problems(
    slots: list[dict[str, Any]],
    standbys: list[dict[str, Any]],
    subscriptions: list[dict[str, Any]],
) -> list[str]:
    found = []
    for slot in slots:
        name, retained = slot["slot_name"], slot["retained_bytes"] or 0
        if slot["wal_status"] in ("lost", "unreserved") or slot["invalidation_reason"]:
            reason = slot["invalidation_reason"] or slot["wal_status"]
            found.append(
                f"slot {name} is invalidated or about to be ({reason}): rebuild its consumer"
            )
        elif not slot["active"]:
            since = slot["inactive_since"]
            size = f"{retained / 1024**2:.1f} MiB"
            found.append(
                f"slot {name} is inactive since {since} and retains {size} of WAL"
                + (
                    " (over 1 GiB: drop it if its consumer is gone)"
                    if retained > RETAINED_WARN_BYTES
                    else ""
                )
            )
    for standby in standbys:
        lag = standby["replay_lag_ms"]
        if lag is not None and lag > LAG_WARN_MS:
            found.append(f"standby {standby['application_name']} replays {lag / 1000:.1f}s behind")
    for sub in subscriptions:
        stats = sub["stats"] if isinstance(sub["stats"], dict) else {}
        errors = int(stats.get("apply_error_count") or 0) + int(stats.get("sync_error_count") or 0)
        if errors:
            conflicts = {k: v for k, v in stats.items() if k.startswith("confl_") and v}
            found.append(
                f"subscription {sub['subname']} has {errors} apply/sync error(s)"
                + (f", conflicts {conflicts}" if conflicts else "")
                + ": see the subscriber's log"
            )
        if not sub["enabled"]:
            found.append(f"subscription {sub['subname']} is disabled")
        elif sub["pid"] is None:
            found.append(f"subscription {sub['subname']} has no running apply worker")
    return found


async def create_publication(
    conn: asyncpg.Connection,
    name: str,
    *,
    schemas: list[str],
    tables: list[str],
    columns: list[str] | None = None,
    row_filter: str | None = None,
) -> None:
    """A publication of whole schemas (`FOR TABLES IN SCHEMA`) and/or tables, a column list
    and row filter allowed with exactly one table."""
    if not schemas and not tables:
        raise InvalidName("publish at least one schema or table")
    if (columns or row_filter) and len(tables) != 1:
        raise InvalidName("a column list or row filter needs exactly one table")
    sql = repository.create_publication_sql(
        name, schemas=schemas, tables=tables, columns=columns, row_filter=row_filter
    )
    await repository.run_ddl(conn, sql)


async def drop_publication(conn: asyncpg.Connection, name: str) -> None:
    await repository.run_ddl(conn, repository.drop_sql("PUBLICATION", name))


async def list_publications(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return await repository.fetch(conn, repository.PUBLICATIONS)


async def create_subscription(
    conn: asyncpg.Connection,
    name: str,
    *,
    conninfo: str,
    publications: list[str],
    failover: bool = True,
    copy_data: bool = True,
) -> None:
    """A subscription to publications on another server. `failover`: its slot on the
    publisher is synchronised to the publisher's standbys (`sync_replication_slots`)."""
    sql = repository.create_subscription_sql(
        name, conninfo=conninfo, publications=publications, failover=failover, copy_data=copy_data
    )
    await repository.run_ddl(conn, sql)


async def drop_subscription(conn: asyncpg.Connection, name: str) -> None:
    await repository.run_ddl(conn, repository.drop_sql("SUBSCRIPTION", name))


async def list_subscriptions(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return await repository.fetch(conn, repository.SUBSCRIPTIONS)
