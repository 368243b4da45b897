"""Documents: an organization's vector store, for clients' own embeddings (or the server's).

Documents belong to the organization (`tenant_id`) and are shared within it: every
member reads and searches all of them, members and up add them, admins and up delete
them (`keel.orgs.permissions.MATRIX`). `owner_id` says who stored each one.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np
import orjson
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from keel.bulk.formats import physical_lines
from keel.config import Settings
from keel.core.errors import (
    DATA_EXCEPTION_CLASS,
    FOREIGN_KEY_VIOLATION,
    Conflict,
    ContentTooLarge,
    KeelError,
    NotFound,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from keel.core.ids import uuid7
from keel.documents import repository
from keel.documents.embeddings import queue_embeddings
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
    metadata_json,
)
from keel.embeddings.base import Embedder
from keel.orgs.permissions import OrgActor, Permission

NOT_FOUND = "No document with this id."
NDJSON_MEDIA_TYPES = ("application/x-ndjson", "application/jsonl")
BULK_BATCH_ROWS = 1_000  # rows per COPY: bounds the memory a large upload needs
MAX_LINE_BYTES = 2 * 1024 * 1024  # one document: 100k characters, metadata and a vector
MAX_REPORTED_ERRORS = 100
# Every search filters by tenant, so HNSW scans are always iterative. Relaxed order is
# enough: nearest_sql's outer query re-sorts by exact distance (pgvector's own recipe),
# which strict_order would only make slower.
ITERATIVE_SCAN = "relaxed_order"
VALIDATION_DETAIL = "The request is not valid; see `errors`."


class InvalidDocuments(KeelError):
    """A 422 shaped like request validation's; `errors` say where and why."""

    status_code, slug, title = 422, "validation-failed", "Validation Failed"


def _dimension_error(vector: Sequence[float], dimension: int) -> str | None:
    if len(vector) != dimension:
        return f"expected {dimension} dimensions, got {len(vector)}"
    return None


def _check_dimension(vector: Sequence[float], dimension: int, loc: list[str | int]) -> None:
    if (message := _dimension_error(vector, dimension)) is not None:
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


# --- bulk loading ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BulkLoaded:
    ids: list[UUID]  # every new document, in line order
    pending: list[UUID]  # those whose content the job queue will embed


def check_ndjson(content_type: str | None) -> None:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in NDJSON_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"Send one JSON document per line as {' or '.join(NDJSON_MEDIA_TYPES)} "
            f"(got {media_type or 'no Content-Type'})."
        )


async def _capped(chunks: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > max_bytes:
            raise ContentTooLarge(
                f"The upload is larger than {max_bytes} bytes.", max_bytes=max_bytes
            )
        yield chunk


async def _numbered_lines(
    chunks: AsyncIterator[bytes],
) -> AsyncIterator[tuple[int, bytes | None]]:
    """(1-based number, line) for each line that isn't blank; CRLF and a BOM are fine."""
    number = 0
    async for line in physical_lines(chunks, MAX_LINE_BYTES):
        number += 1
        if line is not None:
            line = line.removesuffix(b"\r")
            if number == 1:
                line = line.removeprefix(codecs.BOM_UTF8)
            if not line.strip():
                continue
        yield number, line


def _line_error(
    line: int, message: str, type_: str, loc: Sequence[str | int] = ()
) -> dict[str, Any]:
    return {"line": line, "loc": list(loc), "msg": message, "type": type_}


def _parse_line(
    raw: bytes | None, number: int, actor: OrgActor, dimension: int
) -> tuple[tuple[Any, ...] | None, list[dict[str, Any]]]:
    """A COPY record for one NDJSON line, or what is wrong with the line."""
    if raw is None:
        return None, [_line_error(number, f"longer than {MAX_LINE_BYTES} bytes", "line_too_long")]
    try:
        value = orjson.loads(raw)  # refuses NaN and Infinity, unlike the json module
    except orjson.JSONDecodeError as exc:
        reason = "invalid UTF-8" if "utf-8" in str(exc).lower() else f"invalid JSON: {exc}"
        return None, [_line_error(number, reason, "json_invalid")]
    if not isinstance(value, dict):
        return None, [_line_error(number, "expected a JSON object", "model_type")]
    try:
        document = DocumentCreate.model_validate(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        return None, [_line_error(number, e["msg"], e["type"], e["loc"]) for e in errors]
    embedding = None  # to be embedded from the content, by the job queue
    if document.embedding is not None:
        if (message := _dimension_error(document.embedding, dimension)) is not None:
            return None, [_line_error(number, message, "vector_dimension", ["embedding"])]
        embedding = np.asarray(document.embedding, dtype=np.float32)
    return (
        (
            actor.organization_id,
            uuid7(),
            actor.user_id,
            document.content,
            metadata_json(document.metadata),
            embedding,
        ),
        [],
    )


async def load_ndjson(
    session: AsyncSession,
    actor: OrgActor,
    layout: VectorLayout,
    chunks: AsyncIterator[bytes],
    *,
    max_rows: int,
    max_bytes: int,
) -> BulkLoaded:
    """Store one document per line in the actor's organization, all or none; the new ids
    in line order.

    COPY runs in batches while the body streams in. Once a line is bad nothing more is
    copied, the remaining lines are still checked (to report them all), and the error
    rolls the request's transaction back, batches already copied included. Lines without
    `embedding` are stored without one, and `embed_documents` jobs (queued in the same
    transaction) embed their content.
    """
    actor.require(Permission.DOCUMENTS_WRITE)
    ids: list[UUID] = []
    pending: list[UUID] = []
    batch: list[tuple[Any, ...]] = []
    errors: list[dict[str, Any]] = []
    invalid_lines = rows = 0
    async with repository.copy_connection(session) as driver:
        async for number, line in _numbered_lines(_capped(chunks, max_bytes)):
            rows += 1
            if rows > max_rows:
                raise ContentTooLarge(
                    f"More than {max_rows} documents in one upload.", max_rows=max_rows
                )
            record, problems = _parse_line(line, number, actor, layout.dimension)
            if record is None:
                invalid_lines += 1
                errors.extend(problems[: MAX_REPORTED_ERRORS - len(errors)])
            elif not invalid_lines:  # after a bad line, only check the rest
                ids.append(record[1])
                if record[-1] is None:
                    pending.append(record[1])
                batch.append(record)
                if len(batch) >= BULK_BATCH_ROWS:
                    await _copy(driver, batch)
                    batch.clear()
        if invalid_lines:
            raise InvalidDocuments(
                f"{invalid_lines} line(s) are not valid documents; nothing was stored. "
                "See `errors` (1-based line numbers).",
                errors=errors,
                invalid_lines=invalid_lines,
            )
        if not rows:
            raise InvalidDocuments("The upload holds no documents.", errors=[])
        if batch:
            await _copy(driver, batch)
    await queue_embeddings(session, actor.organization_id, pending)
    return BulkLoaded(ids=ids, pending=pending)


async def _copy(driver: asyncpg.Connection, batch: Sequence[tuple[Any, ...]]) -> None:
    try:
        await repository.copy_documents(driver, batch)
    except asyncpg.PostgresError as exc:
        sqlstate = str(getattr(exc, "sqlstate", ""))
        if sqlstate == FOREIGN_KEY_VIOLATION:
            raise Conflict(
                "The account or organization these documents belong to no longer exists."
            ) from exc
        if sqlstate.startswith(DATA_EXCEPTION_CLASS):
            raise InvalidDocuments(
                "A value in the upload cannot be stored; nothing was stored.", errors=[]
            ) from exc
        raise


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
