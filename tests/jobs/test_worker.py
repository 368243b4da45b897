"""The job worker against a real database: transactions, claims, leases and stopping.

The embedder here is a stand-in that waits for the test's signal (a model that is slow on
purpose); everything else, the queue and the database included, is real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from keel.core.db import Database, create_database
from keel.jobs.worker import Worker
from keel.search.embeddings import worker_for
from tests.conftest import MakeDatabase, asyncpg_dsn, make_settings

DIMENSION = 384
WAIT_S = 30.0  # a timeout only: a broken worker hangs instead of failing


@dataclass
class GatedEmbedder:
    """An embedder that blocks each call until the test opens the gate."""

    name: str = "gated"
    dimension: int = DIMENSION
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    calls: int = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        self.entered.set()
        await self.gate.wait()
        return [[1.0] + [0.0] * (DIMENSION - 1) for _ in texts]


@dataclass
class Queue:
    url: str
    database: Database
    conn: asyncpg.Connection

    async def add_posts(self, jobs: int) -> None:
        """One post per statement: each INSERT queues its own embed_posts job."""
        author = await self.conn.fetchval(
            "INSERT INTO app.users (id, email, username, hashed_password) "
            "VALUES (gen_random_uuid(), 'w@example.com', 'worker_author', 'x') RETURNING id"
        )
        for i in range(jobs):
            await self.conn.execute(
                "INSERT INTO app.posts (tenant_id, id, title, content, author_id) "
                "VALUES ($2, gen_random_uuid(), $1, 'words', $2)",  # the personal organization
                f"Post {i}",
                author,
            )

    async def jobs(self) -> list[asyncpg.Record]:
        return list(
            await self.conn.fetch(
                "SELECT status, attempts, locked_by FROM app.jobs ORDER BY created_at"
            )
        )

    async def app_sessions(self) -> list[asyncpg.Record]:
        """The worker's connections to this database, and what each is doing."""
        return list(
            await self.conn.fetch(
                "SELECT state, backend_xid IS NOT NULL AS wrote, xact_start IS NOT NULL AS in_tx "
                "FROM pg_stat_activity WHERE datname = current_database() AND pid <> "
                "pg_backend_pid() AND application_name = 'keel'"
            )
        )


@pytest.fixture
async def queue(make_database: MakeDatabase, tmp_path: Path) -> AsyncIterator[Queue]:
    url = await make_database(migrated=True)
    database = create_database(make_settings(url, tmp_path), url)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        yield Queue(url, database, conn)
    finally:
        await conn.close()
        await database.dispose()


def worker(queue: Queue, embedder: GatedEmbedder, **overrides: Any) -> Worker:
    settings = make_settings(queue.url, Path("."), **overrides)
    return worker_for(settings, queue.database, embedder)


async def test_no_connection_is_held_while_the_model_computes(queue: Queue) -> None:
    await queue.add_posts(1)
    embedder = GatedEmbedder()
    work = asyncio.create_task(worker(queue, embedder).drain())
    await asyncio.wait_for(embedder.entered.wait(), WAIT_S)

    # Mid-computation: no transaction open, no connection checked out of the pool.
    assert [s for s in await queue.app_sessions() if s["in_tx"]] == []
    assert queue.database.pool_status().checked_out == 0

    embedder.gate.set()
    assert await asyncio.wait_for(work, WAIT_S) == 1
    assert await queue.jobs() == []
    assert await queue.conn.fetchval("SELECT count(*) FROM app.post_embeddings") == 1


async def test_a_stop_gives_back_every_claim_not_finished(queue: Queue) -> None:
    await queue.add_posts(3)
    embedder = GatedEmbedder()
    stop = asyncio.Event()
    running = asyncio.create_task(worker(queue, embedder, worker_batch=4).run(stop))
    await asyncio.wait_for(embedder.entered.wait(), WAIT_S)
    assert [job["status"] for job in await queue.jobs()] == ["running"] * 3

    stop.set()  # the first job is mid-computation, the other two not started
    await asyncio.wait_for(running, WAIT_S)

    jobs = await queue.jobs()
    assert [(j["status"], j["attempts"], j["locked_by"]) for j in jobs] == [("queued", 0, None)] * 3
    assert embedder.calls == 1
    assert await queue.conn.fetchval("SELECT count(*) FROM app.post_embeddings") == 0


async def test_results_are_not_written_once_the_lease_is_lost(queue: Queue) -> None:
    await queue.add_posts(1)
    embedder = GatedEmbedder()
    slow = worker(queue, embedder)
    work = asyncio.create_task(slow.drain())
    await asyncio.wait_for(embedder.entered.wait(), WAIT_S)
    # The lease runs out and another worker takes the job over meanwhile.
    await queue.conn.execute("UPDATE app.jobs SET locked_at = now() - interval '1 hour'")
    other = GatedEmbedder()
    other.gate.set()
    assert await worker(queue, other).drain() == 1

    embedder.gate.set()
    await asyncio.wait_for(work, WAIT_S)
    assert slow.processed == 0
    assert slow.failed == 0
    assert await queue.jobs() == []
    [row] = await queue.conn.fetch("SELECT model FROM app.post_embeddings")
    assert row["model"] == "gated"
    assert other.calls == 1
