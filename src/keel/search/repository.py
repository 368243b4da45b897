"""Search over one organization's posts: full text (the GIN index on
`app.posts (tenant_id, search)`), semantic (the HNSW index on `app.post_embeddings`,
filtered by tenant inside the scan) and both fused by reciprocal rank.

Every statement takes the organization (`tenant_id`) and filters by it, and a `Reader`
(who searches, and whether they see every draft) for the visibility rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    and_,
    bindparam,
    cast,
    func,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import REGCONFIG
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from keel.posts.models import Post
from keel.posts.queries import READ_OPTIONS

MARKS = "StartSel=<mark>, StopSel=</mark>"
TITLE_HEADLINE = f"{MARKS}, HighlightAll=true"
SNIPPET_HEADLINE = f'{MARKS}, MaxWords=35, MinWords=15, MaxFragments=2, FragmentDelimiter=" … "'


@dataclass(frozen=True, slots=True)
class Reader:
    """Who searches an organization: their own drafts match, every draft if `sees_drafts`."""

    user_id: UUID
    sees_drafts: bool


def visible(tenant_id: UUID, reader: Reader) -> ColumnElement[bool]:
    """The organization's published posts, plus the reader's drafts (all, for editors)."""
    in_tenant = col(Post.tenant_id) == tenant_id
    if reader.sees_drafts:
        return in_tenant
    return and_(
        in_tenant, or_(col(Post.is_published).is_(True), col(Post.author_id) == reader.user_id)
    )


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


def _ranked_matches(tenant_id: UUID, reader: Reader, tsquery: Any) -> Select[UUID, float, datetime]:
    """Visible posts matching `tsquery`, best first (ts_rank_cd), newest first on ties.

    `tenant_id = $t AND search @@ $q` is one scan of the (tenant_id, search) GIN index.
    """
    rank = func.ts_rank_cd(col(Post.search), tsquery, 32).label("rank")  # 32: rank/(rank+1)
    return (
        select(col(Post.id).label("id"), rank, col(Post.created_at).label("created_at"))
        .where(
            func.numnode(tsquery) > 0,  # empty or all-stopword queries match nothing
            col(Post.search).op("@@")(tsquery),
            visible(tenant_id, reader),
        )
        .order_by(rank.desc(), col(Post.created_at).desc(), col(Post.id).desc())
    )


def search_statement(
    tenant_id: UUID, reader: Reader, query: str, *, config: str, limit: int, offset: int
) -> Select[Post, float, str, str]:
    """Ranked by ts_rank_cd, newest first on ties; headlines only for the returned page."""
    regconfig, tsquery = _tsquery(query, config)
    ranked = _ranked_matches(tenant_id, reader, tsquery).limit(limit).offset(offset).subquery()
    return (
        select(
            Post,
            cast(ranked.c.rank, Float),
            func.ts_headline(regconfig, _html_escaped(col(Post.title)), tsquery, TITLE_HEADLINE),
            func.ts_headline(
                regconfig, _html_escaped(col(Post.content)), tsquery, SNIPPET_HEADLINE
            ),
        )
        .join(ranked, and_(col(Post.tenant_id) == tenant_id, col(Post.id) == ranked.c.id))
        .options(*READ_OPTIONS)
        .order_by(ranked.c.rank.desc(), ranked.c.created_at.desc(), ranked.c.id.desc())
    )


async def search_posts(
    session: AsyncSession,
    tenant_id: UUID,
    reader: Reader,
    query: str,
    *,
    config: str,
    limit: int,
    offset: int,
) -> list[PostHit]:
    statement = search_statement(
        tenant_id, reader, query, config=config, limit=limit, offset=offset
    )
    rows = (await session.execute(statement)).unique().all()
    return [PostHit(post, float(r), str(title), str(snippet)) for post, r, title, snippet in rows]


# --- semantic and hybrid ----------------------------------------------------------------

# One statement. The InitPlan sets the scan's parameters (SET LOCAL, they end with the
# transaction) before the HNSW scan starts, which is lazily, at its first row. The tenant
# filter runs inside the scan: iterative (pgvector 0.8), it goes on past other tenants'
# vectors until `limit` rows pass or hnsw.max_scan_tuples index tuples were read. Only
# when that leaves the page short does `exact` run (its gate is an InitPlan too): the
# organization's own vectors, through the primary key, all compared (`+ 0` keeps the
# index out). Small organizations get that plan from the planner to begin with. Relaxed
# order is re-sorted outside; MATERIALIZED and `+ 0` stop the planner assuming an order.
_SCOPE = """
        FROM app.post_embeddings AS e
        JOIN app.posts AS p ON p.tenant_id = e.tenant_id AND p.id = e.post_id
        WHERE e.tenant_id = :tenant_id
          AND (:sees_drafts OR p.is_published OR p.author_id = :reader)"""
NEAREST_SQL = f"""
    WITH nearest AS MATERIALIZED (
        SELECT e.post_id, e.embedding <=> :query AS distance {_SCOPE}
          AND (SELECT set_config('hnsw.ef_search', :ef_search, true)
                   || set_config('hnsw.iterative_scan', 'relaxed_order', true)
                   || set_config('hnsw.max_scan_tuples', :max_scan_tuples, true)) IS NOT NULL
        ORDER BY e.embedding <=> :query
        LIMIT :limit
    ), exact AS MATERIALIZED (
        SELECT e.post_id, e.embedding <=> :query AS distance {_SCOPE}
          AND (SELECT count(*) FROM nearest) < :limit
        ORDER BY (e.embedding <=> :query) + 0
        LIMIT :limit
    )
    SELECT post_id, distance FROM (
        SELECT post_id, distance FROM nearest WHERE NOT EXISTS (SELECT FROM exact)
        UNION ALL
        SELECT post_id, distance FROM exact
    ) AS found
    ORDER BY distance + 0, post_id
"""  # noqa: S608 - built from the constants above; every value is a bound parameter
_NEAREST = text(NEAREST_SQL).bindparams(bindparam("query", type_=Vector()))


async def semantic_ranking(
    session: AsyncSession,
    tenant_id: UUID,
    reader: Reader,
    vector: list[float],
    *,
    limit: int,
    ef_search: int,
    max_scan_tuples: int,
) -> list[tuple[UUID, float]]:
    """The `limit` visible posts of the organization nearest to `vector` (cosine distance),
    nearest first, in one round trip (an exact scan of the organization's vectors when the
    HNSW walk ends short)."""
    rows = await session.execute(
        _NEAREST,
        {
            "query": vector,
            "ef_search": str(max(ef_search, limit)),
            "max_scan_tuples": str(max_scan_tuples),
            "tenant_id": tenant_id,
            "sees_drafts": reader.sees_drafts,
            "reader": reader.user_id,
            "limit": limit,
        },
    )
    return [(row.post_id, float(row.distance)) for row in rows]


async def keyword_ranking(
    session: AsyncSession, tenant_id: UUID, reader: Reader, query: str, *, config: str, limit: int
) -> list[UUID]:
    """The ids of the organization's `limit` best full-text matches, best first."""
    _, tsquery = _tsquery(query, config)
    ranked = _ranked_matches(tenant_id, reader, tsquery).limit(limit).subquery()
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
    session: AsyncSession,
    tenant_id: UUID,
    reader: Reader,
    fused: list[Fused],
    query: str,
    *,
    config: str,
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
        .where(visible(tenant_id, reader), col(Post.id).in_([hit.post_id for hit in fused]))
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
