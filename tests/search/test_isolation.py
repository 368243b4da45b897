"""Search stays inside the organization: full-text, semantic and hybrid, role by role.

Both organizations hold the same text and the same vectors, so a missing tenant filter
anywhere (the GIN scan, the HNSW scan, the join, the loading of hits) would show.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from uuid import UUID

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from pgvector.sqlalchemy import Vector
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from keel.search import repository
from keel.search.repository import Reader
from tests.orgs.factory import create_org
from tests.search.factory import insert_embedding, insert_post, member, search_path
from tests.users.factory import make_user, signed_in

MODES = ("keyword", "semantic", "hybrid")
TITLE = "Zeppelin maintenance log"
CONTENT = "Helium cells, canvas and the mooring mast."
QUERY = "zeppelin maintenance"


@dataclass
class Org:
    id: str
    owner: dict[str, str]
    published: str
    draft: str  # the owner's


@dataclass
class World:
    a: Org
    b: Org
    viewer: dict[str, str]  # of A
    member: dict[str, str]  # of A, with a draft of their own
    member_draft: str
    admin: dict[str, str]  # of A
    platform_admin: dict[str, str]


async def _org(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, vector: list[float]
) -> Org:
    owner, auth = await signed_in(app, db_session, client)
    org_id = (await create_org(client, auth))["id"]
    published = await insert_post(db_session, org_id, owner.id, TITLE, CONTENT)
    draft = await insert_post(db_session, org_id, owner.id, TITLE, CONTENT, published=False)
    for post_id in (published, draft):
        await insert_embedding(db_session, org_id, post_id, vector)
    return Org(org_id, auth, published, draft)


@pytest.fixture
async def world(app: FastAPI, db_session: AsyncSession, client: AsyncClient) -> World:
    [vector] = await app.state.services.embedder.embed([TITLE])
    a = await _org(app, db_session, client, vector)
    b = await _org(app, db_session, client, vector)
    _, viewer = await member(app, db_session, client, a.id, "viewer")
    writer, writer_auth = await member(app, db_session, client, a.id, "member")
    member_draft = await insert_post(db_session, a.id, writer.id, TITLE, CONTENT, published=False)
    await insert_embedding(db_session, a.id, member_draft, vector)
    _, admin = await member(app, db_session, client, a.id, "admin")
    _, platform_admin = await signed_in(app, db_session, client, admin=True)
    return World(a, b, viewer, writer_auth, member_draft, admin, platform_admin)


async def _found(client: AsyncClient, auth: dict[str, str], org_id: str, mode: str) -> set[str]:
    response = await client.get(
        search_path(org_id), headers=auth, params={"q": QUERY, "mode": mode}
    )
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


@pytest.mark.parametrize("mode", MODES)
async def test_each_role_finds_only_its_organizations_posts(
    client: AsyncClient, world: World, mode: str
) -> None:
    a = world.a
    everything = {a.published, a.draft, world.member_draft}
    assert await _found(client, world.viewer, a.id, mode) == {a.published}
    assert await _found(client, world.member, a.id, mode) == {a.published, world.member_draft}
    assert await _found(client, world.admin, a.id, mode) == everything
    assert await _found(client, a.owner, a.id, mode) == everything
    assert await _found(client, world.platform_admin, a.id, mode) == everything


@pytest.mark.parametrize("mode", MODES)
async def test_the_other_organization_sees_only_its_own(
    client: AsyncClient, world: World, mode: str
) -> None:
    b = world.b
    assert await _found(client, b.owner, b.id, mode) == {b.published, b.draft}
    assert await _found(client, world.platform_admin, b.id, mode) == {b.published, b.draft}


@pytest.mark.parametrize("mode", MODES)
async def test_non_members_get_404_for_another_organizations_search(
    client: AsyncClient, world: World, mode: str
) -> None:
    for auth in (world.a.owner, world.viewer, world.admin):
        response = await client.get(
            search_path(world.b.id), headers=auth, params={"q": QUERY, "mode": mode}
        )
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/problem+json"
    missing = await client.get(
        search_path(UUID(int=1)), headers=world.a.owner, params={"q": QUERY, "mode": mode}
    )
    assert missing.status_code == 404
    malformed = await client.get(
        search_path("not-an-id"), headers=world.a.owner, params={"q": QUERY, "mode": mode}
    )
    assert malformed.status_code == 422
    assert malformed.headers["content-type"] == "application/problem+json"


async def test_a_small_organization_among_a_large_one_is_searched_inside_the_hnsw_index(
    app: FastAPI, db_session: AsyncSession, test_database_url: str
) -> None:
    """B's 300 vectors are all nearer than A's 3: an HNSW scan that filtered only after
    its first candidates would find none of A's. The iterative scan goes on until it does;
    when max_scan_tuples stops it first, an exact scan of A's vectors answers instead."""
    dimension = app.state.settings.embedding_dimension
    rng = random.Random(15)  # noqa: S311 - test vectors, repeatable
    base = [rng.gauss(0, 1) for _ in range(dimension)]

    def near(spread: float) -> list[float]:
        return [x + rng.gauss(0, spread) for x in base]

    small = await make_user(app, db_session)
    large = await make_user(app, db_session)
    for _ in range(300):
        post_id = await insert_post(db_session, large.id, large.id, TITLE, CONTENT)
        await insert_embedding(db_session, large.id, post_id, near(0.01))
    own: set[str] = set()
    for _ in range(3):
        post_id = await insert_post(db_session, small.id, small.id, TITLE, CONTENT)
        await insert_embedding(db_session, small.id, post_id, near(0.5))
        own.add(post_id)
    await db_session.execute(text("ANALYZE app.posts, app.post_embeddings"))

    # Sorting switched off: the planner must take the HNSW index, as it would at scale.
    engine = create_async_engine(
        test_database_url,
        poolclass=NullPool,
        connect_args={"server_settings": {"enable_sort": "off", "enable_seqscan": "off"}},
    )
    reader = Reader(small.id, sees_drafts=False)
    params = {"tenant_id": small.id, "sees_drafts": False, "reader": small.id, "limit": 3}
    explain = text(f"EXPLAIN (ANALYZE, COSTS OFF) {repository.NEAREST_SQL}").bindparams(
        bindparam("query", type_=Vector())
    )
    try:
        async with AsyncSession(engine) as session:
            walked = await repository.semantic_ranking(
                session, small.id, reader, base, limit=3, ef_search=10, max_scan_tuples=20_000
            )
            plan = "\n".join(
                (
                    await session.scalars(
                        explain,
                        {**params, "query": base, "ef_search": "10", "max_scan_tuples": "20000"},
                    )
                ).all()
            )
            # A walk cut short (max_scan_tuples) before A's vectors: the exact scan answers.
            cut_short = await repository.semantic_ranking(
                session, small.id, reader, base, limit=3, ef_search=10, max_scan_tuples=20
            )
    finally:
        await engine.dispose()
    assert "ix_post_embeddings_hnsw" in plan, plan
    exact = plan[plan.index("CTE exact") :]  # the walk alone filled the page:
    [exact_scan] = [line for line in exact.splitlines() if " on post_embeddings " in line]
    assert "never executed" in exact_scan, plan  # the exact scan didn't run
    assert {str(post_id) for post_id, _ in walked} == own
    assert {str(post_id) for post_id, _ in cut_short} == own
