"""Staging tables: rows are COPYed into a temporary table dropped at commit, checked there
with set-based SQL, then merged into the real table by one MERGE.

Every function takes the raw asyncpg connection of the request's transaction, so COPY,
checks and MERGE commit or roll back together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import asyncpg

from keel.bulk.schemas import Kind


@dataclass(frozen=True, slots=True)
class Staging:
    """One import's temporary table: its (generated, never client-given) name and columns."""

    kind: Kind
    table: str
    columns: tuple[str, ...]


# Column definitions per kind. Emails are staged as text and compared as citext.
_COLUMNS: dict[Kind, tuple[tuple[str, str], ...]] = {
    Kind.USERS: (
        ("line", "integer NOT NULL"),
        ("id", "uuid NOT NULL"),
        ("email", "text NOT NULL"),
        ("username", "text NOT NULL"),
        ("full_name", "text"),
        ("hashed_password", "text NOT NULL"),
        ("is_active", "boolean NOT NULL"),
        ("is_verified", "boolean NOT NULL"),
        ("is_superuser", "boolean NOT NULL"),
        ("metadata", "jsonb NOT NULL"),
        ("created_at", "timestamptz"),
    ),
    Kind.POSTS: (
        ("line", "integer NOT NULL"),
        ("id", "uuid NOT NULL"),
        ("title", "text"),
        ("content", "text"),
        ("is_published", "boolean"),
        ("author_id", "uuid"),
        ("author_username", "text"),
        ("author_email", "text"),
        ("created_at", "timestamptz"),
    ),
}


async def create(conn: asyncpg.Connection, kind: Kind) -> Staging:
    table = f"keel_import_{kind.value}_{uuid4().hex[:12]}"
    columns = _COLUMNS[kind]
    definition = ", ".join(f"{name} {sql_type}" for name, sql_type in columns)
    # Temporary tables are not WAL-logged; ON COMMIT DROP removes it on either outcome.
    await conn.execute(f"CREATE TEMP TABLE {table} ({definition}) ON COMMIT DROP")
    return Staging(kind, table, tuple(name for name, _ in columns))


async def copy_rows(
    conn: asyncpg.Connection, staging: Staging, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Binary COPY of rows whose values follow `staging.columns`."""
    await conn.copy_records_to_table(staging.table, records=rows, columns=list(staging.columns))


async def drop(conn: asyncpg.Connection, staging: Staging) -> None:
    """Drop now: a caller that keeps its transaction open may import again."""
    await conn.execute(f"DROP TABLE IF EXISTS {staging.table}")


async def count(conn: asyncpg.Connection, staging: Staging) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM {staging.table}"))


async def discard(conn: asyncpg.Connection, staging: Staging, lines: Sequence[int]) -> None:
    """Remove rejected rows, so the MERGE sees only rows that will land."""
    if lines:
        await conn.execute(f"DELETE FROM {staging.table} WHERE line = ANY($1::int[])", list(lines))


Finding = tuple[int, str | None, str]  # (line, field, reason)


async def find(conn: asyncpg.Connection, sql: str, *args: Any) -> list[Finding]:
    """Run a check; it selects (line, field, reason) for each row it rejects."""
    return [(r[0], r[1], r[2]) for r in await conn.fetch(sql, *args)]
