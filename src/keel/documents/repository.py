"""SQL for documents: tenant-scoped reads and writes, the vector layout, binary COPY, k-NN.

Every query of documents takes the organization (`tenant_id`) and filters by it; the
only cross-tenant functions say so in their name (`..._all_tenants`).

Query vectors travel as text (`'[0.1,0.2,...]'`) cast to the column's type, so ordinary
queries need no codec; only COPY, which is binary, registers pgvector's (and removes it
again before the connection goes back to the pool).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from pgvector.asyncpg import register_vector
from sqlalchemy import ColumnElement, Select, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import load_only
from sqlmodel import col

from keel.documents.models import (
    FULL,
    METRICS,
    OPERATORS,
    VECTOR_COLUMNS,
    Document,
    Metric,
    VectorColumn,
)

# The columns a COPY fills; the rest are defaults, and embedding_half is generated.
COPY_COLUMNS = ("tenant_id", "id", "owner_id", "content", "metadata", "embedding")
_CODEC_TYPES = ("vector", "halfvec", "sparsevec")
_VECTOR_SCHEMA = (
    "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'"
)
# pgvector keeps a vector column's dimension as its typmod.
_DIMENSION = (
    "SELECT atttypmod FROM pg_attribute"
    " WHERE attrelid = 'app.documents'::regclass AND attname = 'embedding'"
)
# Valid, whole-table, single-column HNSW indexes: the ones a k-NN query can walk.
_HNSW_INDEXES = """
SELECT ix.relname AS index_name, att.attname AS column_name, opc.opcname AS opclass
FROM pg_index AS x
JOIN pg_class AS ix ON ix.oid = x.indexrelid
JOIN pg_am AS am ON am.oid = ix.relam AND am.amname = 'hnsw'
JOIN pg_opclass AS opc ON opc.oid = x.indclass[0]
JOIN pg_attribute AS att ON att.attrelid = x.indrelid AND att.attnum = x.indkey[0]
WHERE x.indrelid = 'app.documents'::regclass
  AND x.indisvalid AND x.indnatts = 1 AND x.indpred IS NULL
