"""Embedding posts: the `embed_posts` job handler and the backfill of missing vectors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import Select, func, select, tuple_
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

EMBED_POSTS = "embed_posts"  # the job kind the posts triggers queue (migration 0005)


def post_text(title: str, content: str) -> str:
    """What is embedded: the title, then the content (the model reads 256 tokens)."""
    return f"{title}\n\n{content}"


@dataclass(frozen=True, slots=True)
class PostText:
    """A post as it was read for embedding; `updated_at` detects a rewording since."""

    id: UUID
    text: str
    updated_at: datetime | None


async def load_posts(session: AsyncSession, post_ids: Sequence[UUID]) -> list[PostText]:
    """The texts to embed; ids of posts deleted meanwhile are skipped."""
    rows = await session.execute(
        select(col(Post.id), col(Post.title), col(Post.content), col(Post.updated_at)).where(
            col(Post.id).in_(post_ids)
        )
    )
    return [PostText(id_, post_text(title, content), at) for id_, title, content, at in rows]


async def store_embeddings(
    session: AsyncSession, embedder: Embedder, posts: Sequence[PostText], vectors: list[list[float]]
) -> int:
    """Upsert the vectors of posts unchanged since they were read. Returns how many."""
    if not posts:
        return 0
    unchanged = select(col(Post.id)).where(
        tuple_(col(Post.id), col(Post.updated_at)).in_([(p.id, p.updated_at) for p in posts])
    )
    kept = set((await session.scalars(unchanged)).all())  # a reworded post has a newer job
    values = [
        {"post_id": post.id, "embedding": vector, "model": embedder.name}
        for post, vector in zip(posts, vectors, strict=True)
        if post.id in kept
    ]
    if not values:
        return 0
    statement = insert(PostEmbedding).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=[col(PostEmbedding.post_id)],
        set_={
            "embedding": statement.excluded.embedding,
            "model": statement.excluded.model,
            "embedded_at": func.now(),
        },
    )
    await session.execute(statement)
    return len(values)


def embed_posts_handler(embedder: Embedder) -> Handler:
    async def handle(run: JobRun, payload: dict[str, object]) -> None:
        ids = payload.get("post_ids")
        if not isinstance(ids, list):
            raise ValueError("embed_posts payload needs a post_ids list")
        async with run.read() as session:
            posts = await load_posts(session, [UUID(str(post_id)) for post_id in ids])
        if not posts:
            return
        # No connection is held while the model runs.
        vectors = await embedder.embed([post.text for post in posts])
        async with run.write() as session:
            await store_embeddings(session, embedder, posts, vectors)

    return handle


def _missing() -> Select[UUID]:
    return (
        select(col(Post.id))
        .outerjoin(PostEmbedding, col(PostEmbedding.post_id) == col(Post.id))
        .where(col(PostEmbedding.post_id).is_(None))
    )


async def count_missing(session: AsyncSession) -> int:
    counted: Select[int] = select(func.count()).select_from(_missing().subquery())
    return int(await session.scalar(counted) or 0)


async def missing_post_ids(session: AsyncSession, limit: int) -> list[UUID]:
    missing = _missing().order_by(col(Post.id)).limit(limit)
    return list((await session.scalars(missing)).all())


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
