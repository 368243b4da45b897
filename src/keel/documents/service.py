"""Documents: an organization's vector store, for clients' own embeddings (or the server's).

Documents belong to the organization (`tenant_id`) and are shared within it: every
member reads and searches all of them, members and up add them, admins and up delete
them (`keel.orgs.permissions.MATRIX`). `owner_id` says who stored each one.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from keel.config import Settings
from keel.core.errors import KeelError, NotFound, ServiceUnavailable
from keel.documents import repository
from keel.documents.models import FULL, HALF, Document, Metric, VectorColumn
from keel.documents.repository import IndexScan, Nearest
from keel.documents.repository import VectorLayout as VectorLayout  # re-exported
from keel.documents.schemas import (
    DocumentCreate,
    DocumentHit,
    DocumentPublic,
    DocumentSearch,
    DocumentSearchResult,
    Precision,
)
from keel.embeddings.base import Embedder
from keel.orgs.permissions import OrgActor, Permission

NOT_FOUND = "No document with this id."
# Every search filters by tenant, so HNSW scans are always iterative. Relaxed order is
# enough: nearest_sql's outer query re-sorts by exact distance (pgvector's own recipe),
# which strict_order would only make slower.
ITERATIVE_SCAN = "relaxed_order"
VALIDATION_DETAIL = "The request is not valid; see `errors`."


class InvalidDocuments(KeelError):
    """A 422 shaped like request validation's; `errors` say where and why."""

    status_code, slug, title = 422, "validation-failed", "Validation Failed"


def dimension_error(vector: Sequence[float], dimension: int) -> str | None:
    if len(vector) != dimension:
        return f"expected {dimension} dimensions, got {len(vector)}"
    return None


def _check_dimension(vector: Sequence[float], dimension: int, loc: list[str | int]) -> None:
    if (message := dimension_error(vector, dimension)) is not None:
        raise InvalidDocuments(
            VALIDATION_DETAIL, errors=[{"loc": loc, "msg": message, "type": "vector_dimension"}]
        )


load_layout = repository.load_layout  # the table's dimension and HNSW indexes, from the catalog


def require_writer(actor: OrgActor) -> None:
    """403 unless the caller may add documents: checked before any model runs or body
    streams in, and again by the service functions that write."""
    actor.require(Permission.DOCUMENTS_WRITE)


async def create_document(
    session: AsyncSession,
    actor: OrgActor,
    layout: VectorLayout,
    data: DocumentCreate,
    embedding: Sequence[float] | None = None,
) -> Document:
    """Store a document in the actor's organization with its own `embedding`, or with
    `embedding` computed by the caller from its content (`embeddings.embed_content`)."""
    actor.require(Permission.DOCUMENTS_WRITE)
    vector = data.embedding if data.embedding is not None else embedding
    if vector is None:
        raise ValueError("a document needs an embedding: its own or its content's")
    _check_dimension(vector, layout.dimension, ["body", "embedding"])
    document = Document(
        tenant_id=actor.organization_id,
        owner_id=actor.user_id,
        content=data.content,
        metadata_=data.metadata,
        embedding=list(vector),
    )
    return await repository.save(session, document)


async def get_document(session: AsyncSession, actor: OrgActor, document_id: UUID) -> Document:
    """Another organization's document is as missing as one that never existed (404)."""
    actor.require(Permission.DOCUMENTS_READ)
    document = await repository.get(session, actor.organization_id, document_id)
    if document is None:
        raise NotFound(NOT_FOUND)
    return document


async def read_document(
    session: AsyncSession, actor: OrgActor, document_id: UUID
) -> DocumentPublic:
    """The document, saying whether its embedding is still pending."""
    actor.require(Permission.DOCUMENTS_READ)
    found = await repository.get_with_status(session, actor.organization_id, document_id)
    if found is None:
        raise NotFound(NOT_FOUND)
    document, pending = found
    return DocumentPublic.model_validate(document).model_copy(update={"embedding_pending": pending})


async def delete_document(session: AsyncSession, actor: OrgActor, document_id: UUID) -> None:
    actor.require(Permission.DOCUMENTS_DELETE)
    if not await repository.delete(session, actor.organization_id, document_id):
        raise NotFound(NOT_FOUND)


# --- search ------------------------------------------------------------------------------


