"""Search: `/api/v1/orgs/{org_id}/search`, over the active organization's posts.

Web-style queries ("quotes", or, -exclusion), ranked; semantic and hybrid modes too.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from fastapi import Query, Request

from keel.core.db import TransactionDep
from keel.core.deps import SIGNED_IN_ERRORS, ServicesDep
from keel.core.routing import KeelRouter, Responses
from keel.orgs.deps import ORG_ERRORS, ActiveOrg
from keel.posts.schemas import PostPublic, PostSearchHit, PostSearchPage
from keel.search import service

router = KeelRouter(prefix="/orgs/{org_id}/search", tags=["search"])

MAX_QUERY = 1000
MAX_LIMIT = 100
MAX_OFFSET = 10_000
AUTH: Responses = {**SIGNED_IN_ERRORS, **ORG_ERRORS}
MAX_WEIGHT = 10.0


class Mode(StrEnum):
    KEYWORD = "keyword"  # full text: every word must match (web syntax)
    SEMANTIC = "semantic"  # nearest post embeddings to the query's embedding
    HYBRID = "hybrid"  # both rankings fused by reciprocal rank


@router.get(
    "/posts",
    response_model=PostSearchPage,
    responses=AUTH,
    summary="Keyword, semantic or hybrid search over the organization's posts you can see",
)
async def search_posts(
    request: Request,
    session: TransactionDep,
    actor: ActiveOrg,
    services: ServicesDep,
    q: Annotated[
        str,
        Query(
            max_length=MAX_QUERY,
            description='Web search syntax: words, "a phrase", or, -excluded.',
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    mode: Annotated[
        Mode,
        Query(
            description="keyword (full text), semantic (meaning, via embeddings) or hybrid "
            "(both, fused by reciprocal rank). Semantic and hybrid rank the top "
            "HYBRID_CANDIDATES of each ranking: pages end there."
        ),
    ] = Mode.KEYWORD,
    keyword_weight: Annotated[float, Query(ge=0, le=MAX_WEIGHT)] = 1.0,
    semantic_weight: Annotated[float, Query(ge=0, le=MAX_WEIGHT)] = 1.0,
) -> Any:
    query = q.replace("\x00", "").strip()  # PostgreSQL text can't hold NUL
    if mode is Mode.KEYWORD:
        weights = None
    elif mode is Mode.SEMANTIC:
        weights = (0.0, 1.0)
    else:
        weights = (keyword_weight, semantic_weight)
    hits = await service.search_posts(
        session,
        services.embedder,
        services.settings,
        actor,
        query,
        weights=weights,
        limit=limit,
        offset=offset,
    )
    items = [
        PostSearchHit(
            **PostPublic.model_validate(hit.post).model_dump(),
            rank=hit.rank,
            title_highlight=hit.title_highlight,
            snippet=hit.snippet,
            distance=hit.distance,
        )
        for hit in hits
    ]
    return PostSearchPage(items=items, limit=limit, offset=offset, query=query)