"""
_PUBLIC_COLUMNS: tuple[Any, ...] = (
    Document.id,
    Document.owner_id,
    Document.content,
    Document.metadata_,
    Document.created_at,
    Document.updated_at,
)


@dataclass(frozen=True, slots=True)
class VectorLayout:
    """What the migration built: the dimension and the HNSW index per (column, metric)."""

    dimension: int
    indexes: dict[tuple[str, Metric], str]

    def index_for(self, column: VectorColumn, metric: Metric) -> str | None:
        return self.indexes.get((column.name, metric))

    def indexed_metrics(self) -> list[Metric]:
        return [metric for metric in METRICS if any(m == metric for _, m in self.indexes)]


async def load_layout(session: AsyncSession) -> VectorLayout:
    dimension = int(await session.scalar(text(_DIMENSION)) or 0)
    indexes: dict[tuple[str, Metric], str] = {}
    for row in await session.execute(text(_HNSW_INDEXES)):
        for column in VECTOR_COLUMNS:
            for metric in METRICS:
                if row.column_name == column.name and row.opclass == column.opclass(metric):
                    indexes.setdefault((column.name, metric), row.index_name)
    return VectorLayout(dimension=dimension, indexes=indexes)


def _in_tenant(tenant_id: UUID, document_id: UUID) -> tuple[ColumnElement[bool], ...]:
    return col(Document.tenant_id) == tenant_id, col(Document.id) == document_id


def _public(statement: Select[Document]) -> Select[Document]:
    # The vectors stay in the database: no response carries them.
    return statement.options(load_only(*_PUBLIC_COLUMNS))


async def get(session: AsyncSession, tenant_id: UUID, document_id: UUID) -> Document | None:
    statement = select(Document).where(*_in_tenant(tenant_id, document_id))
    return (await session.scalars(_public(statement))).first()


async def get_with_status(
    session: AsyncSession, tenant_id: UUID, document_id: UUID
) -> tuple[Document, bool] | None:
    """The document and whether its embedding is still pending (NULL)."""
    pending = col(Document.embedding).is_(None).label("pending")
    statement = select(Document, pending).where(*_in_tenant(tenant_id, document_id))
    row = (await session.execute(statement.options(load_only(*_PUBLIC_COLUMNS)))).first()
    return None if row is None else (row[0], bool(row[1]))


async def pending_contents(
    session: AsyncSession, tenant_id: UUID, ids: Sequence[UUID]
) -> list[tuple[UUID, str]]:
    """(id, content) of these documents of the tenant that still wait for an embedding."""
    rows = await session.execute(
        select(col(Document.id), col(Document.content)).where(
            col(Document.tenant_id) == tenant_id,
            col(Document.id).in_(ids),
            col(Document.embedding).is_(None),
        )
    )
    return [(row[0], row[1]) for row in rows]


async def pending_tenants_all_tenants(
    session: AsyncSession, ids: Sequence[UUID]
) -> dict[UUID, list[UUID]]:
    """The tenants of these documents still waiting for an embedding, with their ids.

    Only for `embed_documents` jobs queued before migration 0014, whose payload names
    no tenant: the worker then embeds each tenant's share as if queued for it.
    """
    rows = await session.execute(
        select(col(Document.tenant_id), col(Document.id)).where(
            col(Document.id).in_(ids), col(Document.embedding).is_(None)
        )
    )
    tenants: dict[UUID, list[UUID]] = {}
    for tenant_id, document_id in rows:
        tenants.setdefault(tenant_id, []).append(document_id)
    return tenants


async def store_embeddings(
    session: AsyncSession,
    tenant_id: UUID,
    ids: Sequence[UUID],
    vectors: Sequence[Sequence[float]],
) -> int:
    """Set the embeddings of the tenant's documents still without one. How many were set."""
    result = await session.execute(
        text(
            "UPDATE app.documents AS d SET embedding = CAST(v.embedding AS vector) "
            "FROM unnest(CAST(:ids AS uuid[]), CAST(:vectors AS text[])) AS v(id, embedding) "
            "WHERE d.tenant_id = :tenant_id AND d.id = ANY(CAST(:ids AS uuid[])) "
            "AND d.id = v.id AND d.embedding IS NULL"
        ),
        {
            "tenant_id": tenant_id,
            "ids": list(ids),
            "vectors": [vector_literal(vector) for vector in vectors],
        },
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def save(session: AsyncSession, document: Document) -> Document:
    """Flush `document` (its tenant_id set by the caller) and load the database's timestamps."""
    session.add(document)
    await session.flush()
    await session.refresh(document, attribute_names=["created_at", "updated_at"])
    return document


async def delete(session: AsyncSession, tenant_id: UUID, document_id: UUID) -> bool:
    """Delete the tenant's document; False if it has no such document."""
    result = await session.execute(
        text("DELETE FROM app.documents WHERE tenant_id = :tenant_id AND id = :id"),
        {"tenant_id": tenant_id, "id": document_id},
    )
    return bool(getattr(result, "rowcount", 0))


async def count(session: AsyncSession, tenant_id: UUID) -> int:
    statement = text("SELECT count(*) FROM app.documents WHERE tenant_id = :tenant_id")
    return int(await session.scalar(statement, {"tenant_id": tenant_id}) or 0)


async def count_all_tenants(session: AsyncSession) -> int:
    return int(await session.scalar(text("SELECT count(*) FROM app.documents")) or 0)


@contextlib.asynccontextmanager
async def copy_connection(session: AsyncSession) -> AsyncIterator[asyncpg.Connection]:
    """The request's own driver connection (same transaction), with pgvector's codec."""
    # Through the session first: this opens the transaction the COPY then joins.
    schema = await session.scalar(text(_VECTOR_SCHEMA))
    raw = await (await session.connection()).get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    await register_vector(driver, schema=schema)
    try:
        yield driver
    finally:
        # Pooled connections must not keep it: the ORM sends vectors as text.
        for type_name in _CODEC_TYPES:
            await driver.reset_type_codec(type_name, schema=schema)


async def copy_documents(driver: asyncpg.Connection, records: Sequence[tuple[Any, ...]]) -> None:
    """Binary COPY of (tenant_id, id, owner_id, content, metadata JSON, float32 vector) rows.

    The caller puts its tenant in every record: COPY inserts, it filters nothing.
    """
    # A savepoint: after a failed COPY the transaction can still reset the codecs.
    async with driver.transaction():
        await driver.copy_records_to_table(
            "documents", schema_name="app", columns=list(COPY_COLUMNS), records=records
        )


@dataclass(frozen=True, slots=True)
class Nearest:
    """A k-NN query: `column` picks the candidates, full precision orders them."""

    vector: Sequence[float]
    metric: Metric
    column: VectorColumn
    limit: int
    tenant_id: UUID
    metadata_filter: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class IndexScan:
    """Per-transaction HNSW settings (`SET LOCAL`): every search filters by tenant, so
    `iterative` is pgvector 0.8's iterative scan mode (None only to show what it fixes)."""

    ef_search: int
    iterative: str | None
    max_scan_tuples: int


@dataclass(frozen=True, slots=True)
class NearestRow:
    id: UUID
    owner_id: UUID
    content: str
    metadata: dict[str, Any]
    created_at: datetime
    distance: float


def vector_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(repr(float(component)) for component in vector) + "]"


RERANK_FACTOR, RERANK_CAP = 4, 100  # candidates per result, and at most this many


def candidates_for(limit: int) -> int:
    """How many rows the index scan hands to the re-ranking (never fewer than `limit`)."""
    return max(limit, min(limit * RERANK_FACTOR, RERANK_CAP))


def nearest_sql(query: Nearest, dimension: int) -> str:
    """The k-NN statement. Every identifier and operator comes from a fixed table.

    The inner query is what the HNSW index serves (ORDER BY distance, filters in WHERE),
    over-fetching `candidates` rows; the outer query re-ranks them at full precision and
    keeps `limit`: an iterative scan in relaxed order returns rows slightly out of order,
    half precision moves the boundary, and a filtered walk misses some near rows, so the
    extra candidates buy recall (pgvector's re-ranking recipe).
    MATERIALIZED and `+ 0` stop the planner from assuming the CTE's order (PostgreSQL 17+
    passes it on, and would then skip or shorten the sort).
    """
    operator = OPERATORS[query.metric]
    # The tenant first: the HNSW index walks the whole graph and keeps only its rows.
    conditions = ["tenant_id = :tenant_id", "embedding IS NOT NULL"]  # NULL: still pending
    if query.metadata_filter:
        conditions.append("metadata @> CAST(:filter AS jsonb)")
    where = f"WHERE {' AND '.join(conditions)}"
    candidate = query.column.sql_type(dimension)
    # Identifiers and operators come from fixed tables; values are bound parameters.
    return f"""
WITH nearest AS MATERIALIZED (
    SELECT id, owner_id, content, metadata, created_at,
           {query.column.name} {operator} CAST(CAST(:query AS text) AS {candidate})
               AS candidate_distance,
           embedding {operator} CAST(CAST(:query AS text) AS {FULL.sql_type(dimension)})
               AS distance
    FROM app.documents
    {where}
    ORDER BY candidate_distance
    LIMIT :candidates
)
SELECT id, owner_id, content, metadata, created_at, distance
FROM nearest
ORDER BY distance + 0, id
LIMIT :limit
"""  # noqa: S608


def nearest_params(query: Nearest) -> dict[str, Any]:
    params: dict[str, Any] = {
        "query": vector_literal(query.vector),
        "limit": query.limit,
        "candidates": candidates_for(query.limit),
        "tenant_id": query.tenant_id,
    }
    if query.metadata_filter:
        params["filter"] = json.dumps(query.metadata_filter, allow_nan=False)
    return params


async def apply_scan(session: AsyncSession, scan: IndexScan | None) -> None:
    """SET LOCAL the scan's settings: they end with the request's transaction.

    `None` is an exact scan: index scans are switched off, so the ORDER BY is computed
    for every row that passes the filters. Exact and HNSW searches send the same SQL, and
    asyncpg prepares it once per connection; a cached generic plan would ignore
    `enable_indexscan`, and would not know the tenant's size either (the planner walks
    the HNSW graph for a big tenant, reads a small one's rows by the btree and sorts
    them), so every search is planned afresh (`force_custom_plan`).
    """
    settings = (
        {"enable_indexscan": "off"}
        if scan is None
        else {
            "hnsw.ef_search": str(scan.ef_search),
            "hnsw.iterative_scan": scan.iterative or "off",
            "hnsw.max_scan_tuples": str(scan.max_scan_tuples),
        }
    )
    settings["plan_cache_mode"] = "force_custom_plan"
    calls = ", ".join(f"set_config(:name_{i}, :value_{i}, true)" for i in range(len(settings)))
    params: dict[str, str] = {}
    for i, (name, value) in enumerate(settings.items()):
        params |= {f"name_{i}": name, f"value_{i}": value}
    await session.execute(text(f"SELECT {calls}"), params)


async def nearest(
    session: AsyncSession, query: Nearest, dimension: int, scan: IndexScan | None
) -> list[NearestRow]:
    await apply_scan(session, scan)
    statement = text(nearest_sql(query, dimension)).columns(metadata=JSONB)
    rows = await session.execute(statement, nearest_params(query))
    return [NearestRow(**row._asdict()) for row in rows]
