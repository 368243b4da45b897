"""Embedding posts: the `embed_posts` job handler and the backfill of missing vectors.

Posts are read and their vectors written per organization (`tenant_id`). Only the
functions named `..._all_tenants` look across organizations: the backfill's walk, and
jobs queued before migration 0014 (their payloads carry no tenant).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import Row, Select, and_, func, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from keel.config import Settings
from keel.core.db import Database
from keel.documents.embeddings import EMBED_DOCUMENTS, embed_documents_handler
from keel.embeddings import make_embedder
from keel.embeddings.base import Embedder
from keel.jobs.worker import Handler, JobRun, Worker
from keel.posts.models import Post
from keel.search.models import PostEmbedding

EMBED_POSTS = "embed_posts"  # the job kind the posts triggers queue (migrations 0005, 0014)
EMBED_BATCH = 32  # posts per job, as the triggers queue them


def post_text(title: str, content: str) -> str:
    """What is embedded: the title, then the content (the model reads 256 tokens)."""
    return f"{title}\n\n{content}"


@dataclass(frozen=True, slots=True)
class PostText:
    """A post as it was read for embedding; `updated_at` detects a rewording since."""

    tenant_id: UUID
    id: UUID
    text: str
    updated_at: datetime | None


def _texts(rows: Iterable[Row[UUID, UUID, str, str, datetime | None]]) -> list[PostText]:
    return [PostText(t, id_, post_text(title, body), at) for t, id_, title, body, at in rows]


_POST_TEXT = (col(Post.tenant_id), col(Post.id), col(Post.title), col(Post.content))


async def load_posts(
    session: AsyncSession, tenant_id: UUID, post_ids: Sequence[UUID]
) -> list[PostText]:
    """The organization's texts to embed; ids of posts deleted meanwhile are skipped."""
    rows = await session.execute(
        select(*_POST_TEXT, col(Post.updated_at)).where(
            col(Post.tenant_id) == tenant_id, col(Post.id).in_(post_ids)
        )
    )
    return _texts(rows)


async def load_posts_all_tenants(session: AsyncSession, post_ids: Sequence[UUID]) -> list[PostText]:
    """Posts by id in any organization: for jobs queued before payloads named theirs."""
    rows = await session.execute(
        select(*_POST_TEXT, col(Post.updated_at)).where(col(Post.id).in_(post_ids))
    )
    return _texts(rows)


async def store_embeddings(
    session: AsyncSession,
    embedder: Embedder,
    tenant_id: UUID,
    posts: Sequence[PostText],
    vectors: list[list[float]],
) -> int:
    """Upsert the vectors of the organization's posts unchanged since they were read."""
    if not posts:
        return 0
    if any(post.tenant_id != tenant_id for post in posts):
        raise ValueError("store_embeddings takes the posts of one organization")
    unchanged = select(col(Post.id)).where(
        col(Post.tenant_id) == tenant_id,
        tuple_(col(Post.id), col(Post.updated_at)).in_([(p.id, p.updated_at) for p in posts]),
    )
    kept = set((await session.scalars(unchanged)).all())  # a reworded post has a newer job
    values = [
        {"tenant_id": tenant_id, "post_id": post.id, "embedding": vector, "model": embedder.name}
        for post, vector in zip(posts, vectors, strict=True)
        if post.id in kept
    ]
    if not values:
        return 0
    statement = insert(PostEmbedding).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=[col(PostEmbedding.tenant_id), col(PostEmbedding.post_id)],
        set_={
            "embedding": statement.excluded.embedding,
            "model": statement.excluded.model,
            "embedded_at": func.now(),
        },
    )
    await session.execute(statement)
    return len(values)


def _uuid(value: object, what: str) -> UUID:
    try:
        return UUID(str(value))
    except ValueError:
        raise ValueError(f"embed_posts payload: {what} is not a UUID") from None


def embed_posts_handler(embedder: Embedder) -> Handler:
    async def handle(run: JobRun, payload: dict[str, object]) -> None:
        ids = payload.get("post_ids")
        if not isinstance(ids, list):
            raise ValueError("embed_posts payload needs a post_ids list")
        post_ids = [_uuid(post_id, "a post id") for post_id in ids]
        tenant = payload.get("tenant_id")
        async with run.read() as session:
            if tenant is None:  # queued before migration 0014
                posts = await load_posts_all_tenants(session, post_ids)
            else:
                posts = await load_posts(session, _uuid(tenant, "tenant_id"), post_ids)
        if not posts:
            return
        # No connection is held while the model runs.
        vectors = await embedder.embed([post.text for post in posts])
        by_tenant: dict[UUID, list[tuple[PostText, list[float]]]] = {}
        for post, vector in zip(posts, vectors, strict=True):
            by_tenant.setdefault(post.tenant_id, []).append((post, vector))
        async with run.write() as session:
            for tenant_id, pairs in by_tenant.items():
                texts, batch = zip(*pairs, strict=True)
                await store_embeddings(session, embedder, tenant_id, texts, list(batch))

    return handle


