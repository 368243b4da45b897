"""Search over an organization's posts: keyword, or keyword and semantic rankings fused.

Every search first requires `Permission.SEARCH` (every role holds it), then runs inside
the active organization: its published posts, the caller's own drafts, and every draft
for those who may edit any post (admins, owners, platform admins).
"""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from keel.config import Settings
from keel.embeddings.base import Embedder
from keel.orgs.permissions import OrgActor, Permission
from keel.posts.models import Post
from keel.posts.queries import sees_drafts
from keel.search import repository
from keel.search.repository import Reader as Reader  # re-exported


def reader_for(actor: OrgActor) -> Reader:
    """The caller as search sees them, by the posts' own rule for drafts."""
    return Reader(actor.user_id, sees_drafts=sees_drafts(actor))


def search_statement(
    actor: OrgActor, query: str, *, config: str, limit: int, offset: int
) -> Select[Post, float, str, str]:
    """The keyword search statement in `actor`'s organization (for EXPLAIN of the app's own
    queries)."""
    return repository.search_statement(
        actor.organization_id, reader_for(actor), query, config=config, limit=limit, offset=offset
    )


async def search_posts(
    session: AsyncSession,
    embedder: Embedder,
    settings: Settings,
    actor: OrgActor,
    query: str,
    *,
    weights: tuple[float, float] | None,
    limit: int,
    offset: int,
) -> list[repository.PostHit]:
    """Keyword search (`weights` None), or fused keyword and semantic rankings."""
    actor.require(Permission.SEARCH)
    if not query:
        return []
    tenant_id, reader = actor.organization_id, reader_for(actor)
    if weights is None:
        return await repository.search_posts(
            session,
            tenant_id,
            reader,
            query,
            config=settings.search_config,
            limit=limit,
            offset=offset,
        )
    return await fused_search(
        session,
        embedder,
        settings,
        tenant_id,
        reader,
        query,
        weights=weights,
        limit=limit,
        offset=offset,
    )


async def fused_search(
    session: AsyncSession,
    embedder: Embedder,
    settings: Settings,
    tenant_id: UUID,
    reader: Reader,
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
    config = settings.search_config
    keyword = (
        await repository.keyword_ranking(
            session, tenant_id, reader, query, config=config, limit=candidates
        )
        if keyword_weight
        else []
    )
    semantic: list[tuple[UUID, float]] = []
    if semantic_weight:
        [vector] = await embedder.embed([query])
        semantic = await repository.semantic_ranking(
            session,
            tenant_id,
            reader,
            vector,
            limit=candidates,
            ef_search=candidates,
            max_scan_tuples=settings.hnsw_max_scan_tuples,
        )
    fused = repository.fuse(
        keyword,
        semantic,
        rrf_k=settings.hybrid_rrf_k,
        keyword_weight=keyword_weight,
        semantic_weight=semantic_weight,
    )
    page = fused[offset : offset + limit]
    return await repository.hits_for(session, tenant_id, reader, page, query, config=config)
