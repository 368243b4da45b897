"""Search: `/api/v1/search`. Web-style queries ("quotes", or, -exclusion), ranked."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from keel.auth.deps import SIGNED_IN_ERRORS, CurrentUser, SettingsDep
from keel.core.db import SessionDep
from keel.core.routing import KeelRouter
from keel.posts.schemas import PostPublic, PostSearchHit, PostSearchPage
from keel.search import repository

router = KeelRouter(prefix="/search", tags=["search"])

MAX_QUERY = 1000
MAX_LIMIT = 100
MAX_OFFSET = 10_000
AUTH = SIGNED_IN_ERRORS


@router.get(
    "/posts",
    response_model=PostSearchPage,
    responses=AUTH,
    summary="Full-text search over the posts you can see",
)
async def search_posts(
    session: SessionDep,
    user: CurrentUser,
    settings: SettingsDep,
    q: Annotated[
        str,
        Query(
            max_length=MAX_QUERY,
            description='Web search syntax: words, "a phrase", or, -excluded.',
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Any:
    query = q.replace("\x00", "").strip()  # PostgreSQL text can't hold NUL
    hits = (
        await repository.search_posts(
            session, user, query, config=settings.search_config, limit=limit, offset=offset
        )
        if query
        else []
    )
    items = [
        PostSearchHit(
            **PostPublic.model_validate(hit.post).model_dump(),
            rank=hit.rank,
            title_highlight=hit.title_highlight,
            snippet=hit.snippet,
        )
        for hit in hits
    ]
    return PostSearchPage(items=items, limit=limit, offset=offset, query=query)
