"""The SQL of post imports into one organization: checks, then MERGE or INSERT ... ON CONFLICT.

Every statement takes the organization as `$1` and touches only its rows: authors are
resolved among its members, conflicts match `(tenant_id, id)`, and inserts set
`tenant_id`. A post id that exists only in another organization matches nothing here,
so that row becomes a new post of this organization: the other one is never read,
changed or revealed.

Two ways to land the checked rows, with the same counts (`ImportStrategy`):
- `merge`: one `MERGE ... RETURNING merge_action()` (PostgreSQL 17+).
- `upsert`: `INSERT ... SELECT ... ON CONFLICT (tenant_id, id) DO UPDATE ... WHERE
  <changed> RETURNING (xmax = 0)`, for Citus, which refuses `MERGE ... RETURNING` on
  distributed tables. The source is the local temporary staging table, filtered and
  keyed by the tenant, which Citus pulls to the coordinator and routes to the shard.
"""

from __future__ import annotations

from uuid import UUID

import asyncpg

from keel.bulk.repository import MergeCounts, counts_by_action, duplicates
from keel.bulk.schemas import OnConflict
from keel.bulk.staging import Finding, Staging, find

# The author, named by id, username or email, and only if a member of the organization.
_POST_AUTHORS = (
    "SELECT s.*, m.user_id AS author FROM {table} s"
    " LEFT JOIN app.users ai ON ai.id = s.author_id"
    " LEFT JOIN app.users au ON lower(au.username) = lower(s.author_username)"
    " LEFT JOIN app.users ae ON ae.email = s.author_email::citext"
    " LEFT JOIN app.memberships m"
    " ON m.tenant_id = $1 AND m.user_id = coalesce(ai.id, au.id, ae.id)"
)
# One reason whether the account exists or not: an import is no way to probe for emails.
NOT_A_MEMBER = "not a member of this organization"


async def citus_installed(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')")
    )


async def check_posts(
    conn: asyncpg.Connection, staging: Staging, on_conflict: OnConflict, tenant_id: UUID
) -> list[Finding]:
    table = staging.table
    authors = _POST_AUTHORS.format(table=table)
    findings = await find(conn, duplicates(table, "id", "id"))
    findings += await find(
        conn,
        "SELECT line, CASE WHEN author_id IS NOT NULL THEN 'author_id' "
        "WHEN author_username IS NOT NULL THEN 'author_username' ELSE 'author_email' END, "
        f"'{NOT_A_MEMBER}' FROM ({authors}) a WHERE author IS NULL",
        tenant_id,
    )
    if on_conflict is OnConflict.ERROR:
        findings += await find(
            conn,
            f"SELECT s.line, 'id', 'a post with this id already exists' FROM {table} s "
            "JOIN app.posts p ON p.tenant_id = $1 AND p.id = s.id",
            tenant_id,
        )
    return findings


_POST_FIELDS = ("title", "content", "is_published", "author_id")
_STORED = ", ".join(f"p.{name}" for name in _POST_FIELDS)


def _source(staging: Staging) -> str:
    """The rows to land, as the posts table spells them."""
    return f"""
        SELECT a.id, a.title, coalesce(a.content, '') AS content,
               coalesce(a.is_published, false) AS is_published,
               a.author AS author_id, coalesce(a.created_at, now()) AS created_at
        FROM ({_POST_AUTHORS.format(table=staging.table)}) a"""


async def merge_posts(
    conn: asyncpg.Connection, staging: Staging, on_conflict: OnConflict, tenant_id: UUID
) -> MergeCounts:
    when_matched = ""
    if on_conflict is OnConflict.UPDATE:
        incoming = ", ".join(f"src.{name}" for name in _POST_FIELDS)
        assignments = ", ".join(f"{name} = src.{name}" for name in _POST_FIELDS)
        when_matched = (
            f"WHEN MATCHED AND ({_STORED}) IS DISTINCT FROM ({incoming}) "
            f"THEN UPDATE SET {assignments} "
        )
    sql = f"""
        WITH merged AS (
            MERGE INTO app.posts AS p
            USING ({_source(staging)}) AS src
            ON p.tenant_id = $1 AND p.id = src.id
            {when_matched}
            WHEN NOT MATCHED THEN
                INSERT (tenant_id, id, {", ".join(_POST_FIELDS)}, created_at)
                VALUES ($1, src.id, {", ".join(f"src.{c}" for c in _POST_FIELDS)},
                        src.created_at)
            RETURNING merge_action() AS action
        )
        SELECT action, count(*) FROM merged GROUP BY action
    """
    return counts_by_action(await conn.fetch(sql, tenant_id))


async def upsert_posts(
    conn: asyncpg.Connection, staging: Staging, on_conflict: OnConflict, tenant_id: UUID
) -> MergeCounts:
    """The Citus path: the same rows and counts as `merge_posts`, without MERGE."""
    conflict = ""  # error: the checks rejected every match; a concurrent one fails (409)
    if on_conflict is OnConflict.SKIP:
        conflict = "ON CONFLICT (tenant_id, id) DO NOTHING"
    elif on_conflict is OnConflict.UPDATE:
        incoming = ", ".join(f"EXCLUDED.{name}" for name in _POST_FIELDS)
        assignments = ", ".join(f"{name} = EXCLUDED.{name}" for name in _POST_FIELDS)
        conflict = (
            f"ON CONFLICT (tenant_id, id) DO UPDATE SET {assignments} "
            f"WHERE ({_STORED}) IS DISTINCT FROM ({incoming})"
        )
    # A plain statement (no data-modifying CTE, which Citus plans apart): the rows it
    # returns are counted as they stream, never held whole.
    sql = f"""
        INSERT INTO app.posts AS p (tenant_id, id, {", ".join(_POST_FIELDS)}, created_at)
        SELECT $1, src.id, {", ".join(f"src.{c}" for c in _POST_FIELDS)}, src.created_at
        FROM ({_source(staging)}) AS src
        {conflict}
        RETURNING p.xmax = 0 AS inserted
    """
    inserted = updated = 0
    async for row in conn.cursor(sql, tenant_id, prefetch=10_000):
        if row[0]:
            inserted += 1
        else:
            updated += 1
    return MergeCounts(inserted=inserted, updated=updated)


async def organization_id(conn: asyncpg.Connection, reference: str) -> UUID | None:
    """The organization `reference` names, by id or by slug (`keel import --org`)."""
    found = await conn.fetchval(
        "SELECT id FROM app.organizations WHERE slug = $1 OR id::text = lower($1)", reference
    )
    return UUID(str(found)) if found is not None else None