def _default_metric(layout: VectorLayout, configured: Metric) -> Metric:
    """The configured metric when it is indexed, else whatever the migration indexed."""
    indexed = layout.indexed_metrics()
    return configured if configured in indexed or not indexed else indexed[0]


def _candidate_column(
    layout: VectorLayout, settings: Settings, metric: Metric, precision: Precision | None
) -> tuple[VectorColumn, str | None]:
    """The column whose HNSW index picks the candidates; (FULL, None) for an exact scan."""
    if precision == "full":
        preferred: tuple[VectorColumn, ...] = (FULL,)
    elif precision == "half":
        preferred = (HALF,)
    elif settings.vector_index == "halfvec":
        preferred = (HALF, FULL)
    else:
        preferred = (FULL, HALF)
    for column in preferred:
        if (index := layout.index_for(column, metric)) is not None:
            return column, index
    return FULL, None


async def _query_vector(
    search: DocumentSearch, layout: VectorLayout, embedder: Embedder | None
) -> Sequence[float]:
    if search.vector is not None:
        _check_dimension(search.vector, layout.dimension, ["body", "vector"])
        return search.vector
    if embedder is None:
        raise ServiceUnavailable(
            "No embedding model is set up on this server; search with `vector` instead."
        )
    if embedder.dimension != layout.dimension:
        raise ServiceUnavailable(
            f"The embedding model ({embedder.name}) makes {embedder.dimension}-dimensional "
            f"vectors but documents have {layout.dimension}; search with `vector` instead."
        )
    assert search.text is not None  # noqa: S101 - the schema requires one of the two
    (vector,) = await embedder.embed([search.text])
    return vector


def _score(metric: Metric, distance: float) -> float | None:
    if metric == "cosine":
        return 1.0 - distance
    if metric == "inner_product":
        return -distance
    return None


async def search_documents(
    session: AsyncSession,
    actor: OrgActor,
    layout: VectorLayout,
    settings: Settings,
    search: DocumentSearch,
    embedder: Embedder | None,
) -> DocumentSearchResult:
    """The `limit` nearest documents of the actor's organization, nearest first.

    The tenant is a filter inside the HNSW query, so index scans are always iterative
    (relaxed order, re-sorted by `nearest_sql`'s outer query) up to max_scan_tuples.
    """
    actor.require(Permission.SEARCH)
    actor.require(Permission.DOCUMENTS_READ)
    if search.limit > settings.vector_search_max_limit:
        message = f"at most {settings.vector_search_max_limit}"
        raise InvalidDocuments(
            VALIDATION_DETAIL,
            errors=[{"loc": ["body", "limit"], "msg": message, "type": "less_than_equal"}],
        )
    vector = await _query_vector(search, layout, embedder)
    metric = search.metric or _default_metric(layout, settings.vector_metric)
    column, index = (FULL, None)
    if not search.exact:
        column, index = _candidate_column(layout, settings, metric, search.precision)
    query = Nearest(
        vector=vector,
        metric=metric,
        column=column,
        limit=search.limit,
        tenant_id=actor.organization_id,
        metadata_filter=search.filter or None,
    )
    scan = None
    if index is not None:
        scan = IndexScan(
            ef_search=search.ef_search or settings.hnsw_ef_search_default,
            iterative=ITERATIVE_SCAN,
            max_scan_tuples=settings.hnsw_max_scan_tuples,
        )
    rows = await repository.nearest(session, query, layout.dimension, scan)
    if scan is not None and len(rows) < query.limit:
        # A short page from the index: either the tenant has no more matches, or the walk
        # hit max_scan_tuples first (a tiny tenant the planner misjudged, a rare filter).
        # The exact answer tells them apart; it reads the tenant's rows by its btree.
        rows = await repository.nearest(session, query, layout.dimension, None)
        scan = index = None
    return DocumentSearchResult(
        items=[
            DocumentHit(
                id=row.id,
                owner_id=row.owner_id,
                content=row.content,
                metadata=row.metadata,
                created_at=row.created_at,
                distance=row.distance,
                score=_score(metric, row.distance),
            )
            for row in rows
        ],
        metric=metric,
        limit=search.limit,
        column="embedding_half" if column is HALF else "embedding",
        index=index,
        exact=index is None,
        ef_search=scan.ef_search if scan else None,
        iterative_scan=scan.iterative if scan else None,
    )
