"""Search over posts: full text (the GIN index on `app.posts.search`), semantic (the HNSW
index on `app.post_embeddings`) and both fused by reciprocal rank."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from pgvector.sqlalchemy import Vector
from sqlalchemy import ColumnElement, Float, Select, bindparam, cast, func, literal, select, text
from sqlalchemy.dialects.postgresql import REGCONFIG
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from keel.core.viewer import Viewer
from keel.posts.models import Post
from keel.posts.queries import READ_OPTIONS, visible_to

MARKS = "StartSel=<mark>, StopSel=</mark>"
TITLE_HEADLINE = f"{MARKS}, HighlightAll=true"
SNIPPET_HEADLINE = f'{MARKS}, MaxWords=35, MinWords=15, MaxFragments=2, FragmentDelimiter=" … "'


@dataclass(frozen=True, slots=True)
class PostHit:
    post: Post
    rank: float
    title_highlight: str
    snippet: str
    distance: float | None = None  # cosine distance, when the post was a semantic match


def _html_escaped(column: Any) -> ColumnElement[str]:
    """Escape before highlighting, so the only markup in a snippet is our <mark>."""
    escaped = func.replace(func.replace(column, "&", "&amp;"), "<", "&lt;")
    return func.replace(escaped, ">", "&gt;")


def _tsquery(query: str, config: str) -> tuple[Any, Any]:
    regconfig = cast(literal(config), REGCONFIG)
    return regconfig, func.websearch_to_tsquery(regconfig, query)


def _ranked_matches(viewer: Viewer, tsquery: Any) -> Select[UUID, float, datetime]:
    """Visible posts matching `tsquery`, best first (ts_rank_cd), newest first on ties."""
    rank = func.ts_rank_cd(col(Post.search), tsquery, 32).label("rank")  # 32: rank/(rank+1)
    return (
        select(col(Post.id).label("id"), rank, col(Post.created_at).label("created_at"))
        .where(
            func.numnode(tsquery) > 0,  # empty or all-stopword queries match nothing
            col(Post.search).op("@@")(tsquery),
            visible_to(viewer),
        )
        .order_by(rank.desc(), col(Post.created_at).desc(), col(Post.id).desc())
    )


def search_statement(
    viewer: Viewer, query: str, *, config: str, limit: int, offset: int
) -> Select[Post, float, str, str]:
    """Ranked by ts_rank_cd, newest first on ties; headlines only for the returned page."""
    regconfig, tsquery = _tsquery(query, config)
    ranked = _ranked_matches(viewer, tsquery).limit(limit).offset(offset).subquery()
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
    session: AsyncSession, viewer: Viewer, query: str, *, config: str, limit: int, offset: int
) -> list[PostHit]:
    statement = search_statement(viewer, query, config=config, limit=limit, offset=offset)
    rows = (await session.execute(statement)).unique().all()
    return [PostHit(post, float(r), str(title), str(snippet)) for post, r, title, snippet in rows]


# --- semantic and hybrid ----------------------------------------------------------------

_NEAREST = text(
    """
    WITH nearest AS MATERIALIZED (
        SELECT e.post_id, e.embedding <=> :query AS distance
        FROM app.post_embeddings e JOIN app.posts p ON p.id = e.post_id
        WHERE :everything OR p.is_published OR p.author_id = :viewer
        ORDER BY e.embedding <=> :query
        LIMIT :limit
    )
    SELECT post_id, distance FROM nearest ORDER BY distance, post_id
    """
).bindparams(bindparam("query", type_=Vector()))


async def semantic_ranking(
    session: AsyncSession, viewer: Viewer, vector: list[float], *, limit: int, ef_search: int
) -> list[tuple[UUID, float]]:
    """The `limit` visible posts nearest to `vector` (cosine distance), nearest first.

    The HNSW scan is iterative (pgvector 0.8), so posts the viewer may not see don't leave
    the page short; relaxed order is re-sorted by the outer query. Both settings are
    SET LOCAL: they end with the transaction.
    """
    await session.execute(
        text(
            "SELECT set_config('hnsw.ef_search', :ef, true),"
            " set_config('hnsw.iterative_scan', 'relaxed_order', true)"
        ),
        {"ef": str(max(ef_search, limit))},
    )
    rows = await session.execute(
        _NEAREST,
        {
            "query": vector,
            "everything": viewer.is_superuser,
            "viewer": viewer.user_id,
            "limit": limit,
        },
    )
    return [(row.post_id, float(row.distance)) for row in rows]


async def keyword_ranking(
    session: AsyncSession, viewer: Viewer, query: str, *, config: str, limit: int
) -> list[UUID]:
    """The ids of the `limit` best full-text matches, best first."""
    _, tsquery = _tsquery(query, config)
    ranked = _ranked_matches(viewer, tsquery).limit(limit).subquery()
    return list((await session.scalars(select(ranked.c.id))).all())


@dataclass(frozen=True, slots=True)
class Fused:
    post_id: UUID
    score: float
    distance: float | None


def fuse(
    keyword: list[UUID],
    semantic: list[tuple[UUID, float]],
    *,
    rrf_k: int,
    keyword_weight: float,
    semantic_weight: float,
) -> list[Fused]:
    """Reciprocal rank fusion: score = Σ weight / (rrf_k + rank), ranks from 1."""
    scores: dict[UUID, float] = {}
    for rank, post_id in enumerate(keyword, start=1):
        scores[post_id] = scores.get(post_id, 0.0) + keyword_weight / (rrf_k + rank)
    distances = dict(semantic)
    for rank, (post_id, _) in enumerate(semantic, start=1):
        scores[post_id] = scores.get(post_id, 0.0) + semantic_weight / (rrf_k + rank)
    ordered = sorted(scores.items(), key=lambda item: (-item[1], str(item[0])))
    return [Fused(post_id, score, distances.get(post_id)) for post_id, score in ordered]


async def hits_for(
    session: AsyncSession, fused: list[Fused], query: str, *, config: str
) -> list[PostHit]:
    """Load the posts of a fused ranking, in its order, with highlights for `query`."""
    if not fused:
        return []
    regconfig, tsquery = _tsquery(query, config)
    statement = (
        select(
            Post,
            func.ts_headline(regconfig, _html_escaped(col(Post.title)), tsquery, TITLE_HEADLINE),
            func.ts_headline(
                regconfig, _html_escaped(col(Post.content)), tsquery, SNIPPET_HEADLINE
            ),
        )
        .where(col(Post.id).in_([hit.post_id for hit in fused]))
        .options(*READ_OPTIONS)
    )
    rows = {
        post.id: (post, title, snippet)
        for post, title, snippet in (await session.execute(statement)).unique().all()
    }
    return [
        PostHit(
            rows[hit.post_id][0],
            hit.score,
            str(rows[hit.post_id][1]),
            str(rows[hit.post_id][2]),
            hit.distance,
        )
        for hit in fused
        if hit.post_id in rows
    ]
