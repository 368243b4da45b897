"""Migration 0014 on a seeded database: existing posts and documents move into their
author's personal organization, whose id becomes the author's id."""

from __future__ import annotations

import asyncio
from uuid import UUID

import asyncpg

from keel.migrations import runner
from tests.conftest import MakeDatabase, asyncpg_dsn

BEFORE = "0013"  # the revision 0014 follows

SEED = """
    INSERT INTO app.users (id, email, username, hashed_password)
    SELECT gen_random_uuid(), name || '@example.com', name, 'x' FROM unnest($1::text[]) name
"""


async def _user(conn: asyncpg.Connection, name: str) -> UUID:
    return UUID(str(await conn.fetchval("SELECT id FROM app.users WHERE username = $1", name)))


async def _personal(conn: asyncpg.Connection, user_id: UUID) -> UUID:
    org = await conn.fetchval(
        "SELECT o.id FROM app.organizations o JOIN app.memberships m ON m.tenant_id = o.id"
        " WHERE o.personal AND m.user_id = $1",
        user_id,
    )
    return UUID(str(org))


async def _seed(conn: asyncpg.Connection) -> dict[str, UUID]:
    await conn.execute(SEED, ["ann", "Bob"])
    ann, bob = await _user(conn, "ann"), await _user(conn, "Bob")
    team = await conn.fetchval(
        "INSERT INTO app.organizations (id, name, slug) VALUES (gen_random_uuid(), 'Team', 'team')"
        " RETURNING id"
    )
    await conn.execute(
        "INSERT INTO app.memberships (tenant_id, user_id, role) VALUES ($1, $2, 'owner'),"
        " ($1, $3, 'member')",
        team,
        ann,
        bob,
    )
    await conn.execute(
        "INSERT INTO app.invitations (tenant_id, id, email, role, token_hash, invited_by,"
        " expires_at) VALUES ($1, gen_random_uuid(), 'c@example.com', 'member', $2, $3,"
        " now() + interval '1 day')",
        team,
        b"h" * 32,
        ann,
    )
    await conn.execute(
        "INSERT INTO app.posts (id, title, content, is_published, author_id)"
        " VALUES (gen_random_uuid(), 'ann 1', 'x', true, $1),"
        " (gen_random_uuid(), 'ann draft', 'x', false, $1),"
        " (gen_random_uuid(), 'bob 1', 'x', true, $2)",
        ann,
        bob,
    )
    dimension = await conn.fetchval(
        "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'app.post_embeddings'::regclass"
        " AND attname = 'embedding'"
    )
    vector = "[" + ",".join(["0.1"] * dimension) + "]"
    await conn.execute(
        "INSERT INTO app.post_embeddings (post_id, embedding, model)"
        " SELECT id, $1::vector, 'test' FROM app.posts WHERE title = 'ann 1'",
        vector,
    )
    await conn.execute(
        "INSERT INTO app.documents (id, owner_id, content) VALUES (gen_random_uuid(), $1, 'doc')",
        bob,
    )
    await conn.execute("DELETE FROM app.jobs")  # the inserts above queued embedding jobs
    return {"ann": ann, "bob": bob, "team": UUID(str(team))}


async def test_existing_rows_move_into_their_authors_personal_organization(
    make_database: MakeDatabase,
) -> None:
    url = await make_database()
    await asyncio.to_thread(runner.upgrade, url, BEFORE)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        ids = await _seed(conn)
        assert await _personal(conn, ids["ann"]) != ids["ann"]  # 0013 made random ids
        stamps = dict(await conn.fetch("SELECT title, updated_at FROM app.posts"))
        await asyncio.to_thread(runner.upgrade, url)

        # A personal organization's id is now its owner's id; memberships followed it.
        for name in ("ann", "bob"):
            assert await _personal(conn, ids[name]) == ids[name]
        slugs = await conn.fetch("SELECT id, slug FROM app.organizations WHERE personal")
        assert {row["id"]: row["slug"] for row in slugs} == {ids["ann"]: "~ann", ids["bob"]: "~bob"}
        team = await conn.fetch(
            "SELECT user_id, role FROM app.memberships WHERE tenant_id = $1", ids["team"]
        )
        assert {(row["user_id"], row["role"]) for row in team} == {
            (ids["ann"], "owner"),
            (ids["bob"], "member"),
        }
        invitations = await conn.fetchval("SELECT array_agg(tenant_id) FROM app.invitations")
        assert invitations == [ids["team"]]

        # Every post, embedding and document is in its author's personal organization.
        posts = await conn.fetch("SELECT title, tenant_id, author_id FROM app.posts")
        assert len(posts) == 3
        assert all(row["tenant_id"] == row["author_id"] for row in posts)
        embedded = await conn.fetchrow(
            "SELECT e.tenant_id, p.tenant_id AS post_tenant FROM app.post_embeddings e"
            " JOIN app.posts p ON (p.tenant_id, p.id) = (e.tenant_id, e.post_id)"
        )
        assert embedded["tenant_id"] == embedded["post_tenant"] == ids["ann"]
        document = await conn.fetchval("SELECT tenant_id FROM app.documents")
        assert document == ids["bob"]
        # Moving rows is not an edit: no embedding jobs, no new updated_at.
        assert await conn.fetchval("SELECT count(*) FROM app.jobs") == 0
        assert dict(await conn.fetch("SELECT title, updated_at FROM app.posts")) == stamps

        # The keys lead with the tenant.
        for table in ("posts", "documents", "post_embeddings"):
            key = await conn.fetchval(
                "SELECT array_agg(a.attname ORDER BY k.ord) FROM pg_constraint c,"
                " unnest(c.conkey) WITH ORDINALITY k(attnum, ord)"
                " JOIN pg_attribute a ON a.attnum = k.attnum"
                " WHERE c.conname = $1 AND a.attrelid = c.conrelid",
                f"pk_{table}",
            )
            assert key[0] == "tenant_id", (table, key)

        # New accounts get a personal organization with their own id; deleting takes it along.
        await conn.execute(SEED, ["cat"])
        cat = await _user(conn, "cat")
        assert await _personal(conn, cat) == cat
        await conn.execute("DELETE FROM app.users WHERE id = $1", ids["bob"])
        gone = await conn.fetchval(
            "SELECT count(*) FROM app.organizations WHERE id = $1", ids["bob"]
        )
        assert gone == 0
        assert await conn.fetchval("SELECT count(*) FROM app.documents") == 0

        # And back: 0013's layout, the rows kept; then forward again.
        await asyncio.to_thread(runner.downgrade, url, BEFORE)
        assert await conn.fetchval("SELECT count(*) FROM app.posts") == 2
        await asyncio.to_thread(runner.upgrade, url)
        assert (
            await conn.fetchval("SELECT count(*) FROM app.posts WHERE tenant_id = author_id") == 2
        )
    finally:
        await conn.close()
