"""Semantic and hybrid search: embed the query, rank both ways, fuse, load the page."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from keel.config import Settings
from keel.core.viewer import Viewer
from keel.embeddings.base import Embedder
from keel.search import repository

search_statement = repository.search_statement  # for EXPLAIN of the app's own queries


async def search_posts(
    session: AsyncSession,
    embedder: Embedder,
    settings: Settings,
    viewer: Viewer,
    query: str,
    *,
    weights: tuple[float, float] | None,
    limit: int,
    offset: int,
) -> list[repository.PostHit]:
    """Keyword search (`weights` None), or fused keyword and semantic rankings."""
    if not query:
        return []
    if weights is None:
        return await repository.search_posts(
            session, viewer, query, config=settings.search_config, limit=limit, offset=offset
        )
    return await fused_search(
        session, embedder, settings, viewer, query, weights=weights, limit=limit, offset=offset
    )


async def fused_search(
    session: AsyncSession,
    embedder: Embedder,
    settings: Settings,
    viewer: Viewer,
    query: str,
    *,
    weights: tuple[float, float],
    limit: int,
    offset: int,
) -> list[repository.PostHit]:
    """Posts ranked by reciprocal rank fusion of the keyword and semantic rankings.

    A zero weight skips that ranking (semantic mode is keyword weight 0). Posts not yet
    embedded still come through the keyword ranking.
    """
    keyword_weight, semantic_weight = weights
    candidates = settings.hybrid_candidates
    keyword = (
        await repository.keyword_ranking(
            session, viewer, query, config=settings.search_config, limit=candidates
        )
        if keyword_weight
        else []
    )
    semantic: list[tuple[UUID, float]] = []
    if semantic_weight:
        [vector] = await embedder.embed([query])
        semantic = await repository.semantic_ranking(
            session, viewer, vector, limit=candidates, ef_search=candidates
        )
    fused = repository.fuse(
        keyword,
        semantic,
        rrf_k=settings.hybrid_rrf_k,
        keyword_weight=keyword_weight,
        semantic_weight=semantic_weight,
    )
    page = fused[offset : offset + limit]
    return await repository.hits_for(session, page, query, config=settings.search_config)
