"""The SQL of seeding, on one raw asyncpg connection (COPY needs the driver itself)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg
from sqlalchemy.engine import make_url

from keel.seed.fake import POST_COLUMNS, SEED_ID_TAG, SEEDED_METADATA, USER_COLUMNS

SEED_ID_SUFFIX = f"{SEED_ID_TAG:012x}"  # the tag as the last 12 hex digits of an id's text

# Parameters: $1 SEED_ID_SUFFIX, $2 SEEDED_METADATA.
_DELETE_SEEDED_POSTS = "DELETE FROM app.posts WHERE right(id::text, 12) = $1"
_DELETE_SEEDED_USERS = (
    "DELETE FROM app.users WHERE right(id::text, 12) = $1 AND metadata @> $2::jsonb"
)
_AUTHOR_COLUMNS = "SELECT id, (extract(epoch FROM created_at) * 1000000)::bigint AS us"
_SEEDED_AUTHORS = (
    f"{_AUTHOR_COLUMNS} FROM app.users"
    " WHERE right(id::text, 12) = $1 AND metadata @> $2::jsonb ORDER BY created_at"
)
_ALL_AUTHORS = f"{_AUTHOR_COLUMNS} FROM app.users ORDER BY created_at"
_TAKEN_NAMES = (
    "SELECT lower(email::text) AS name FROM app.users WHERE email = ANY($1::text[]::citext[])"
    " UNION SELECT lower(username) FROM app.users WHERE lower(username) = ANY($2::text[])"
)


async def connect(url: str) -> asyncpg.Connection:
    """A connection for `url` (SQLAlchemy or libpq form), no statement timeout."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    settings = {"application_name": "keel-seed", "statement_timeout": "0"}
    conn = await asyncpg.connect(dsn, server_settings=settings)
    # citext (users.email) has no binary codec in asyncpg; on the wire it is text.
    schema = await conn.fetchval(
        "SELECT typnamespace::regnamespace::text FROM pg_type WHERE typname = 'citext'"
    )
    if schema is not None:
        await conn.set_builtin_type_codec("citext", schema=schema, codec_name="text")
    return conn


async def has_schema(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT to_regclass('app.users') IS NOT NULL AND to_regclass('app.posts') IS NOT NULL"
        )
    )


async def delete_seeded(conn: asyncpg.Connection) -> tuple[int, int]:
    """Delete seeded posts, then seeded users (with all they own): the two counts."""
    # Posts first: one set-based delete is much faster than a cascade per user.
    posts = await conn.execute(_DELETE_SEEDED_POSTS, SEED_ID_SUFFIX)
    users = await conn.execute(_DELETE_SEEDED_USERS, SEED_ID_SUFFIX, SEEDED_METADATA)
    return _row_count(users), _row_count(posts)


async def count_users(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM app.users"))


async def taken_rows(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> list[int]:
    """Indexes of user rows whose email or username (any case) is already in use."""
    emails = [row[USER_COLUMNS.index("email")] for row in rows]
    usernames = [row[USER_COLUMNS.index("username")] for row in rows]
    names = {record["name"] for record in await conn.fetch(_TAKEN_NAMES, emails, usernames)}
    return [
        i
        for i, (email, username) in enumerate(zip(emails, usernames, strict=True))
        if email in names or username in names
    ]


async def existing_authors(conn: asyncpg.Connection) -> tuple[list[UUID], list[int]]:
    """Ids and creation times (Unix µs) of the seeded users, else of all; oldest first."""
    records = await conn.fetch(_SEEDED_AUTHORS, SEED_ID_SUFFIX, SEEDED_METADATA)
    if not records:
        records = await conn.fetch(_ALL_AUTHORS)
    return [r["id"] for r in records], [r["us"] for r in records]


async def copy_users(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    await conn.copy_records_to_table(
        "users", schema_name="app", columns=list(USER_COLUMNS), records=rows
    )


async def copy_posts(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    # `search` is not among the columns: PostgreSQL computes the generated column.
    await conn.copy_records_to_table(
        "posts", schema_name="app", columns=list(POST_COLUMNS), records=rows
    )


async def analyze(conn: asyncpg.Connection) -> None:
    await conn.execute("ANALYZE app.users, app.posts")


def _row_count(status: str) -> int:
    """The row count of a command tag such as ``DELETE 42``."""
    return int(status.rsplit(" ", 1)[-1])
