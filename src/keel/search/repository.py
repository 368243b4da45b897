"""Full-text search over posts, served by the GIN index on `app.posts.search`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Float, Select, cast, func, literal, select
from sqlalchemy.dialects.postgresql import REGCONFIG
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from keel.posts.models import Post
from keel.posts.repository import READ_OPTIONS, visible_to
from keel.users.models import User

MARKS = "StartSel=<mark>, StopSel=</mark>"
TITLE_HEADLINE = f"{MARKS}, HighlightAll=true"
SNIPPET_HEADLINE = f'{MARKS}, MaxWords=35, MinWords=15, MaxFragments=2, FragmentDelimiter=" … "'


@dataclass(frozen=True, slots=True)
class PostHit:
    post: Post
    rank: float
    title_highlight: str
    snippet: str


def _html_escaped(column: Any) -> ColumnElement[str]:
    """Escape before highlighting, so the only markup in a snippet is our <mark>."""
    escaped = func.replace(func.replace(column, "&", "&amp;"), "<", "&lt;")
    return func.replace(escaped, ">", "&gt;")


def search_statement(
    viewer: User, query: str, *, config: str, limit: int, offset: int
) -> Select[Post, float, str, str]:
    """Ranked by ts_rank_cd, newest first on ties; headlines only for the returned page."""
    regconfig = cast(literal(config), REGCONFIG)
    tsquery = func.websearch_to_tsquery(regconfig, query)
    rank = func.ts_rank_cd(col(Post.search), tsquery, 32).label("rank")  # 32: rank/(rank+1)
    ranked = (
        select(col(Post.id).label("id"), rank, col(Post.created_at).label("created_at"))
        .where(
            func.numnode(tsquery) > 0,  # empty or all-stopword queries match nothing
            col(Post.search).op("@@")(tsquery),
            visible_to(viewer),
        )
        .order_by(rank.desc(), col(Post.created_at).desc(), col(Post.id).desc())
        .limit(limit)
        .offset(offset)
        .subquery()
    )
    return (
        select(
            Post,
            cast(ranked.c.rank, Float),
            func.ts_headline(regconfig, _html_escaped(col(Post.title)), tsquery, TITLE_HEADLINE),
            func.ts_headline(
                regconfig, _html_escaped(col(Post.content)), tsquery, SNIPPET_HEADLINE
            ),
        )
        .join(ranked, ranked.c.id == col(Post.id))
        .options(*READ_OPTIONS)
        .order_by(ranked.c.rank.desc(), ranked.c.created_at.desc(), ranked.c.id.desc())
    )


async def search_posts(
    session: AsyncSession, viewer: User, query: str, *, config: str, limit: int, offset: int
) -> list[PostHit]:
    statement = search_statement(viewer, query, config=config, limit=limit, offset=offset)
    rows = (await session.execute(statement)).unique().all()
    return [PostHit(post, float(r), str(title), str(snippet)) for post, r, title, snippet in rows]
