"""The documents of `tenant_hnsw_recall`: clustered vectors, the COPY, the exact answers."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from typing import Any, NamedTuple
from uuid import UUID, uuid4

import numpy as np
from pgvector.asyncpg import register_vector

from bench.harness.base import BenchError
from bench.harness.pg import psql
from keel.documents.repository import vector_literal
from keel.seed.repository import connect

K = 10
_VECTOR_SCHEMA = (
    "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'"
)
_HNSW_DEFS = (
    "SELECT indexname || '|' || indexdef FROM pg_indexes "
    "WHERE schemaname = 'app' AND tablename = 'documents' AND indexdef LIKE '%USING hnsw%'"
)


def make_vectors(args: argparse.Namespace, dimension: int) -> np.ndarray:
    """--documents + --queries unit vectors (float32), clustered in a low dimension."""
    rng = np.random.default_rng(args.seed)
    count = args.documents + args.queries
    centres = rng.standard_normal((args.clusters, args.latent))
    latent = centres[rng.integers(args.clusters, size=count)]
    latent += 0.5 * rng.standard_normal((count, args.latent))
    lift = rng.standard_normal((args.latent, dimension)) / np.sqrt(args.latent)
    vectors = latent @ lift + 0.1 * rng.standard_normal((count, dimension))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: np.ndarray = vectors.astype(np.float32)
    return unit


async def _copy(url: str, rows: list[tuple[Any, ...]]) -> None:
    conn = await connect(url)
    try:
        await register_vector(conn, schema=await conn.fetchval(_VECTOR_SCHEMA))
        columns = ["id", "tenant_id", "owner_id", "content", "embedding"]
        for start in range(0, len(rows), 10_000):
            batch = rows[start : start + 10_000]
            await conn.copy_records_to_table(
                "documents", schema_name="app", columns=columns, records=batch
            )
    finally:
        await conn.close()


class Loaded(NamedTuple):
    ids: list[str]  # per row of the documents' vectors
    tenants: list[str]  # the tenant (and owner) of each row
    load_seconds: float  # the COPY
    build_seconds: float  # rebuilding the HNSW index(es)


def load_documents(pg: Any, vectors: np.ndarray, tenants: Sequence[str], share: float) -> Loaded:
    """COPY the documents without HNSW indexes, each in the first tenant with probability
    `share`, else in the second; then rebuild the indexes by the migration's definitions."""
    defs = [line.split("|", 1) for line in psql(pg, _HNSW_DEFS).splitlines()]
    if not defs:
        raise BenchError("the migration made no HNSW index on app.documents")
    psql(pg, "".join(f"DROP INDEX app.{name};" for name, _ in defs))
    rng = np.random.default_rng(len(vectors))
    owners = [tenants[0] if r < share else tenants[1] for r in rng.random(len(vectors))]
    ids = [uuid4() for _ in owners]
    rows = [
        (doc_id, UUID(o), UUID(o), f"document {i}", v)
        for i, (doc_id, o, v) in enumerate(zip(ids, owners, vectors, strict=True))
    ]
    t0 = time.perf_counter()
    asyncio.run(_copy(pg.url, rows))
    load_s = time.perf_counter() - t0
    psql(pg, "SET maintenance_work_mem = '1GB';" + "".join(f"{d};" for _, d in defs))
    build_s = time.perf_counter() - t0 - load_s
    psql(pg, "VACUUM (ANALYZE) app.documents; CHECKPOINT;")
    return Loaded([str(i) for i in ids], owners, load_s, build_s)


def exact_sql(pg: Any, tenant: str, query: np.ndarray) -> list[str]:
    """The tenant's K nearest (cosine) by a sequential scan: index and bitmap scans off."""
    # A checked UUID and numbers: nothing from outside.
    where = f"WHERE tenant_id = '{UUID(tenant)}'"
    order = f"ORDER BY embedding <=> '{vector_literal(query.tolist())}'::vector, id LIMIT {K}"
    sql = "SET enable_indexscan = off; SET enable_bitmapscan = off; "
    sql += f"SELECT id FROM app.documents {where} {order};"  # noqa: S608
    return psql(pg, sql).splitlines()


def numpy_truth(docs: np.ndarray, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Row numbers of each query's K nearest (cosine) among `rows`."""
    return rows[np.argsort(-(queries @ docs[rows].T), axis=1)[:, :K]]


def recall(found: Sequence[Sequence[str]], truth: Sequence[Sequence[str]]) -> float:
    hits = [len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))
