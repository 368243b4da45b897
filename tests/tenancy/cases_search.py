"""Walk cases for `keel.search.repository` and `keel.search.embeddings`.

Both organizations hold twin posts (same titles) and, here, the same vector for every
post, so a missing tenant filter in the GIN scan, the HNSW scan or a join would show.
"""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import text

from keel.search import embeddings, repository
from keel.search.repository import Fused, Reader
from tests.tenancy.walk import World, case

VECTOR_TEXT = "twin"


async def _vector(world: World) -> list[float]:
    [vector] = await world.app.state.services.embedder.embed([VECTOR_TEXT])
    return list(vector)


async def _embed_everything(world: World) -> list[float]:
    """The same vector for every post of both organizations."""
    vector = await _vector(world)
    await world.session.execute(
        text(
            "INSERT INTO app.post_embeddings (tenant_id, post_id, embedding, model)"
            " SELECT tenant_id, id, CAST(:v AS vector), 'walk' FROM app.posts"
            " WHERE tenant_id IN (:a, :b)"
        ),
        {"v": str(vector), "a": world.a.id, "b": world.b.id},
    )
    return vector


def _reader(world: World) -> Reader:
    return Reader(world.a.actor.user_id, sees_drafts=True)


@case(repository.search_posts)
async def _search_posts(world: World) -> set[UUID]:
    hits = await repository.search_posts(
        world.session, world.a.id, _reader(world), "twin", config="english", limit=100, offset=0
    )
    found = {hit.post.id for hit in hits}
    assert found == set(world.a.rows["posts"])  # the walk sees the filter, not an empty read
    return found


@case(repository.keyword_ranking)
async def _keyword_ranking(world: World) -> set[UUID]:
    return set(
        await repository.keyword_ranking(
            world.session, world.a.id, _reader(world), "twin", config="english", limit=100
        )
    )


@case(repository.semantic_ranking)
async def _semantic_ranking(world: World) -> set[UUID]:
    vector = await _embed_everything(world)
    ranking = await repository.semantic_ranking(
        world.session,
        world.a.id,
        _reader(world),
        vector,
        limit=100,
        ef_search=100,
        max_scan_tuples=20_000,
    )
    found = {post_id for post_id, _ in ranking}
    assert found == set(world.a.rows["posts"])
    return found


@case(repository.hits_for)
async def _hits_for(world: World) -> set[UUID]:
    asked = [Fused(post_id, 1.0, None) for post_id in world.a.rows["posts"] + list(world.b.ids())]
    hits = await repository.hits_for(
        world.session, world.a.id, _reader(world), asked, "twin", config="english"
    )
    return {hit.post.id for hit in hits}


@case(embeddings.load_posts)
async def _load_posts(world: World) -> set[UUID]:
    asked = world.a.rows["posts"] + list(world.b.ids())
    return {post.id for post in await embeddings.load_posts(world.session, world.a.id, asked)}


@case(embeddings.store_embeddings)
async def _store_embeddings(world: World) -> set[UUID]:
    embedder = world.app.state.services.embedder
    posts = await embeddings.load_posts(world.session, world.a.id, world.a.rows["posts"])
    vectors = await embedder.embed([post.text for post in posts])
    stored = await embeddings.store_embeddings(world.session, embedder, world.a.id, posts, vectors)
    assert stored == len(posts)
    rows = await world.session.execute(text("SELECT tenant_id, post_id FROM app.post_embeddings"))
    assert {tenant for tenant, _ in rows} == {world.a.id}
    return {post.id for post in posts}


@case(embeddings.missing_post_ids)
async def _missing_post_ids(world: World) -> set[UUID]:
    return set(await embeddings.missing_post_ids(world.session, world.a.id, 100))
