"""Migration 0012 on a seeded database: every existing account gets a personal organization."""

from __future__ import annotations

import asyncio

import asyncpg

from keel.migrations import runner
from tests.conftest import MakeDatabase, asyncpg_dsn

BEFORE = "0011"  # the revision 0012 follows
USERS = [("Alice", "alice@example.com"), ("bob.b", "bob@example.com"), ("Carol_3", "c@example.com")]


async def test_existing_users_get_a_personal_organization_they_own(
    make_database: MakeDatabase,
) -> None:
    url = await make_database()
    await asyncio.to_thread(runner.upgrade, url, BEFORE)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        for username, email in USERS:
            await conn.execute(
                "INSERT INTO app.users (id, email, username, hashed_password)"
                " VALUES (gen_random_uuid(), $1, $2, 'x')",
                email,
                username,
            )
        await asyncio.to_thread(runner.upgrade, url)
        rows = await conn.fetch(
            """
            SELECT u.username, o.name, o.slug, o.personal, m.role, o.created_at = u.created_at
            FROM app.users u
            JOIN app.memberships m ON m.user_id = u.id
            JOIN app.organizations o ON o.id = m.tenant_id
            ORDER BY u.username
            """
        )
        assert [tuple(row) for row in rows] == [
            ("Alice", "Alice", "~alice", True, "owner", True),
            ("Carol_3", "Carol_3", "~carol_3", True, "owner", True),
            ("bob.b", "bob.b", "~bob.b", True, "owner", True),
        ]
        # The backfill ran before the triggers: no notification storm, and nothing left over.
        assert await conn.fetchval("SELECT to_regclass('personal_organizations')") is None

        await asyncio.to_thread(runner.downgrade, url, BEFORE)
        assert await conn.fetchval("SELECT to_regclass('app.organizations')") is None
        assert await conn.fetchval("SELECT count(*) FROM app.users") == len(USERS)
        await asyncio.to_thread(runner.upgrade, url)
        assert await conn.fetchval("SELECT count(*) FROM app.memberships") == len(USERS)
    finally:
        await conn.close()
