"""The SQL of user imports: set-based checks on a staging table, then one MERGE ... RETURNING
(or, for Citus, INSERT ... ON CONFLICT ... RETURNING).

Checks select `(line, field, reason)` for each row they reject; the service removes those
rows from the staging table before the MERGE, so the MERGE never fails on a known conflict.
A conflict that appears concurrently (another session inserting the same email between the
check and the MERGE) fails the statement with a unique violation and rolls back everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from keel.bulk.schemas import OnConflict
from keel.bulk.staging import Finding, Staging, find


@dataclass(frozen=True, slots=True)
class MergeCounts:
    inserted: int
    updated: int


def duplicates(table: str, key: str, field: str) -> str:
    """Rows whose `key` repeats an earlier row of the same file."""
    return (
        f"SELECT line, '{field}', 'duplicate inside the file (first on row ' || first || ')' "
        f"FROM (SELECT line, min(line) OVER (PARTITION BY {key}) AS first FROM {table}) d "
        "WHERE line > first"
    )


# --- users ------------------------------------------------------------------------------

# An imported account matches a stored one by email (citext) or by username (any case).
_USER_MATCHES = (
    "SELECT s.*, e.id AS by_email, n.id AS by_username FROM {table} s"
    " LEFT JOIN app.users e ON e.email = s.email::citext"
    " LEFT JOIN app.users n ON lower(n.username) = lower(s.username)"
)


async def check_users(
    conn: asyncpg.Connection, staging: Staging, on_conflict: OnConflict
) -> list[Finding]:
    table = staging.table
    findings = await find(
        conn,
        f"{duplicates(table, 'lower(email)', 'email')} UNION ALL "
        f"{duplicates(table, 'lower(username)', 'username')}",
    )
    matches = _USER_MATCHES.format(table=table)
    findings += await find(
        conn,
        "SELECT line, 'username', 'the username belongs to another account than the email' "
        f"FROM ({matches}) m WHERE by_email <> by_username",
    )
    # Two rows of the file that match one stored account (one by email, one by username).
    findings += await find(
        conn,
        "SELECT line, 'email', 'matches the same account as row ' || first FROM ("
        "SELECT line, min(line) OVER (PARTITION BY coalesce(by_email, by_username)) AS first "
        f"FROM ({matches}) m WHERE coalesce(by_email, by_username) IS NOT NULL) d "
        "WHERE line > first",
    )
    if on_conflict is OnConflict.ERROR:
        findings += await find(
            conn,
            "SELECT line, CASE WHEN by_email IS NOT NULL THEN 'email' ELSE 'username' END, "
            "'an account with this ' || CASE WHEN by_email IS NOT NULL THEN 'email' "
            "ELSE 'username' END || ' already exists' "
            f"FROM ({matches}) m WHERE by_email IS NOT NULL OR by_username IS NOT NULL",
        )
    return findings


_USER_FIELDS = (
    "username",
    "full_name",
    "hashed_password",
    "is_active",
    "is_verified",
    "is_superuser",
    "metadata",
)


async def merge_users(
    conn: asyncpg.Connection, staging: Staging, on_conflict: OnConflict
) -> MergeCounts:
    """Insert new accounts; with `update`, overwrite changed ones and end their sessions."""
    fields = ", ".join(f"u.{name}" for name in _USER_FIELDS)
    incoming = ", ".join(f"src.{name}" for name in _USER_FIELDS)
    when_matched = ""
    if on_conflict is OnConflict.UPDATE:
        assignments = ", ".join(f"{name} = src.{name}" for name in ("email", *_USER_FIELDS))
        when_matched = (
            f"WHEN MATCHED AND (u.email::text, {fields}) IS DISTINCT FROM (src.email, {incoming}) "
            f"THEN UPDATE SET {assignments} "
        )
    columns = ("id", "email", *_USER_FIELDS)
    sql = f"""
        WITH merged AS (
            MERGE INTO app.users AS u
            USING (
                SELECT m.*, coalesce(by_email, by_username) AS match_id,
                       e.hashed_password IS DISTINCT FROM m.hashed_password
                       OR (e.is_active AND NOT m.is_active) AS ends_sessions
                FROM ({_USER_MATCHES.format(table=staging.table)}) m
                LEFT JOIN app.users e ON e.id = coalesce(by_email, by_username)
            ) AS src
            ON u.id = src.match_id
            {when_matched}
            WHEN NOT MATCHED THEN
                INSERT ({", ".join(columns)}, created_at)
                VALUES ({", ".join(f"src.{c}" for c in columns)}, coalesce(src.created_at, now()))
            RETURNING merge_action() AS action, u.id AS user_id, src.ends_sessions
        ),
        ended AS (
            UPDATE app.token_families f
            SET revoked_at = now(), revoked_reason = 'import'
            FROM merged
            WHERE merged.action = 'UPDATE' AND merged.ends_sessions
              AND f.user_id = merged.user_id AND f.revoked_at IS NULL
        )
        SELECT action, count(*) FROM merged GROUP BY action
    """
    return counts_by_action(await conn.fetch(sql))


async def upsert_users(
    conn: asyncpg.Connection, staging: Staging, on_conflict: OnConflict
) -> MergeCounts:
    """The Citus path (app.users is a reference table there, and Citus refuses
    `MERGE ... RETURNING` on its tables): the same rows, counts and ended sessions as
    `merge_users`, by `INSERT ... ON CONFLICT (id) ... RETURNING (xmax = 0)`."""
    matches = _USER_MATCHES.format(table=staging.table)
    conflict = ""  # error: the checks rejected every match; a concurrent one fails (409)
    ending: set[UUID] = set()
    if on_conflict is OnConflict.SKIP:
        conflict = "ON CONFLICT (id) DO NOTHING"
    elif on_conflict is OnConflict.UPDATE:
        stored = ", ".join(f"u.{name}" for name in _USER_FIELDS)
        incoming = ", ".join(f"EXCLUDED.{name}" for name in _USER_FIELDS)
        assignments = ", ".join(f"{name} = EXCLUDED.{name}" for name in ("email", *_USER_FIELDS))
        conflict = (
            f"ON CONFLICT (id) DO UPDATE SET {assignments} WHERE (u.email::text, {stored}) "
            f"IS DISTINCT FROM (EXCLUDED.email::text, {incoming})"
        )
        # Accounts whose new password or deactivation ends their sessions, if updated.
        found = await conn.fetch(
            f"SELECT e.id FROM ({matches}) m "
            "JOIN app.users e ON e.id = coalesce(m.by_email, m.by_username) "
            "WHERE e.hashed_password IS DISTINCT FROM m.hashed_password "
            "OR (e.is_active AND NOT m.is_active)"
        )
        ending = {row[0] for row in found}
    columns = ("id", "email", *_USER_FIELDS)
    sql = f"""
        INSERT INTO app.users AS u ({", ".join(columns)}, created_at)
        SELECT coalesce(m.by_email, m.by_username, m.id), m.email,
               {", ".join(f"m.{name}" for name in _USER_FIELDS)}, coalesce(m.created_at, now())
        FROM ({matches}) m
        {conflict}
        RETURNING u.xmax = 0 AS inserted, u.id
    """
    inserted, updated = 0, []
    async for row in conn.cursor(sql, prefetch=10_000):
        if row[0]:
            inserted += 1
        else:
            updated.append(row[1])
    if ended := [user_id for user_id in updated if user_id in ending]:
        await conn.execute(
            "UPDATE app.token_families SET revoked_at = now(), revoked_reason = 'import' "
            "WHERE user_id = ANY($1::uuid[]) AND revoked_at IS NULL",
            ended,
        )
    return MergeCounts(inserted=inserted, updated=len(updated))


def counts_by_action(records: list[asyncpg.Record]) -> MergeCounts:
    by_action = {record[0]: int(record[1]) for record in records}
    return MergeCounts(inserted=by_action.get("INSERT", 0), updated=by_action.get("UPDATE", 0))
