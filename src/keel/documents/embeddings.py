"""Documents from text alone: the server embeds `content` with its own model.

A single `POST /documents` is embedded inline, before its transaction opens. A bulk load
stores its text-only lines without a vector and queues `embed_documents` jobs, which the
worker runs like any other job: read the texts, compute with no connection held, write
the vectors of documents still waiting for one. A job works for one organization: its
payload names the tenant (`jobs.tenant_id` too), and every query it runs filters by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.errors import ServiceUnavailable
from keel.documents import repository
from keel.documents.repository import VectorLayout
from keel.embeddings.base import Embedder
from keel.jobs import service as jobs
from keel.jobs.worker import Handler, JobRun

EMBED_DOCUMENTS = "embed_documents"
EMBED_BATCH = 32  # documents per job: one model batch


def check_embedder(embedder: Embedder | None, layout: VectorLayout) -> Embedder:
    """The server's model, if its vectors fit the documents table; else 503."""
    if embedder is None:
        raise ServiceUnavailable(
            "No embedding model is set up on this server; send `embedding` with the document."
        )
    if embedder.dimension != layout.dimension:
        raise ServiceUnavailable(
            f"The embedding model ({embedder.name}) makes {embedder.dimension}-dimensional "
            f"vectors but documents have {layout.dimension}; send `embedding` instead."
        )
    return embedder


async def embed_content(
    embedder: Embedder | None, layout: VectorLayout, content: str
) -> list[float]:
    """The vector of one document's content (runs off the event loop; hold no connection)."""
    (vector,) = await check_embedder(embedder, layout).embed([content])
    return vector


async def queue_embeddings(
    session: AsyncSession, tenant_id: UUID, document_ids: Sequence[UUID]
) -> None:
    """Queue `embed_documents` jobs for the tenant's documents, in the caller's transaction."""
    batches = [
        {
            "tenant_id": str(tenant_id),
            "document_ids": [str(i) for i in document_ids[start : start + EMBED_BATCH]],
        }
        for start in range(0, len(document_ids), EMBED_BATCH)
    ]
    await jobs.enqueue(session, EMBED_DOCUMENTS, batches, tenant_id=tenant_id)


def embed_documents_handler(embedder: Embedder) -> Handler:
    """The worker's handler for `embed_documents` jobs."""

    async def handle(run: JobRun, payload: dict[str, object]) -> None:
        raw_ids = payload.get("document_ids")
        if not isinstance(raw_ids, list):
            raise ValueError("embed_documents payload needs a document_ids list")
        ids = [UUID(str(i)) for i in raw_ids]
        tenant = payload.get("tenant_id")
        waiting: list[tuple[UUID, UUID, str]] = []  # (tenant_id, id, content)
        async with run.read() as session:
            if tenant is not None:
                tenants = {UUID(str(tenant)): ids}
            else:  # queued before migration 0014 named tenants: each tenant's share
                tenants = await repository.pending_tenants_all_tenants(session, ids)
            for tenant_id, tenant_ids in tenants.items():
                found = await repository.pending_contents(session, tenant_id, tenant_ids)
                waiting.extend((tenant_id, id_, content) for id_, content in found)
        if not waiting:
            return  # deleted, or embedded meanwhile
        vectors = await embedder.embed([content for _, _, content in waiting])
        async with run.write() as session:  # one write: it also finishes the job
            for tenant_id in tenants:
                mine = [
                    (id_, v)
                    for (t, id_, _), v in zip(waiting, vectors, strict=True)
                    if t == tenant_id
                ]
                if mine:
                    await repository.store_embeddings(
                        session, tenant_id, [id_ for id_, _ in mine], [v for _, v in mine]
                    )

    return handle
