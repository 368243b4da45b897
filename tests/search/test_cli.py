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


async def add_posts(url: str, n: int) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        author = await conn.fetchval(
            "INSERT INTO app.users (id, email, username, hashed_password) "
            "VALUES (gen_random_uuid(), 'cli@example.com', 'cli_author', 'x') RETURNING id"
        )
        await conn.execute(
            "INSERT INTO app.posts (id, title, content, author_id) "
            "SELECT gen_random_uuid(), 'Post ' || i, 'words about topic ' || i, $1 "
            "FROM generate_series(1, $2) AS i",
            author,
            n,
        )
    finally:
        await conn.close()


async def test_backfill_embeds_every_post(make_database: MakeDatabase) -> None:
    url = await make_database(migrated=True)
    await add_posts(url, 40)

    result = keel(url, "embeddings", "backfill", "--batch", "16")

    assert result.returncode == 0, result.stderr
    assert "embedded 40 posts" in result.stdout
    embedded, _ = await fetch_counts(url)
    assert embedded == 40


async def test_worker_drain_runs_the_queued_jobs(make_database: MakeDatabase) -> None:
    url = await make_database(migrated=True)
    await add_posts(url, 40)  # 40 posts: two embed_posts jobs of up to 32 posts
    assert await fetch_counts(url) == (0, 2)

    result = keel(url, "worker", "--drain")

    assert result.returncode == 0, result.stderr
    assert "jobs done: 2" in result.stdout
    assert await fetch_counts(url) == (40, 0)