def _missing() -> Select[UUID, UUID]:
    return (
        select(col(Post.tenant_id), col(Post.id))
        .outerjoin(
            PostEmbedding,
            and_(
                col(PostEmbedding.tenant_id) == col(Post.tenant_id),
                col(PostEmbedding.post_id) == col(Post.id),
            ),
        )
        .where(col(PostEmbedding.post_id).is_(None))
    )


async def count_missing_all_tenants(session: AsyncSession) -> int:
    """Posts without a vector, in every organization (the backfill's progress bar)."""
    counted: Select[int] = select(func.count()).select_from(_missing().subquery())
    return int(await session.scalar(counted) or 0)


async def tenants_missing_all_tenants(session: AsyncSession) -> list[UUID]:
    """The organizations that have posts without a vector."""
    missing = _missing().subquery()
    statement = select(missing.c.tenant_id).distinct().order_by(missing.c.tenant_id)
    return list((await session.scalars(statement)).all())


async def missing_post_ids(session: AsyncSession, tenant_id: UUID, limit: int) -> list[UUID]:
    """Up to `limit` of the organization's posts without a vector."""
    missing = _missing().where(col(Post.tenant_id) == tenant_id).order_by(col(Post.id)).limit(limit)
    return [post_id for _, post_id in (await session.execute(missing)).all()]


# The jobs the posts trigger would have queued for the posts without a vector: one batch
# never mixes organizations, each job carries its tenant (payload and jobs.tenant_id).
_QUEUE_MISSING = text(
    """
    INSERT INTO app.jobs (id, kind, payload, tenant_id)
    SELECT gen_random_uuid(), :kind,
           jsonb_build_object('tenant_id', tenant_id, 'post_ids', jsonb_agg(id ORDER BY id)),
           tenant_id
    FROM (SELECT p.tenant_id, p.id,
                 (row_number() OVER (PARTITION BY p.tenant_id ORDER BY p.id) - 1) / :batch
                     AS batch
          FROM app.posts AS p
          WHERE NOT EXISTS (SELECT FROM app.post_embeddings AS e
                            WHERE e.tenant_id = p.tenant_id AND e.post_id = p.id)) AS missing
    GROUP BY tenant_id, batch
    """
)


async def queue_missing_all_tenants(session: AsyncSession, batch: int) -> int:
    """Queue `embed_posts` jobs of up to `batch` posts for every post without a vector,
    per organization, for the workers. Returns how many jobs."""
    result = await session.execute(_QUEUE_MISSING, {"kind": EMBED_POSTS, "batch": batch})
    return int(getattr(result, "rowcount", 0) or 0)


def embedder_for(settings: Settings) -> Embedder:
    """The embedder the settings choose; its dimension must be the migrated one."""
    api_key = settings.embeddings_api_key
    embedder = make_embedder(
        settings.embedder,
        url=settings.embeddings_url,
        model=settings.embeddings_model,
        api_key=api_key.get_secret_value() if api_key else None,
        dimension=settings.embedding_dimension,
        timeout=settings.embeddings_timeout_seconds,
        threads=settings.embedding_threads,
    )
    if embedder.dimension != settings.embedding_dimension:
        raise ValueError(
            f"EMBEDDER={settings.embedder} makes {embedder.dimension}-dimensional vectors, "
            f"but EMBEDDING_DIMENSION is {settings.embedding_dimension}."
        )
    return embedder


def worker_for(settings: Settings, database: Database, embedder: Embedder) -> Worker:
    """A job worker that knows every job kind Keel queues."""
    return Worker(
        database,
        {
            EMBED_POSTS: embed_posts_handler(embedder),
            EMBED_DOCUMENTS: embed_documents_handler(embedder),
        },
        batch=settings.worker_batch,
        poll_seconds=settings.worker_poll_seconds,
        lease_seconds=settings.job_lease_seconds,
    )
