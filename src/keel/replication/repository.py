"""Replication SQL: monitoring views, publications and subscriptions.

Names (publications, subscriptions, schemas, tables, columns) pass `identifier()` and are
double-quoted; they are never pasted in raw. DDL runs as one prepared statement (asyncpg's
extended protocol), so a row filter can't smuggle in a second statement.
"""

from __future__ import annotations

import json
import re
from typing import Any

import asyncpg

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class InvalidName(ValueError):
    """A name that isn't a plain PostgreSQL identifier."""


def identifier(name: str) -> str:
    """`name` double-quoted, if it is a plain identifier (letters, digits, _; <= 63)."""
    if not _IDENTIFIER.fullmatch(name):
        raise InvalidName(
            f"{name!r} is not a valid name: use letters, digits and _, starting with a letter"
        )
    return f'"{name}"'


def qualified(name: str, default_schema: str = "app") -> str:
    schema, _, table = name.rpartition(".")
    return f"{identifier(schema or default_schema)}.{identifier(table)}"


def literal(text: str) -> str:
    """A standard SQL string literal (standard_conforming_strings is on since 9.1)."""
    return "'" + text.replace("'", "''") + "'"


# --- monitoring --------------------------------------------------------------------
# Slots and standbys are measured against `here`: this server's WAL position (or its
# replay position on a standby).
SLOTS = """WITH here AS (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
    ELSE pg_current_wal_lsn() END AS lsn)
SELECT slot_name, slot_type, plugin, database, active, active_pid, wal_status,
    pg_wal_lsn_diff(here.lsn, restart_lsn)::bigint AS retained_bytes,
    safe_wal_size, inactive_since, failover, synced, conflicting, invalidation_reason,
    restart_lsn::text, confirmed_flush_lsn::text
FROM pg_replication_slots, here ORDER BY slot_name"""

STANDBYS = """WITH here AS (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
    ELSE pg_current_wal_lsn() END AS lsn)
SELECT application_name, client_addr::text, state, sync_state,
    sent_lsn::text, replay_lsn::text,
    pg_wal_lsn_diff(here.lsn, write_lsn)::bigint AS write_lag_bytes,
    pg_wal_lsn_diff(here.lsn, flush_lsn)::bigint AS flush_lag_bytes,
    pg_wal_lsn_diff(here.lsn, replay_lsn)::bigint AS replay_lag_bytes,
    (extract(epoch FROM write_lag) * 1000)::float8 AS write_lag_ms,
    (extract(epoch FROM flush_lag) * 1000)::float8 AS flush_lag_ms,
    (extract(epoch FROM replay_lag) * 1000)::float8 AS replay_lag_ms,
    reply_time
FROM pg_stat_replication, here ORDER BY application_name"""

# to_jsonb(stats): PostgreSQL 18 adds per-kind conflict counters (confl_*); 17 has none.
SUBSCRIPTIONS = """SELECT s.subname, s.subenabled AS enabled, s.subfailover AS failover,
    s.subpublications AS publications, st.pid, st.received_lsn::text,
    st.latest_end_lsn::text, st.last_msg_receipt_time, st.latest_end_time,
    coalesce(to_jsonb(ss) - 'subid' - 'subname', '{}'::jsonb) AS stats
FROM pg_subscription AS s
LEFT JOIN pg_stat_subscription AS st ON st.subid = s.oid AND st.relid IS NULL
LEFT JOIN pg_stat_subscription_stats AS ss ON ss.subid = s.oid
WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY s.subname"""

RECOVERY = """SELECT pg_is_in_recovery() AS in_recovery,
    (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
          ELSE pg_current_wal_lsn() END)::text AS lsn,
    CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END AS replay_paused,
    (extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::float8
        AS since_last_replay_ms"""

PUBLICATIONS = """SELECT p.pubname, p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete,
    coalesce((SELECT array_agg(n.nspname::text ORDER BY n.nspname)
        FROM pg_publication_namespace AS pn JOIN pg_namespace AS n ON n.oid = pn.pnnspid
        WHERE pn.pnpubid = p.oid), '{}') AS schemas,
    coalesce((SELECT jsonb_agg(jsonb_build_object('table', t.schemaname || '.' || t.tablename,
        'columns', t.attnames, 'row_filter', t.rowfilter) ORDER BY t.schemaname, t.tablename)
        FROM pg_publication_tables AS t WHERE t.pubname = p.pubname), '[]') AS tables
FROM pg_publication AS p ORDER BY p.pubname"""


_JSON_COLUMNS = frozenset({"stats", "tables"})


async def fetch(conn: asyncpg.Connection, sql: str) -> list[dict[str, Any]]:
    """Rows as dicts, jsonb columns decoded (asyncpg hands jsonb over as text)."""
    return [
        {
            k: json.loads(v) if k in _JSON_COLUMNS and isinstance(v, str) else v
            for k, v in row.items()
        }
        for row in await conn.fetch(sql)
    ]


async def run_ddl(conn: asyncpg.Connection, sql: str) -> None:
    """One statement, outside a transaction (CREATE SUBSCRIPTION needs that)."""
    await conn.fetch(sql)  # extended protocol: exactly one statement


def create_publication_sql(
    name: str,
    *,
    schemas: list[str],
    tables: list[str],
    columns: list[str] | None,
    row_filter: str | None,
) -> str:
    parts = [f"TABLES IN SCHEMA {', '.join(identifier(s) for s in schemas)}"] if schemas else []
    for table in tables:
        part = f"TABLE {qualified(table)}"
        if columns:
            part += f" ({', '.join(identifier(c) for c in columns)})"
        if row_filter:
            part += f" WHERE ({row_filter})"
        parts.append(part)
    return f"CREATE PUBLICATION {identifier(name)} FOR {', '.join(parts)}"


def create_subscription_sql(
    name: str, *, conninfo: str, publications: list[str], failover: bool, copy_data: bool
) -> str:
    pubs = ", ".join(identifier(p) for p in publications)
    options = f"failover = {str(failover).lower()}, copy_data = {str(copy_data).lower()}"
    return (
        f"CREATE SUBSCRIPTION {identifier(name)} CONNECTION {literal(conninfo)} "
        f"PUBLICATION {pubs} WITH ({options})"
    )


def drop_sql(kind: str, name: str) -> str:
    if kind not in ("PUBLICATION", "SUBSCRIPTION"):
        raise ValueError(kind)
    return f"DROP {kind} {identifier(name)}"
