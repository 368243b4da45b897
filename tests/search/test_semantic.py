"""Semantic and hybrid search, and the job queue that embeds posts.

These run a separate app on a scratch database, so posts really commit and the worker
(run here by hand, as `keel worker --drain` would) sees them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from keel.search.embeddings import worker_for
from tests.conftest import MakeDatabase, asyncpg_dsn, make_settings, running
from tests.posts.factory import posts_url
from tests.search.factory import search_path
from tests.users.factory import bearer, make_user, sign_in

CAT_POST = "The feline dozed on the sunny windowsill all afternoon"
BUDGET_POST = "Quarterly spreadsheet totals for the finance department"


@dataclass
class Scratch:
    """The writer's personal organization (`org`, the writer's id) on a scratch database."""

    http: AsyncClient
    app: FastAPI
    url: str
    org: UUID
    headers: dict[str, str]
    admin: dict[str, str]

    async def post(self, title: str, content: str = "", **fields: Any) -> str:
        response = await self.http.post(
            posts_url(self.org),
            json={"title": title, "content": content, "is_published": True, **fields},
            headers=self.headers,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def titles(
        self, q: str, mode: str, headers: dict[str, str], org: UUID | None = None
    ) -> list[str]:
        response = await self.http.get(
            search_path(org or self.org), params={"q": q, "mode": mode}, headers=headers
        )
        assert response.status_code == 200, response.text
        return [hit["title"] for hit in response.json()["items"]]

    async def search(self, q: str, mode: str) -> list[str]:
        return await self.titles(q, mode, self.headers)

    async def run_worker(self) -> int:
        settings = self.app.state.settings
        return await worker_for(
            settings, self.app.state.db, self.app.state.services.embedder
        ).drain()

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(asyncpg_dsn(self.url))
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()


@pytest.fixture
async def scratch(make_database: MakeDatabase, tmp_path: Path) -> AsyncIterator[Scratch]:
    url = await make_database(migrated=True)
    settings = make_settings(url, tmp_path, rate_limit_enabled=False)
    async with running(settings) as http:
        app: FastAPI = http._transport.app  # type: ignore[attr-defined]
        async with app.state.db.sessionmaker() as session:
            writer = await make_user(app, session, username="writer")
            boss = await make_user(app, session, username="boss", admin=True)
            await session.commit()
        yield Scratch(
            http,
            app,
            url,
            writer.id,
            bearer(await sign_in(http, writer.username)),
            bearer(await sign_in(http, boss.username)),
        )


async def test_semantic_finds_what_keywords_miss(scratch: Scratch) -> None:
    await scratch.post("A lazy afternoon", CAT_POST)
    await scratch.post("Numbers", BUDGET_POST)
    assert await scratch.run_worker() >= 1

    assert await scratch.search("cat sleeping", "keyword") == []
    semantic = await scratch.search("cat sleeping", "semantic")
    assert semantic[0] == "A lazy afternoon"
    hybrid = await scratch.search("cat sleeping", "hybrid")
    assert hybrid[0] == "A lazy afternoon"


async def test_hybrid_still_finds_posts_not_yet_embedded(scratch: Scratch) -> None:
    await scratch.post("Zeppelin maintenance log", "helium and canvas")  # worker not run

    assert await scratch.search("zeppelin", "hybrid") == ["Zeppelin maintenance log"]
    assert await scratch.search("zeppelin", "semantic") == []


async def test_semantic_search_respects_visibility(scratch: Scratch) -> None:
    await scratch.post("Private musings", CAT_POST, is_published=False)
    await scratch.run_worker()
    assert await scratch.search("cat", "semantic") == ["Private musings"]  # the author's
    assert "Private musings" in await scratch.titles("cat", "semantic", scratch.admin)
    async with scratch.app.state.db.sessionmaker() as session:  # a plain member: no drafts
        stranger = await make_user(scratch.app, session, username="stranger")
        await session.commit()
    await scratch.sql(
        "INSERT INTO app.memberships (tenant_id, user_id, role) VALUES ($1, $2, 'member')",
        scratch.org,
        stranger.id,
    )
    headers = bearer(await sign_in(scratch.http, stranger.username))
    assert await scratch.titles("cat", "semantic", headers) == []
    assert await scratch.titles("cat", "semantic", headers, org=stranger.id) == []


async def test_writes_queue_embedding_jobs_and_the_worker_drains_them(scratch: Scratch) -> None:
    post_id = await scratch.post("First words", "original")
    [job] = await scratch.sql("SELECT tenant_id, payload FROM app.jobs WHERE status = 'queued'")
    assert job["tenant_id"] == scratch.org
    assert json.loads(job["payload"]) == {"tenant_id": str(scratch.org), "post_ids": [post_id]}
    await scratch.run_worker()
    assert await scratch.sql("SELECT 1 FROM app.jobs") == []
    [before] = await scratch.sql("SELECT tenant_id, embedding::text AS v FROM app.post_embeddings")
    assert before["tenant_id"] == scratch.org

    publish_only = await scratch.http.patch(
        f"{posts_url(scratch.org)}/{post_id}", json={"is_published": False}, headers=scratch.headers
    )
    assert publish_only.status_code == 200
    assert await scratch.sql("SELECT 1 FROM app.jobs") == []  # the text didn't change

    await scratch.http.patch(
        f"{posts_url(scratch.org)}/{post_id}",
        json={"content": "entirely new words"},
        headers=scratch.headers,
    )
    assert len(await scratch.sql("SELECT 1 FROM app.jobs")) == 1
    await scratch.run_worker()
    [after] = await scratch.sql("SELECT embedding::text AS v FROM app.post_embeddings")
    assert after["v"] != before["v"]


async def test_jobs_queued_before_tenants_still_embed(scratch: Scratch) -> None:
    """A payload without tenant_id (queued before migration 0014) finds its posts by id."""
    post_id = await scratch.post("Old job", CAT_POST)
    await scratch.sql("DELETE FROM app.jobs")
    await scratch.sql(
        "INSERT INTO app.jobs (id, kind, payload) VALUES (gen_random_uuid(), 'embed_posts', $1)",
        json.dumps({"post_ids": [post_id]}),
    )
    assert await scratch.run_worker() == 1
    [row] = await scratch.sql("SELECT tenant_id, post_id FROM app.post_embeddings")
    assert (row["tenant_id"], str(row["post_id"])) == (scratch.org, post_id)


async def test_a_job_never_embeds_another_organizations_post(scratch: Scratch) -> None:
    post_id = await scratch.post("Someone else's", CAT_POST)
    await scratch.sql("DELETE FROM app.jobs")
    async with scratch.app.state.db.sessionmaker() as session:
        other = await make_user(scratch.app, session, username="other")
        await session.commit()
    await scratch.sql(
        "INSERT INTO app.jobs (id, kind, payload, tenant_id)"
        " VALUES (gen_random_uuid(), 'embed_posts', $1, $2)",
        json.dumps({"tenant_id": str(other.id), "post_ids": [post_id]}),
        other.id,
    )
    assert await scratch.run_worker() == 1
    assert await scratch.sql("SELECT 1 FROM app.post_embeddings") == []


async def test_a_failing_job_retries_with_backoff_then_stays_visible(scratch: Scratch) -> None:
    await scratch.sql(
        "INSERT INTO app.jobs (id, kind, payload, max_attempts) "
        "VALUES (gen_random_uuid(), 'embed_posts', '{\"post_ids\": [\"not-a-uuid\"]}', 2)"
    )
    await scratch.run_worker()
    [job] = await scratch.sql("SELECT status, attempts, run_at > now() AS later FROM app.jobs")
    assert (job["status"], job["attempts"], job["later"]) == ("queued", 1, True)

    await scratch.sql("UPDATE app.jobs SET run_at = now()")  # skip the backoff wait
    await scratch.run_worker()
    [job] = await scratch.sql("SELECT id, status, attempts, last_error FROM app.jobs")
    assert (job["status"], job["attempts"]) == ("failed", 2)
    assert "ValueError" in job["last_error"]

    overview = await scratch.http.get("/api/v1/admin/jobs", headers=scratch.admin)
    assert overview.status_code == 200, overview.text
    assert overview.json()["counts"]["failed"] == 1
    assert overview.json()["jobs"][0]["last_error"].startswith("ValueError")
    denied = await scratch.http.get("/api/v1/admin/jobs", headers=scratch.headers)
    assert denied.status_code == 403

    retried = await scratch.http.post(
        f"/api/v1/admin/jobs/{job['id']}/retry", headers=scratch.admin
    )
    assert retried.status_code == 204
    [job] = await scratch.sql("SELECT status, attempts FROM app.jobs")
    assert (job["status"], job["attempts"]) == ("queued", 0)


async def test_stale_running_jobs_are_taken_back(scratch: Scratch) -> None:
    await scratch.post("Crashed worker", "its job was claimed and never finished")
    await scratch.sql(
        "UPDATE app.jobs SET status = 'running', locked_at = now() - interval '1 hour'"
    )
    assert await scratch.run_worker() == 1
    assert await scratch.sql("SELECT 1 FROM app.jobs") == []
    assert len(await scratch.sql("SELECT 1 FROM app.post_embeddings")) == 1
