"""Vector search on 100k documents with real all-MiniLM-L6-v2 embeddings, in one run.

    uv run python bench/vectors.py [--documents 100000] [--queries 200] [--seed 1]
                                   [--ef-search 40,100,200] [--rounds 2] [--qps-seconds 10]
                                   [--exact-seconds 20] [--quiet-wait 120] [--other-wait 600]

What it measures (the issue's figures):

- recall@10 of HNSW against exact search at each --ef-search, for the index on the
  half-precision copy (`embedding_half`, the app's default) and on `embedding`;
- QPS at the smallest ef_search reaching --target-recall ÷ exact-scan QPS;
- halfvec against vector: index size, build time, recall change;
- a 10%-selective metadata filter: recall with iterative scans off / relaxed / strict;
- embedding throughput (sentences/s, one single-threaded process).

Corpus: --documents + --queries distinct sentences from Faker (seeded like `keel.seed`'s
post titles: `fake.sentence(nb_words=3..11)`); the last --queries are held out as
queries. They are embedded with `MiniLMEmbedder.embed_sync` (batch 64) in --workers child
processes, each single-threaded (BLAS/tokenizer pools at 1) and pinned to its own CPU,
and cached as .npy under --cache-dir, so later runs skip that step (the sidecar JSON keeps
the throughput measured when they were computed).

Database: one embedded PostgreSQL, migrated with `keel.migrations.runner.upgrade`; one
owner user; binary COPY through `keel.documents.repository.copy_documents` with
metadata {"bucket": i % 10}. The migration's HNSW index is dropped and both are built
explicitly (m, ef_construction from the settings) and timed. Queries run the app's own
statement (`repository.nearest_sql`, admin shape: no owner condition) over asyncpg with
the settings `repository.apply_scan` makes (SET LOCAL via set_config, one transaction
per query). Ground truth is numpy brute force over the unit vectors (cosine), checked
against the exact SQL on a few queries. Results: bench/results/vectors.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np

import _extra as x
import _harness as h

NAME = "vectors"
K = 10
FILTER = {"bucket": 3}
BUCKETS = 10
COPY_BATCH = 5_000
ITERATIVE_MODES = ("off", "relaxed_order", "strict_order")
SINGLE_THREAD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "RAYON_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
TARGETS = {"recall": 0.95, "qps_ratio": 50.0, "size_ratio": 0.55, "recall_change": -0.01}


# --- corpus and embeddings --------------------------------------------------------------


def make_texts(count: int, seed: int) -> list[str]:
    """`count` distinct sentences, made the way `keel.seed` makes post titles."""
    from faker import Faker

    from keel.posts.models import TITLE_MAX

    fake, rng = Faker("en_US"), random.Random(seed)  # noqa: S311 - reproducible fake text
    fake.seed_instance(seed)
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen.setdefault(fake.sentence(nb_words=rng.randint(3, 11)).rstrip(".")[:TITLE_MAX])
    return list(seen)


def digest(texts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


def embed_child(args: argparse.Namespace) -> int:
    """In a child: embed texts[start:stop], write the vectors (.npy) and timings (.json)."""
    from keel.embeddings.minilm import MiniLMEmbedder

    texts = make_texts(args.documents + args.queries, args.seed)
    if digest(texts) != args.child_digest:
        raise h.BenchError("child made different texts than the parent")
    start, stop = (int(v) for v in args.child_range.split(":"))
    part = texts[start:stop]
    embedder = MiniLMEmbedder()
    embedder.load()
    embedder.embed_sync(part[:256], batch_size=args.batch_size)  # warm caches and pools
    tokens = [len(ids) for ids in embedder.token_ids(part)]
    w0, c0 = time.perf_counter(), time.process_time()
    vectors = embedder.embed_sync(part, batch_size=args.batch_size)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    np.save(args.child_out.with_suffix(".npy"), vectors)
    info = {
        "texts": len(part),
        "mean_tokens": statistics.fmean(tokens),
        "wall_s": wall,
        "cpu_pct": cpu / wall * 100,
        "texts_per_s": len(part) / wall,
        "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    args.child_out.with_suffix(".json").write_text(json.dumps(info))
    return 0


def _family() -> set[int]:
    """This process, its ancestors (uv run, the shell) and its descendants.

    Unlike `_extra._own_family`, not the ancestors' other descendants: that would take in
    every process on the box (all descend from pid 1) and hide the noise.
    """
    parents = x._parents()  # noqa: SLF001 - bench-internal helper
    family = {os.getpid()}
    pid = os.getpid()
    while parents.get(pid, 0) > 1:
        pid = parents[pid]
        family.add(pid)
    descendants = {os.getpid()}
    grew = True
    while grew:
        kids = {p for p, pp in parents.items() if pp in descendants and p not in descendants}
        descendants |= kids
        grew = bool(kids)
    return family | descendants


def _cpu_seconds() -> dict[int, tuple[int, float, float]]:
    """pid -> (ppid, own CPU seconds, CPU seconds of its reaped children)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[int, float, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        own, reaped = int(f[11]) + int(f[12]), int(f[13]) + int(f[14])
        out[int(stat.parent.name)] = (int(f[1]), own / tick, reaped / tick)
    return out


@contextlib.contextmanager
def cpu_split(pg: Any | None) -> Iterator[Callable[[], x.CpuSplit]]:
    """CPU used during the block, in % of one core: PostgreSQL (postmaster and backends)
    and every process outside this one's family ("server" is always 0 here)."""
    pm = x.postmaster_pid(pg) if pg is not None else None
    own = _family()
    t0, before = time.monotonic(), _cpu_seconds()
    out: list[x.CpuSplit] = []
    yield lambda: out[0] if out else x.CpuSplit(0.0, 0.0, 0.0)
    after, wall = _cpu_seconds(), time.monotonic() - t0
    own |= _family()
    postgres = other = 0.0
    for pid, (ppid, seconds, reaped) in after.items():
        _, seconds_before, reaped_before = before.get(pid, (0, 0.0, 0.0))
        if pm is not None and pm in (pid, ppid):
            # The postmaster's reaped children are backends that ended meanwhile.
            postgres += seconds - seconds_before + (reaped - reaped_before if pid == pm else 0)
        elif pid not in own:
            # Own time only: a reaped child's lifetime CPU would land here in one lump.
            other += seconds - seconds_before
    scale = 100 / wall if wall > 0 else 0.0
    out.append(x.CpuSplit(0.0, max(0.0, postgres * scale), max(0.0, other * scale)))


def embeddings(texts: list[str], args: argparse.Namespace) -> tuple[np.ndarray, dict[str, Any]]:
    """All texts' vectors, from the cache or computed now by --workers pinned children."""
    from keel.embeddings.minilm import MODEL_NAME

    key = digest(texts)
    stem = f"{MODEL_NAME}-{len(texts)}-seed{args.seed}-b{args.batch_size}-{key[:12]}"
    npy, meta = args.cache_dir / f"{stem}.npy", args.cache_dir / f"{stem}.json"
    if npy.exists() and meta.exists() and not args.no_cache:
        vectors = np.load(npy)
        if vectors.shape == (len(texts), 384):
            info: dict[str, Any] = json.loads(meta.read_text())
            print(f"embeddings: cached {npy}", file=sys.stderr)
            return vectors, {**info, "cached": True, "cache_file": str(npy)}
    h.wait_for_quiet(args.quiet_wait)
    workers = max(1, args.workers)
    bounds = np.linspace(0, len(texts), workers + 1).astype(int)
    print(f"embedding {len(texts):,} texts in {workers} processes ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp, cpu_split(None) as noise:
        outs = [Path(tmp) / f"part{i}" for i in range(workers)]
        t0 = time.perf_counter()
        procs = []
        for i in range(workers):
            argv = [sys.executable, __file__, *child_args(args)]
            argv += [f"--child-range={bounds[i]}:{bounds[i + 1]}", f"--child-out={outs[i]}"]
            argv += [f"--child-digest={key}"]
            procs.append(
                subprocess.Popen(
                    h.pinned(i, argv), cwd=h.REPO_ROOT, env={**os.environ, **SINGLE_THREAD_ENV}
                )
            )
        for proc in procs:
            if proc.wait() != 0:
                raise h.BenchError(f"embedding child exited with {proc.returncode}")
        wall = time.perf_counter() - t0
        vectors = np.concatenate([np.load(o.with_suffix(".npy")) for o in outs])
        parts = [json.loads(o.with_suffix(".json").read_text()) for o in outs]
    info = {
        "model": MODEL_NAME,
        "texts": len(texts),
        "batch_size": args.batch_size,
        "workers": workers,
        "per_process": parts,
        "single_process_texts_per_s": statistics.fmean(p["texts_per_s"] for p in parts),
        "mean_tokens": statistics.fmean(p["mean_tokens"] for p in parts),
        "wall_s": wall,
        # All processes together, over the longest one's embedding time (load excluded).
        "aggregate_texts_per_s": len(texts) / max(p["wall_s"] for p in parts),
        "other_cpu_pct": noise().other_pct,
        "measured_at": h.now_iso(),
    }
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(npy, vectors)
    meta.write_text(json.dumps(info, indent=2) + "\n")
    return vectors, {**info, "cached": False, "cache_file": str(npy)}


def child_args(args: argparse.Namespace) -> list[str]:
    return [
        f"--documents={args.documents}",
        f"--queries={args.queries}",
        f"--seed={args.seed}",
        f"--batch-size={args.batch_size}",
    ]


def ground_truth(corpus: np.ndarray, queries: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """Indices of each query's K nearest corpus rows by cosine (unit vectors: dot product)."""
    candidates = np.arange(len(corpus)) if rows is None else rows
    sims = queries.astype(np.float64) @ corpus[candidates].astype(np.float64).T
    top = np.argpartition(-sims, K, axis=1)[:, :K]
    order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
    return candidates[np.take_along_axis(top, order, axis=1)]


# --- SQL ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """The app's k-NN statement for one column / filter, in asyncpg's $n form."""

    column: str  # "vector" or "halfvec"
    filtered: bool
    sql: str
    names: tuple[str, ...]

    def params(self, literal: str) -> list[Any]:
        values = {"query": literal, "limit": K, "filter": json.dumps(FILTER)}
        return [values[n] for n in self.names]


def app_shape(column: str, filtered: bool, dimension: int) -> Shape:
    from keel.documents.models import FULL, HALF
    from keel.documents.repository import Nearest, nearest_params, nearest_sql

    query = Nearest(
        vector=[0.0] * dimension,
        metric="cosine",
        column=HALF if column == "halfvec" else FULL,
        limit=K,
        metadata_filter=dict(FILTER) if filtered else None,
    )
    sql, names = nearest_sql(query, dimension), list(nearest_params(query))

    def sub(match: re.Match[str]) -> str:
        return f"${names.index(match[1]) + 1}"

    pattern = r"(?<!:):(" + "|".join(map(re.escape, names)) + r")\b"
    return Shape(column, filtered, re.sub(pattern, sub, sql), tuple(names))


def hnsw_gucs(ef: int, iterative: str, max_scan_tuples: int, force: bool) -> dict[str, str]:
    """What `repository.apply_scan` sets for an index scan (plus, if force, no other path)."""
    gucs = {
        "hnsw.ef_search": str(ef),
        "hnsw.iterative_scan": iterative,
        "hnsw.max_scan_tuples": str(max_scan_tuples),
    }
    if force:
        # PostgreSQL 18 picks the plan with the fewest disabled nodes: the HNSW plan has one
        # (the outer sort); a b-tree or seq scan plus a top-N sort has at least two.
        gucs |= {"enable_seqscan": "off", "enable_bitmapscan": "off", "enable_sort": "off"}
    return gucs


EXACT_GUCS = {"enable_indexscan": "off"}  # what apply_scan sets for an exact search


def set_sql(count: int) -> str:
    return "SELECT " + ", ".join(
        f"set_config(${2 * i + 1}, ${2 * i + 2}, true)" for i in range(count)
    )


async def run_query(conn: Any, sql: str, params: Sequence[Any], gucs: dict[str, str]) -> list[Any]:
    """One search as the app runs it: a transaction, SET LOCAL via set_config, the query."""
    flat = [v for pair in gucs.items() for v in pair]
    # One prepared statement per settings: PostgreSQL's plan cache ignores changed planner
    # settings, so after five runs one statement could keep a generic plan made under
    # other settings (an exact scan's seq scan for an HNSW query, or the reverse).
    tag = "/* " + ", ".join(f"{k}={v}" for k, v in sorted(gucs.items())) + " */\n"
    async with conn.transaction():
        await conn.execute(set_sql(len(gucs)), *flat)
        return list(await conn.fetch(tag + sql, *params))


async def explain(conn: Any, shape: Shape, literal: str, gucs: dict[str, str]) -> list[str]:
    rows = await run_query(
        conn, "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + shape.sql, shape.params(literal), gucs
    )
    return [r[0] for r in rows]


@dataclass
class Sweep:
    recall: float
    returned: float
    mean_ms: float
    p50_ms: float
    p95_ms: float
    other_cpu_pct: float
    postgres_cpu_pct: float

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


async def sweep(
    conn: Any,
    pg: Any,
    shape: Shape,
    literals: Sequence[str],
    truth: np.ndarray,
    index_of: dict[UUID, int],
    gucs: dict[str, str],
) -> Sweep:
    """Mean recall@K (and returned rows, latency) of `shape` over every query."""
    recalls, returned, ms = [], [], []
    with cpu_split(pg) as cpu:
        for literal, want in zip(literals, truth, strict=True):
            t0 = time.perf_counter()
            rows = await run_query(conn, shape.sql, shape.params(literal), gucs)
            ms.append((time.perf_counter() - t0) * 1e3)
            got = {index_of[r["id"]] for r in rows}
            recalls.append(len(got & set(want.tolist())) / K)
            returned.append(len(rows))
    split = cpu()
    q = statistics.quantiles(ms, n=20)
    return Sweep(
        recall=statistics.fmean(recalls),
        returned=statistics.fmean(returned),
        mean_ms=statistics.fmean(ms),
        p50_ms=statistics.median(ms),
        p95_ms=q[18],
        other_cpu_pct=split.other_pct,
        postgres_cpu_pct=split.postgres_pct,
    )


async def timed_qps(
    conn: Any, pg: Any, shape: Shape, literals: Sequence[str], gucs: dict[str, str], seconds: float
) -> dict[str, float]:
    """Queries per second over one connection, cycling through the queries for `seconds`."""
    for literal in literals[:3]:  # warm-up
        await run_query(conn, shape.sql, shape.params(literal), gucs)
    count = 0
    with cpu_split(pg) as cpu:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            literal = literals[count % len(literals)]
            await run_query(conn, shape.sql, shape.params(literal), gucs)
            count += 1
        wall = time.perf_counter() - t0
    split = cpu()
    return {
        "qps": count / wall,
        "queries": count,
        "wall_s": wall,
        "ms_per_query": wall / count * 1e3,
        "postgres_cpu_pct": split.postgres_pct,
        "other_cpu_pct": split.other_pct,
    }


# --- the run -----------------------------------------------------------------------------


async def load(
    dsn: str, texts: Sequence[str], corpus: np.ndarray, pg: Any, args: argparse.Namespace
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
                (ids[i], owner, texts[i], json.dumps({"bucket": i % BUCKETS}), corpus[i])
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
            h.wait_for_quiet(args.quiet_wait)
            notices.clear()
            sql = (
                f"CREATE INDEX {column.index_name} ON app.documents USING hnsw"
                f" ({column.name} {column.opclass('cosine')})"
                f" WITH (m = {settings.hnsw_m}, ef_construction = {settings.hnsw_ef_construction})"
            )
            with cpu_split(pg) as cpu:
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
            print(
                f"built {label} HNSW: {build_s:.1f} s, {size / 2**20:.1f} MiB"
                f" (pg CPU {split.postgres_pct:.0f}%, other {split.other_pct:.0f}%)",
                file=sys.stderr,
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


async def measure(
    dsn: str,
    pg: Any,
    ids: list[UUID],
    corpus: np.ndarray,
    queries: np.ndarray,
    args: argparse.Namespace,
) -> dict[str, Any]:
    import asyncpg

    from keel.config import get_settings
    from keel.documents.repository import vector_literal

    max_scan = get_settings().hnsw_max_scan_tuples
    dim = corpus.shape[1]
    index_of = {doc_id: i for i, doc_id in enumerate(ids)}
    literals = [vector_literal(q.tolist()) for q in queries]
    truth = ground_truth(corpus, queries, None)
    in_bucket = np.flatnonzero(np.arange(len(corpus)) % BUCKETS == FILTER["bucket"])
    truth_filtered = ground_truth(corpus, queries, in_bucket)
    shapes = {
        (col, filt): app_shape(col, filt, dim) for col in ("vector", "halfvec") for filt in (0, 1)
    }
    out: dict[str, Any] = {
        "sql": {f"{c}{' filtered' if f else ''}": s.sql for (c, f), s in shapes.items()}
    }
    conn = await asyncpg.connect(dsn)
    try:
        # Ground truth check: numpy against the exact SQL the app runs with exact=true.
        checks: dict[str, list[float]] = {"unfiltered": [], "filtered": []}
        for i in range(min(args.verify, len(literals))):
            for key, filt, want in (("unfiltered", 0, truth), ("filtered", 1, truth_filtered)):
                shape = shapes[("vector", filt)]
                rows = await run_query(conn, shape.sql, shape.params(literals[i]), EXACT_GUCS)
                got = {index_of[r["id"]] for r in rows}
                checks[key].append(len(got & set(want[i].tolist())) / K)
        out["truth_check"] = {k: statistics.fmean(v) for k, v in checks.items()}
        out["truth_check_queries"] = min(args.verify, len(literals))
        print(f"numpy truth vs exact SQL: {out['truth_check']}", file=sys.stderr)

        # Recall at each ef_search, per index.
        h.wait_for_quiet(args.quiet_wait)
        recall: dict[str, dict[str, Any]] = {"vector": {}, "halfvec": {}}
        for ef in args.ef_search:
            for col in ("halfvec", "vector"):
                gucs = hnsw_gucs(ef, "off", max_scan, force=False)
                res = await sweep(conn, pg, shapes[(col, 0)], literals, truth, index_of, gucs)
                recall[col][str(ef)] = res.as_dict()
                print(
                    f"recall@{K} {col:>7} ef_search {ef:>3}: {res.recall:.4f}"
                    f"  {res.mean_ms:.2f} ms/query  other CPU {res.other_cpu_pct:.0f}%",
                    file=sys.stderr,
                )
        out["recall"] = recall
        chosen = {}
        for col in ("halfvec", "vector"):
            passing = [ef for ef in args.ef_search if recall[col][str(ef)]["recall"] >= args.target]
            chosen[col] = min(passing) if passing else max(args.ef_search)
        out["chosen_ef_search"] = chosen
        out["chosen_reaches_target"] = {
            col: recall[col][str(ef)]["recall"] >= args.target for col, ef in chosen.items()
        }

        # Plans, for the record.
        lit = literals[0]
        out["plans"] = {
            "halfvec_hnsw": await explain(
                conn,
                shapes[("halfvec", 0)],
                lit,
                hnsw_gucs(chosen["halfvec"], "off", max_scan, False),
            ),
            "vector_hnsw": await explain(
                conn,
                shapes[("vector", 0)],
                lit,
                hnsw_gucs(chosen["vector"], "off", max_scan, False),
            ),
            "exact": await explain(conn, shapes[("vector", 0)], lit, EXACT_GUCS),
            "filtered_forced_relaxed": await explain(
                conn,
                shapes[("halfvec", 1)],
                lit,
                hnsw_gucs(args.filter_ef, "relaxed_order", max_scan, True),
            ),
            "filtered_planner_relaxed": await explain(
                conn,
                shapes[("halfvec", 1)],
                lit,
                hnsw_gucs(args.filter_ef, "relaxed_order", max_scan, False),
            ),
            "filtered_planner_relaxed_vector": await explain(
                conn,
                shapes[("vector", 1)],
                lit,
                hnsw_gucs(args.filter_ef, "relaxed_order", max_scan, False),
            ),
        }

        # QPS: alternate HNSW (halfvec, vector) at their chosen ef_search with the exact scan.
        variants = {
            "halfvec_hnsw": (
                shapes[("halfvec", 0)],
                hnsw_gucs(chosen["halfvec"], "off", max_scan, False),
                args.qps_seconds,
            ),
            "vector_hnsw": (
                shapes[("vector", 0)],
                hnsw_gucs(chosen["vector"], "off", max_scan, False),
                args.qps_seconds,
            ),
            "exact": (shapes[("vector", 0)], EXACT_GUCS, args.exact_seconds),
        }
        qps: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
        for round_no in range(1, args.rounds + 1):
            for key, (shape, gucs, seconds) in variants.items():
                h.wait_for_quiet(args.quiet_wait)
                res_qps = await timed_qps(conn, pg, shape, literals, gucs, seconds)
                qps[key].append(res_qps)
                print(
                    f"round {round_no} {key:>12}: {res_qps['qps']:8.1f} q/s"
                    f"  {res_qps['ms_per_query']:.2f} ms  pg CPU {res_qps['postgres_cpu_pct']:.0f}%"
                    f"  other CPU {res_qps['other_cpu_pct']:.0f}%",
                    file=sys.stderr,
                )
        out["qps_runs"] = qps
        out["qps"] = {k: h.median([r["qps"] for r in v]) for k, v in qps.items()}

        # Filtered search: iterative scans off / relaxed / strict, HNSW forced; and as planned.
        h.wait_for_quiet(args.quiet_wait)
        filtered: dict[str, dict[str, Any]] = {"halfvec": {}, "vector": {}}
        for col in ("halfvec", "vector"):
            for mode in ITERATIVE_MODES:
                gucs = hnsw_gucs(args.filter_ef, mode, max_scan, force=True)
                plan = plan_nodes(await explain(conn, shapes[(col, 1)], literals[0], gucs))
                if "hnsw" not in plan:
                    raise h.BenchError(f"filtered {col} {mode}: HNSW not used: {plan}")
                res = await sweep(
                    conn, pg, shapes[(col, 1)], literals, truth_filtered, index_of, gucs
                )
                filtered[col][mode] = res.as_dict() | {"plan": plan}
                print(
                    f"filtered {col:>7} iterative {mode:>13}: recall {res.recall:.4f}"
                    f"  returned {res.returned:.2f}  {res.mean_ms:.2f} ms/query",
                    file=sys.stderr,
                )
        gucs = hnsw_gucs(args.filter_ef, "relaxed_order", max_scan, force=False)
        res = await sweep(
            conn, pg, shapes[("halfvec", 1)], literals, truth_filtered, index_of, gucs
        )
        filtered["halfvec"]["relaxed_order, planner's choice"] = res.as_dict() | {
            "plan": plan_nodes(await explain(conn, shapes[("halfvec", 1)], literals[0], gucs))
        }
        out["filtered"] = filtered
    finally:
        await conn.close()
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from keel.migrations.runner import upgrade

    others = x.settle(args)
    commit = h.git_commit()
    texts = make_texts(args.documents + args.queries, args.seed)
    vectors, embed_info = embeddings(texts, args)
    corpus, queries = vectors[: args.documents], vectors[args.documents :]
    norms = np.linalg.norm(vectors, axis=1)
    data: dict[str, Any] = {
        "name": NAME,
        "timestamp": h.now_iso(),
        "commit": commit,
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if not k.startswith("child")
        },
        "targets": TARGETS | {"recall": args.target},
        "corpus": {
            "documents": args.documents,
            "queries": args.queries,
            "text_digest": digest(texts),
            "examples": texts[:3],
            "query_examples": texts[args.documents : args.documents + 3],
            "norm_min": float(norms.min()),
            "norm_max": float(norms.max()),
        },
        "embedding": embed_info,
        "others_seen": others,
    }
    with x.embedded_cluster() as pg:
        t0 = time.perf_counter()
        upgrade(pg.url)
        data["migrate_s"] = time.perf_counter() - t0
        dsn = pg.libpq_url()
        ids, data["load"] = asyncio.run(load(dsn, texts, corpus, pg, args))
        data["pg_version"] = x.psql(pg, "SHOW server_version;")
        data["pgvector_version"] = x.psql(
            pg, "SELECT extversion FROM pg_extension WHERE extname = 'vector';"
        )
        data.update(asyncio.run(measure(dsn, pg, ids, corpus, queries, args)))
    data["figures"] = figures(data, args)
    worst = max(noise_values(data))
    data["max_other_cpu_pct"] = worst
    data["noisy"] = worst >= h.NOISY_OTHER_CPU_PCT
    return data


def noise_values(data: dict[str, Any]) -> list[float]:
    values = [
        data["embedding"].get("other_cpu_pct", 0.0) if not data["embedding"]["cached"] else 0.0
    ]
    values += [i["other_cpu_pct"] for i in data["load"]["indexes"].values()]
    values += [r["other_cpu_pct"] for runs in data["qps_runs"].values() for r in runs]
    values += [s["other_cpu_pct"] for col in data["recall"].values() for s in col.values()]
    values += [s["other_cpu_pct"] for col in data["filtered"].values() for s in col.values()]
    return values


def figures(data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The issue's figures and PASS/FAIL against the targets."""
    rec, chosen, idx = data["recall"], data["chosen_ef_search"], data["load"]["indexes"]
    ef = chosen["halfvec"]
    qps = data["qps"]
    changes = {
        e: rec["halfvec"][str(e)]["recall"] - rec["vector"][str(e)]["recall"]
        for e in args.ef_search
    }
    size_ratio = idx["halfvec"]["bytes"] / idx["vector"]["bytes"]
    return {
        "smallest_ef_search_reaching_target": {
            c: (chosen[c] if data["chosen_reaches_target"][c] else None) for c in chosen
        },
        "recall_pass": data["chosen_reaches_target"]["halfvec"],
        "qps_ratio": qps["halfvec_hnsw"] / qps["exact"],
        "qps_ratio_vector": qps["vector_hnsw"] / qps["exact"],
        "qps_ratio_pass": qps["halfvec_hnsw"] / qps["exact"] >= TARGETS["qps_ratio"],
        "size_ratio": size_ratio,
        "size_ratio_pass": size_ratio <= TARGETS["size_ratio"],
        "build_ratio": idx["halfvec"]["build_s"] / idx["vector"]["build_s"],
        "recall_change": changes,
        "recall_change_at_chosen": changes[ef],
        "recall_change_pass": changes[ef] >= TARGETS["recall_change"],
    }


# --- report -------------------------------------------------------------------------------


def pf(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def plan_nodes(plan: Sequence[str]) -> str:
    """The scan/sort nodes of a plan, in order, e.g. 'Index Scan using ix_... > Limit'."""
    keep = ("Scan", "Sort", "Gather", "Limit")
    nodes = []
    for line in plan:
        text = line.strip().removeprefix("->").strip()
        if any(k in text.split("  ")[0] for k in keep) and not text.startswith(
            ("Sort Key", "Sort Method")
        ):
            nodes.append(re.sub(r"\s+\(actual.*", "", text))
    return " → ".join(nodes)


def render(data: dict[str, Any]) -> str:
    s, f, rec, idx = data["settings"], data["figures"], data["recall"], data["load"]["indexes"]
    efs = s["ef_search"]
    ef = data["chosen_ef_search"]["halfvec"]
    qps = data["qps"]
    emb = data["embedding"]
    fil = data["filtered"]
    mib = 2**20

    def recalls(col: str) -> str:
        return " / ".join(f"{rec[col][str(e)]['recall']:.3f}" for e in efs)

    smallest = f["smallest_ef_search_reaching_target"]
    rows = [
        [
            f"recall@{K}, HNSW on `embedding_half` (app default),"
            f" ef_search {' / '.join(map(str, efs))}",
            f"**{recalls('halfvec')}**",
            f"≥ {s['target']} at some ef_search: {pf(f['recall_pass'])}"
            f" (smallest: {smallest['halfvec'] or 'none'})",
        ],
        [
            f"recall@{K}, HNSW on `embedding` (vector), same ef_search",
            f"{recalls('vector')}",
            f"reference (smallest reaching {s['target']}: {smallest['vector'] or 'none'})",
        ],
        [
            f"QPS halfvec HNSW (ef_search {ef}) ÷ exact scan",
            f"{qps['halfvec_hnsw']:,.0f} ÷ {qps['exact']:,.1f} = **{f['qps_ratio']:.0f}×**",
            f"≥ {TARGETS['qps_ratio']:.0f}×: {pf(f['qps_ratio_pass'])}",
        ],
        [
            f"QPS vector HNSW (ef_search {data['chosen_ef_search']['vector']}) ÷ exact scan",
            f"{qps['vector_hnsw']:,.0f} ÷ {qps['exact']:,.1f} = {f['qps_ratio_vector']:.0f}×",
            "reference",
        ],
        [
            "index size halfvec ÷ vector",
            f"{idx['halfvec']['bytes'] / mib:,.1f} ÷ {idx['vector']['bytes'] / mib:,.1f} MiB"
            f" = **{f['size_ratio']:.3f}**",
            f"≤ {TARGETS['size_ratio']}: {pf(f['size_ratio_pass'])}",
        ],
        [
            "build time halfvec / vector",
            f"{idx['halfvec']['build_s']:.1f} s / {idx['vector']['build_s']:.1f} s"
            f" (ratio {f['build_ratio']:.2f})",
            "report",
        ],
        [
            f"recall change halfvec − vector at ef_search {' / '.join(map(str, efs))}",
            " / ".join(
                f"**{v:+.4f}**" if int(e) == ef else f"{v:+.4f}"
                for e, v in f["recall_change"].items()
            ),
            f"≥ {TARGETS['recall_change']} (at {ef}): {pf(f['recall_change_pass'])}",
        ],
    ]
    for mode in ITERATIVE_MODES:
        r = fil["halfvec"][mode]
        v = fil["vector"][mode]
        rows.append(
            [
                f"filtered (10% bucket), ef_search {s['filter_ef']}, iterative_scan = {mode}:"
                " recall / rows returned, halfvec (vector)",
                f"**{r['recall']:.3f}** / {r['returned']:.2f}"
                f" ({v['recall']:.3f} / {v['returned']:.2f});"
                f" {r['mean_ms']:.1f} ms",
                "on vs off: report",
            ]
        )
    planned = fil["halfvec"]["relaxed_order, planner's choice"]
    rows.append(
        [
            "filtered, relaxed_order, planner's own choice (not forced), halfvec",
            f"{planned['recall']:.3f} / {planned['returned']:.2f}; {planned['mean_ms']:.1f} ms",
            "reference",
        ]
    )
    src = "cached; measured " + emb["measured_at"] if emb["cached"] else "measured this run"
    rows.append(
        [
            f"embedding throughput, one single-threaded process, batch {emb['batch_size']}"
            f" (~{emb['mean_tokens']:.0f} tokens/text)",
            f"**{emb['single_process_texts_per_s']:,.0f} sentences/s**"
            f" ({emb['workers']} processes on {emb['workers']} cores together:"
            f" {emb['aggregate_texts_per_s']:,.0f}/s)",
            f"report ({src})",
        ]
    )
    lat_rows = []
    for col in ("halfvec", "vector"):
        for e in efs:
            r = rec[col][str(e)]
            lat_rows.append(
                [
                    col,
                    e,
                    f"{r['recall']:.4f}",
                    f"{r['mean_ms']:.2f}",
                    f"{r['p50_ms']:.2f}",
                    f"{r['p95_ms']:.2f}",
                ]
            )
    qps_rows = [
        [
            k,
            f"{qps[k]:,.1f}",
            ", ".join(f"{r['qps']:,.1f}" for r in v),
            f"{h.median([r['postgres_cpu_pct'] for r in v]):.0f}",
            f"{max(r['other_cpu_pct'] for r in v):.0f}",
        ]
        for k, v in data["qps_runs"].items()
    ]
    ld = data["load"]
    lines = [
        f"### Vectors ({data['timestamp']}, {data['commit'][:12]})",
        "",
        f"{s['documents']:,} documents, {s['queries']} held-out queries, all-MiniLM-L6-v2"
        f" (384 dims, cosine), PostgreSQL {data['pg_version']},"
        f" pgvector {data['pgvector_version']},"
        f" HNSW m={ld['hnsw_m']}, ef_construction={ld['hnsw_ef_construction']}.",
        "",
        h.markdown_table(["figure", "value", "target"], rows),
        "",
        "Recall and latency per query (one connection, sequential; the app's statement in a"
        " transaction with SET LOCAL):",
        "",
        h.markdown_table(
            ["index", "ef_search", f"recall@{K}", "mean ms", "p50 ms", "p95 ms"], lat_rows
        ),
        "",
        f"QPS (one connection, sequential, {s['rounds']} alternating rounds of"
        f" {s['qps_seconds']} s HNSW / {s['exact_seconds']} s exact; median):",
        "",
        h.markdown_table(
            ["variant", "median q/s", "per round", "PostgreSQL CPU %", "max other CPU %"], qps_rows
        ),
        "",
        "Plans (query 0, nodes top-down):"
        f" halfvec HNSW: {plan_nodes(data['plans']['halfvec_hnsw'])};"
        f" exact: {plan_nodes(data['plans']['exact'])};"
        f" filtered, forced: {plan_nodes(data['plans']['filtered_forced_relaxed'])};"
        f" filtered, planner's choice: {plan_nodes(data['plans']['filtered_planner_relaxed'])}"
        " (on `embedding`:"
        f" {plan_nodes(data['plans']['filtered_planner_relaxed_vector'])}).",
        "",
        f"Ground truth: numpy brute force (float64 dot products of the unit vectors); on the"
        f" first {data['truth_check_queries']} queries it matches the exact SQL"
        f" (`enable_indexscan = off`) at {data['truth_check']['unfiltered']:.3f} (unfiltered) and"
        f" {data['truth_check']['filtered']:.3f} (filtered) overlap.",
        f"Index builds: `maintenance_work_mem = {ld['maintenance_work_mem']}`,"
        f" `max_parallel_maintenance_workers = {ld['max_parallel_maintenance_workers']}`,"
        f" `shared_buffers = {ld['shared_buffers']}`; the migration built"
        f" {', '.join(ld['migration_hnsw_indexes']) or 'no HNSW index'} (dropped first)."
        f" Table {ld['table_total_bytes'] / mib:,.0f} MiB"
        f" (heap {ld['table_heap_bytes'] / mib:,.0f} MiB),"
        f" GIN on metadata {ld['gin_bytes'] / mib:,.1f} MiB;"
        f" COPY of the rows {ld['copy_s']:.1f} s.",
        f"Other processes used at most {data['max_other_cpu_pct']:.0f}% of a core during the"
        " measured phases.",
    ]
    if data["noisy"]:
        lines += [
            "",
            f"**Warning: other processes used up to {data['max_other_cpu_pct']:.0f}% of a core"
            " during the runs, so timings may be skewed (recall and sizes are not); re-run on a"
            " quiet machine.**",
        ]
    return "\n".join(lines)


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="embedding processes")
    parser.add_argument("--ef-search", type=int_list, default=[40, 100, 200])
    parser.add_argument("--target", type=float, default=TARGETS["recall"], help="recall target")
    parser.add_argument("--filter-ef", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--qps-seconds", type=float, default=10.0)
    parser.add_argument("--exact-seconds", type=float, default=20.0)
    parser.add_argument("--verify", type=int, default=10, help="queries checked against SQL")
    parser.add_argument("--maintenance-work-mem", default="1GB")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "keel-bench")
    parser.add_argument("--no-cache", action="store_true", help="re-embed even if cached")
    parser.add_argument("--quiet-wait", type=float, default=120.0)
    x.add_extra_args(parser)
    parser.add_argument("--child-range", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-digest", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_range is not None:
        return embed_child(args)
    data = run(args)
    markdown = render(data)
    h.write_results(NAME, data, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
