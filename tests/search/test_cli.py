"""`keel embeddings backfill` and `keel worker --drain`, as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg

from tests.conftest import MakeDatabase, asyncpg_dsn


def keel(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "ENVIRONMENT": "testing"}
    return subprocess.run(
        [sys.executable, "-m", "keel", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


async def fetch_counts(url: str) -> tuple[int, int]:
    """(posts with an embedding, jobs left)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM app.post_embeddings), (SELECT count(*) FROM app.jobs)"
        )
        assert row is not None
        return int(row[0]), int(row[1])
    finally:
        await conn.close()


async def add_posts(url: str, n: int, *, username: str = "cli_author") -> None:
    """`n` posts by a new user, in their personal organization (its id is theirs)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        author = await conn.fetchval(
            "INSERT INTO app.users (id, email, username, hashed_password) "
            "VALUES (gen_random_uuid(), $1 || '@example.com', $1, 'x') RETURNING id",
            username,
        )
        await conn.execute(
            "INSERT INTO app.posts (tenant_id, id, title, content, author_id) "
            "SELECT $1, gen_random_uuid(), 'Post ' || i, 'words about topic ' || i, $1 "
            "FROM generate_series(1, $2) AS i",
            author,
            n,
        )
    finally:
        await conn.close()


async def fetch(url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def test_backfill_embeds_every_post_in_every_organization(
    make_database: MakeDatabase,
) -> None:
    url = await make_database(migrated=True)
    await add_posts(url, 40)
    await add_posts(url, 3, username="other_author")

    result = keel(url, "embeddings", "backfill", "--batch", "16")

    assert result.returncode == 0, result.stderr
    assert "embedded 43 posts" in result.stdout
    embedded, _ = await fetch_counts(url)
    assert embedded == 43
    mismatched = await fetch(
        url,
        "SELECT 1 FROM app.post_embeddings e JOIN app.posts p ON p.id = e.post_id"
        " WHERE p.tenant_id <> e.tenant_id",
    )
    assert mismatched == []


async def test_backfill_queue_queues_jobs_per_organization(make_database: MakeDatabase) -> None:
    url = await make_database(migrated=True)
    await add_posts(url, 40)
    await add_posts(url, 3, username="other_author")
    await fetch(url, "DELETE FROM app.jobs")  # as if the triggers' jobs were lost

    result = keel(url, "embeddings", "backfill", "--queue")

    assert result.returncode == 0, result.stderr
    assert "queued 3 embed_posts jobs" in result.stdout  # 32 + 8 posts, and 3 posts
    jobs = await fetch(
        url,
        "SELECT j.tenant_id, (j.payload ->> 'tenant_id')::uuid AS named,"
        " jsonb_array_length(j.payload -> 'post_ids') AS n,"
        " (SELECT count(*) FROM app.posts p, jsonb_array_elements_text(j.payload -> 'post_ids')"
        "  AS ids(id) WHERE p.id = ids.id::uuid AND p.tenant_id = j.tenant_id) AS own"
        " FROM app.jobs j ORDER BY n",
    )
    assert [job["n"] for job in jobs] == [3, 8, 32]
    assert all(job["tenant_id"] == job["named"] and job["own"] == job["n"] for job in jobs)

    drained = keel(url, "worker", "--drain")
    assert drained.returncode == 0, drained.stderr
    assert await fetch_counts(url) == (43, 0)


async def test_worker_drain_runs_the_queued_jobs(make_database: MakeDatabase) -> None:
    url = await make_database(migrated=True)
    await add_posts(url, 40)  # 40 posts: two embed_posts jobs of up to 32 posts
    assert await fetch_counts(url) == (0, 2)

    result = keel(url, "worker", "--drain")

    assert result.returncode == 0, result.stderr
    assert "jobs done: 2" in result.stdout
    assert await fetch_counts(url) == (40, 0)
