"""The vector scenario's data load: owner user, binary COPY, then both HNSW indexes, timed."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from bench.harness.base import say
from bench.harness.noise import cpu_split, wait_for_quiet
from bench.harness.pg import postmaster_pid
from bench.scenarios.vectors.corpus import Vectors
from bench.scenarios.vectors.search import BUCKETS, COPY_BATCH
from keel.core.embedded import EmbeddedPostgres


async def load(
    dsn: str, texts: Sequence[str], corpus: Vectors, pg: EmbeddedPostgres, args: argparse.Namespace
) -> tuple[list[UUID], dict[str, Any]]:
    """Owner user, binary COPY of the documents, VACUUM, then both HNSW indexes, timed."""
    import asyncpg
    from pgvector.asyncpg import register_vector

    from keel.config import get_settings
    from keel.core.ids import uuid7
    from keel.documents.models import FULL, HALF
    from keel.documents.repository import copy_documents

    settings = get_settings()
    out: dict[str, Any] = {}
    conn = await asyncpg.connect(dsn)
    notices: list[str] = []
    conn.add_log_listener(lambda _c, msg: notices.append(str(msg)))
    try:
        owner = uuid7()
        await conn.execute(
            "INSERT INTO app.users (id, email, username, hashed_password)"
            " VALUES ($1, 'vectors-bench@example.com', 'vectors-bench', '!')",
            owner,
        )
        schema = await conn.fetchval(
            "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'"
        )
        await register_vector(conn, schema=schema)
        # The migration's HNSW index goes first: COPY would otherwise insert every row into
        # the graph one at a time (157 s for 100k rows here, against seconds without it).
        made = await conn.fetch(
            "SELECT ix.relname FROM pg_index x JOIN pg_class ix ON ix.oid = x.indexrelid"
            " JOIN pg_am am ON am.oid = ix.relam AND am.amname = 'hnsw'"
            " WHERE x.indrelid = 'app.documents'::regclass"
        )
        out["migration_hnsw_indexes"] = [r[0] for r in made]
        out["migration_vector_index_setting"] = settings.vector_index
        for row in made:
            await conn.execute(f'DROP INDEX app."{row[0]}"')
        ids = [uuid7() for _ in range(len(corpus))]
        t0 = time.perf_counter()
        for start in range(0, len(corpus), COPY_BATCH):
            stop = min(len(corpus), start + COPY_BATCH)
            records = [
                # all in the owner's personal organization (its id is the owner's)
                (owner, ids[i], owner, texts[i], json.dumps({"bucket": i % BUCKETS}), corpus[i])
                for i in range(start, stop)
            ]
            await copy_documents(conn, records)
        out["copy_s"] = time.perf_counter() - t0
        await conn.execute("VACUUM (ANALYZE) app.documents")
        await conn.execute("CHECKPOINT")
        await conn.execute(f"SET maintenance_work_mem = '{args.maintenance_work_mem}'")
        for guc in ("maintenance_work_mem", "max_parallel_maintenance_workers", "shared_buffers"):
            out[guc] = await conn.fetchval(f"SHOW {guc}")
        out["hnsw_m"], out["hnsw_ef_construction"] = settings.hnsw_m, settings.hnsw_ef_construction
        out["indexes"] = {}
        for label, column in (("vector", FULL), ("halfvec", HALF)):
            wait_for_quiet(args.quiet_wait)
            notices.clear()
            sql = (
                f"CREATE INDEX {column.index_name} ON app.documents USING hnsw"
                f" ({column.name} {column.opclass('cosine')})"
                f" WITH (m = {settings.hnsw_m}, ef_construction = {settings.hnsw_ef_construction})"
            )
            with cpu_split(postmaster=postmaster_pid(pg)) as cpu:
                t0 = time.perf_counter()
                await conn.execute(sql)
                build_s = time.perf_counter() - t0
            split = cpu()
            size = await conn.fetchval(
                "SELECT pg_relation_size($1::regclass)", f"app.{column.index_name}"
            )
            out["indexes"][label] = {
                "name": column.index_name,
                "sql": sql,
                "build_s": build_s,
                "bytes": int(size),
                "postgres_cpu_pct": split.postgres_pct,
                "other_cpu_pct": split.other_pct,
                "notices": list(notices),
            }
            say(
                f"built {label} HNSW: {build_s:.1f} s, {size / 2**20:.1f} MiB"
                f" (pg CPU {split.postgres_pct:.0f}%, other {split.other_pct:.0f}%)"
            )
        await conn.execute("CHECKPOINT")
        sizes = await conn.fetchrow(
            "SELECT pg_relation_size('app.documents'), pg_table_size('app.documents'),"
            " pg_relation_size('app.ix_documents_metadata')"
        )
        out["table_heap_bytes"], out["table_total_bytes"], out["gin_bytes"] = map(int, sizes)
    finally:
        await conn.close()
    return ids, out
