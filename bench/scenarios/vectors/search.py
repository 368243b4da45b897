"""The vector scenario's database side: load, index builds, and the app's k-NN statement."""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import numpy as np

from bench.harness.base import BenchError, median, say
from bench.harness.noise import cpu_split, wait_for_quiet
from bench.harness.pg import postmaster_pid
from bench.scenarios.vectors.corpus import Indices, K, Vectors, ground_truth
from keel.core.embedded import EmbeddedPostgres

FILTER = {"bucket": 3}
BUCKETS = 10
COPY_BATCH = 5_000
ITERATIVE_MODES = ("off", "relaxed_order", "strict_order")


@dataclass(frozen=True)
class Shape:
    """The app's k-NN statement for one column / filter, in asyncpg's $n form."""

    column: str  # "vector" or "halfvec"
    filtered: bool
    sql: str
    names: tuple[str, ...]
    tenant_id: UUID  # the one organization holding the whole corpus

    def params(self, literal: str) -> list[Any]:
        values = {
            "query": literal,
            "limit": K,
            "candidates": candidates_for(K),
            "filter": json.dumps(FILTER),
            "tenant_id": self.tenant_id,
        }
        return [values[n] for n in self.names]


def candidates_for(limit: int) -> int:
    from keel.documents.repository import candidates_for as app_candidates

    return app_candidates(limit)


def app_shape(column: str, filtered: bool, dimension: int, tenant_id: UUID) -> Shape:
    from keel.documents.models import FULL, HALF
    from keel.documents.repository import Nearest, nearest_params, nearest_sql

    query = Nearest(
        vector=[0.0] * dimension,
        metric="cosine",
        column=HALF if column == "halfvec" else FULL,
        limit=K,
        tenant_id=tenant_id,
        metadata_filter=dict(FILTER) if filtered else None,
    )
    sql, names = nearest_sql(query, dimension), list(nearest_params(query))

    def sub(match: re.Match[str]) -> str:
        return f"${names.index(match[1]) + 1}"

    pattern = r"(?<!:):(" + "|".join(map(re.escape, names)) + r")\b"
    return Shape(column, filtered, re.sub(pattern, sub, sql), tuple(names), tenant_id)


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
    pg: EmbeddedPostgres,
    shape: Shape,
    literals: Sequence[str],
    truth: Indices,
    index_of: dict[UUID, int],
    gucs: dict[str, str],
) -> Sweep:
    """Mean recall@K (and returned rows, latency) of `shape` over every query."""
    recalls, returned, ms = [], [], []
    with cpu_split(postmaster=postmaster_pid(pg)) as cpu:
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
    conn: Any,
    pg: EmbeddedPostgres,
    shape: Shape,
    literals: Sequence[str],
    gucs: dict[str, str],
    seconds: float,
) -> dict[str, float]:
    """Queries per second over one connection, cycling through the queries for `seconds`."""
    for literal in literals[:3]:  # warm-up
        await run_query(conn, shape.sql, shape.params(literal), gucs)
    count = 0
    with cpu_split(postmaster=postmaster_pid(pg)) as cpu:
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


async def measure(
    dsn: str,
    pg: EmbeddedPostgres,
    ids: list[UUID],
    corpus: Vectors,
    queries: Vectors,
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
    conn = await asyncpg.connect(dsn)
    try:
        tenant = await conn.fetchval("SELECT DISTINCT tenant_id FROM app.documents")
        shapes = {
            (col, filt): app_shape(col, bool(filt), dim, tenant)
            for col in ("vector", "halfvec")
            for filt in (0, 1)
        }
        out: dict[str, Any] = {
            "sql": {f"{c}{' filtered' if f else ''}": s.sql for (c, f), s in shapes.items()}
        }
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
        say(f"numpy truth vs exact SQL: {out['truth_check']}")

        # Recall at each ef_search, per index.
        wait_for_quiet(args.quiet_wait)
        recall: dict[str, dict[str, Any]] = {"vector": {}, "halfvec": {}}
        for ef in args.ef_search:
            for col in ("halfvec", "vector"):
                gucs = hnsw_gucs(ef, "off", max_scan, force=False)
                res = await sweep(conn, pg, shapes[(col, 0)], literals, truth, index_of, gucs)
                recall[col][str(ef)] = res.as_dict()
                say(
                    f"recall@{K} {col:>7} ef_search {ef:>3}: {res.recall:.4f}"
                    f"  {res.mean_ms:.2f} ms/query  other CPU {res.other_cpu_pct:.0f}%"
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
                wait_for_quiet(args.quiet_wait)
                res_qps = await timed_qps(conn, pg, shape, literals, gucs, seconds)
                qps[key].append(res_qps)
                say(
                    f"round {round_no} {key:>12}: {res_qps['qps']:8.1f} q/s"
                    f"  {res_qps['ms_per_query']:.2f} ms  pg CPU {res_qps['postgres_cpu_pct']:.0f}%"
                    f"  other CPU {res_qps['other_cpu_pct']:.0f}%"
                )
        out["qps_runs"] = qps
        out["qps"] = {k: median([r["qps"] for r in v]) for k, v in qps.items()}

        # Filtered search: iterative scans off / relaxed / strict, HNSW forced; and as planned.
        wait_for_quiet(args.quiet_wait)
        filtered: dict[str, dict[str, Any]] = {"halfvec": {}, "vector": {}}
        for col in ("halfvec", "vector"):
            for mode in ITERATIVE_MODES:
                gucs = hnsw_gucs(args.filter_ef, mode, max_scan, force=True)
                plan = plan_nodes(await explain(conn, shapes[(col, 1)], literals[0], gucs))
                if "hnsw" not in plan:
                    raise BenchError(f"filtered {col} {mode}: HNSW not used: {plan}")
                res = await sweep(
                    conn, pg, shapes[(col, 1)], literals, truth_filtered, index_of, gucs
                )
                filtered[col][mode] = res.as_dict() | {"plan": plan}
                say(
                    f"filtered {col:>7} iterative {mode:>13}: recall {res.recall:.4f}"
                    f"  returned {res.returned:.2f}  {res.mean_ms:.2f} ms/query"
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
