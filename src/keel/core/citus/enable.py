"""`keel db citus enable`: distribute Keel's tables on a Citus coordinator, idempotently.

Each step runs in its own transaction and first checks whether it is done already, so
a second run (or a run after a failure, or after adding a node) only does what is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from keel.core.citus import layout
from keel.core.errors import ServiceUnavailable

FK = layout.EMBEDDINGS_FK


class CitusUnavailable(ServiceUnavailable):
    slug, title = "citus-unavailable", "Citus Is Not Available"


NOT_INSTALLED = (
    "the citus extension is not installed in this database: Keel's Citus mode needs a "
    "Citus coordinator (shared_preload_libraries = 'citus', then CREATE EXTENSION citus; "
    "see the README, Tenancy and scale-out)"
)
NO_COORDINATOR = (
    "the coordinator is not in Citus's node list: run "
    "SELECT citus_set_coordinator_host('<host>', <port>) first (reference tables need a "
    "placement on the coordinator, where Keel's triggers on them run)"
)


@dataclass
class EnableReport:
    """What `enable` did (`done`) and what it found done already (`skipped`)."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


async def _read(conn: AsyncConnection, sql: str, **params: object) -> list[Any]:
    """Rows of one query, in a transaction of its own (ended at once)."""
    rows = (await conn.execute(text(sql), params)).all()
    await conn.rollback()
    return list(rows)


async def ensure_citus(conn: AsyncConnection) -> str:
    """The Citus version of this database, or CitusUnavailable with what to do."""
    if not await _read(conn, "SELECT 1 FROM pg_extension WHERE extname = 'citus'"):
        raise CitusUnavailable(NOT_INSTALLED)
    return str((await _read(conn, "SELECT citus_version()"))[0][0])


async def _types(conn: AsyncConnection) -> dict[str, str]:
    """Citus tables: name -> distributed, reference, local (kept) or auto (converted)."""
    rows = await _read(
        conn,
        "SELECT t.table_name::text, CASE WHEN p.autoconverted THEN 'auto' "
        "ELSE t.citus_table_type END "
        "FROM citus_tables AS t JOIN pg_dist_partition AS p ON p.logicalrelid = t.table_name",
    )
    return {name: kind for name, kind in rows}


async def _step(conn: AsyncConnection, *statements: str) -> None:
    """Run statements in one transaction; triggers may exist on the tables Citus takes."""
    async with conn.begin():
        await conn.execute(text("SET LOCAL citus.enable_unsafe_triggers = on"))
        await conn.execute(text("SET LOCAL statement_timeout = 0"))
        for statement in statements:
            await conn.execute(text(statement))


async def _reference_tables(conn: AsyncConnection, report: EnableReport) -> None:
    types = await _types(conn)
    for table in layout.REFERENCE_TABLES:
        if types.get(table) == "reference":
            report.skipped.append(f"{table}: reference table")
            continue
        await _step(conn, f"SELECT create_reference_table('{table}')")
        report.done.append(f"{table}: reference table")


def _distribute(table: str) -> str:
    colocate = (
        "" if table == layout.COLOCATE_WITH else f", colocate_with => '{layout.COLOCATE_WITH}'"
    )
    return f"SELECT create_distributed_table('{table}', '{layout.DISTRIBUTION_COLUMN}'{colocate})"


async def _distributed_tables(conn: AsyncConnection, report: EnableReport) -> None:
    types = await _types(conn)
    how = f"distributed by {layout.DISTRIBUTION_COLUMN}"
    pending = []
    for table in layout.DISTRIBUTED_TABLES:
        if types.get(table) == "distributed":
            report.skipped.append(f"{table}: {how}")
        elif await _read(conn, "SELECT 1 WHERE to_regclass(:t) IS NOT NULL", t=table):
            pending.append(table)
    pair = [t for t in pending if t in ("app.posts", "app.post_embeddings")]
    if pair:  # in one transaction: the key between the two goes and comes back
        has_fk = await _read(conn, "SELECT 1 FROM pg_constraint WHERE conname = :n", n=FK)
        drop = [f"ALTER TABLE app.post_embeddings DROP CONSTRAINT {FK}"] if has_fk else []
        await _step(conn, *drop, *(_distribute(t) for t in pair), layout.EMBEDDINGS_FK_SQL)
    for table in pending:
        if table not in pair:
            await _step(conn, _distribute(table))
        report.done.append(f"{table}: {how}")


async def _queue(conn: AsyncConnection, report: EnableReport) -> None:
    where = f"{layout.QUEUE}: local table on the coordinator"
    if (await _types(conn)).get(layout.QUEUE) == "local":
        report.skipped.append(where)
        return
    # Often converted already, automatically through its foreign key: this keeps it so.
    await _step(conn, f"SELECT citus_add_local_table_to_metadata('{layout.QUEUE}')")
    report.done.append(where)


async def _triggers(conn: AsyncConnection, report: EnableReport) -> None:
    await _step(conn, layout.NESTED_EXECUTION)
    keep = ", ".join(f"'{name}'" for name in layout.PLACEMENT_LOCAL_FUNCTIONS)
    placements = await _read(
        conn,
        "SELECT logicalrelid::regclass::text, shard_name(logicalrelid, shardid) "
        "FROM pg_dist_shard WHERE logicalrelid::regclass::text = ANY (:tables)",
        tables=list(layout.REFERENCE_TABLES),
    )
    for table, shard in placements:
        command = layout.DISABLE_ON_WORKER.format(shard=shard, keep=keep)
        results = await _read(
            conn,
            "SELECT nodename, nodeport, success, result FROM run_command_on_workers(:c)",
            c=command,
        )
        failed = [f"{host}:{port}: {result}" for host, port, ok, result in results if not ok]
        if failed:
            raise CitusUnavailable(f"could not set the triggers of {table}: {'; '.join(failed)}")
    report.done.append(
        "triggers: set-based trigger functions; reference-table triggers run on the "
        "coordinator's placement only; nested distributed execution on for this role"
    )


async def enable(conn: AsyncConnection) -> EnableReport:
    """Make the shared tables reference tables, distribute the scoped ones, keep the queue.

    `conn` is a connection to the coordinator, in autocommit or not: every step commits.
    """
    await ensure_citus(conn)
    if not await _read(conn, "SELECT 1 FROM pg_dist_node WHERE groupid = 0"):
        raise CitusUnavailable(NO_COORDINATOR)
    report = EnableReport()
    await _reference_tables(conn, report)
    await _distributed_tables(conn, report)
    await _queue(conn, report)
    await _triggers(conn, report)
    return report
