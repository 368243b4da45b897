"""Filtered HNSW recall@10 for one tenant holding 1% of 100k documents, and its latency.

Data: `keel seed --tenants 2` (two users, each with a personal organization), then
`--documents` rows in `app.documents` by binary COPY: each in the measured tenant with
probability `--share` (1%), else in the other one (99%). Tenants are drawn independently
of the vectors, so the filter is unrelated to where a vector lies (the hard case for a
filtered HNSW walk). Vectors have the dimension the migration gave `documents.embedding`
(from the settings) and are clustered with a low intrinsic dimension, like text
embeddings: `--clusters` centres in `--latent` dimensions, points around them, one random
linear map to the full dimension plus a little isotropic noise, normalised. Queries are
held-out points of the same distribution. The migration's HNSW index(es) are dropped
before the COPY and rebuilt after it with their own definitions (timed).

Every search goes through the API, `POST /api/v1/orgs/{org_id}/documents/search`
(`{"vector": ..., "limit": 10}`) as the tenant's owner, on one Keel server with
production defaults, sequentially: the service picks the index, ef_search and iterative
scan, and the planner the plan, as for any client. Ground truth: the tenant's 10 nearest
by an exact scan in SQL (`SET enable_indexscan = off`, `enable_bitmapscan = off`,
ORDER BY distance), checked against numpy.

Latency, per search kind (HTTP p50/p95 and the search statement's mean time in
pg_stat_statements): the 1% tenant; the 99% tenant, whose filter drops almost nothing
(the unfiltered walk: cross-tenant search is gone from the API); the 1% tenant with
`"exact": true`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from uuid import UUID, uuid4

import httpx
import numpy as np
from pgvector.asyncpg import register_vector

from bench.harness import results as res
from bench.harness.base import API, BenchError, percentiles, say
from bench.harness.keel_api import SEEDED_PASSWORD, bearer, expect, login, seed
from bench.harness.noise import settle
from bench.harness.pg import drop_queued_jobs, embedded_cluster, pgss_reset, pgss_top, psql
from bench.harness.proc import source_tree
from bench.harness.scenario import Results, Scenario, add_quick, apply_quick, first_line
from bench.harness.server import add_server_args, new_secret, server_config, uvicorn_server
from keel.documents.repository import vector_literal
from keel.seed.repository import connect

NAME = "tenant_hnsw_recall"
APP = "keel.app:create_app"
SEARCH = API + "/orgs/{org_id}/documents/search"
TARGET = 0.95
K = 10
QUICK = {"documents": 5_000, "queries": 20, "clusters": 20, "share": 0.02}
# The search kinds: (tenant, exact); tenant 0 holds --share of the documents, 1 the rest.
# (tenant, exact, database setting or None); tenant 0 holds --share, tenant 1 the rest.
# `small_hnsw`: the small tenant's search again, on a server whose connections have
# enable_sort off, so the planner walks the HNSW graph instead of sorting the tenant's rows
# read by its btree (what it prefers for a small tenant): filtered HNSW's own recall.
KINDS: dict[str, tuple[int, bool, str | None]] = {
    "small_tenant": (0, False, None),
    "small_exact": (0, True, None),
    "big_tenant": (1, False, None),
    "small_hnsw": (0, False, "enable_sort = off"),
}
_VECTOR_SCHEMA = (
    "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'"
)
_HNSW_DEFS = (
    "SELECT indexname || '|' || indexdef FROM pg_indexes "
    "WHERE schemaname = 'app' AND tablename = 'documents' AND indexdef LIKE '%USING hnsw%'"
)
_DIMENSION = (
    "SELECT atttypmod FROM pg_attribute"
    " WHERE attrelid = 'app.documents'::regclass AND attname = 'embedding';"
)
_INDEX_SCANS = (
    "SELECT indexrelname || '|' || idx_scan FROM pg_stat_user_indexes "
    "WHERE schemaname = 'app' AND relname = 'documents' AND idx_scan > 0;"
)
STATS_FLUSH_S = 11.0  # an idle backend reports its statistics within 10 s
_USERS = "SELECT id || '|' || username FROM app.users WHERE is_active ORDER BY username;"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_args(parser)
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--share", type=float, default=0.01, help="the small tenant's share")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--latent", type=int, default=24, help="intrinsic dimension")
    parser.add_argument("--seed", type=int, default=1)
    add_quick(parser, QUICK)


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


class Searched(NamedTuple):
    found: list[list[str]]
    ms: list[float]
    reply: dict[str, Any]  # the first reply's description: index, ef_search, iterative scan
    sql: list[dict[str, Any]]  # pg_stat_statements' busiest statements meanwhile
    index_scans: dict[str, int]  # app.documents' indexes: scans meanwhile (which plan ran)


def api_searches(
    pg: Any,
    client: httpx.Client,
    org_id: str,
    queries: np.ndarray,
    exact: bool,
    count_scans: bool = False,
) -> Searched:
    path = SEARCH.format(org_id=org_id)
    found: list[list[str]] = []
    ms: list[float] = []
    reply: dict[str, Any] = {}
    if count_scans:  # what earlier statements left unreported first, then from zero
        time.sleep(STATS_FLUSH_S)
        psql(pg, "SELECT pg_stat_reset();")
    pgss_reset(pg)
    for vector in queries:
        body = {"vector": vector.tolist(), "limit": K, "exact": exact}
        t0 = time.perf_counter()
        answer = expect(client.post(path, json=body), 200, f"POST {path}")
        ms.append((time.perf_counter() - t0) * 1000)
        data = answer.json()
        found.append([item["id"] for item in data["items"]])
        reply = reply or {k: v for k, v in data.items() if k != "items"}
    if count_scans:
        time.sleep(STATS_FLUSH_S)
    scans = index_scans(pg) if count_scans else {}
    return Searched(found, ms, reply, pgss_top(pg, 3), scans)


def index_scans(pg: Any) -> dict[str, int]:
    rows = psql(pg, _INDEX_SCANS).splitlines()
    return {name: int(count) for name, count in (row.split("|") for row in rows)}


def search_ms(statements: Sequence[Mapping[str, Any]]) -> float | None:
    """The search statement's mean time (ms) among pg_stat_statements' busiest."""
    found = [s["mean_ms"] for s in statements if "nearest" in s["query"]]
    return float(found[0]) if found else None


def _search_all(
    pg: Any,
    env: Mapping[str, str],
    tmp: Path,
    users: Sequence[Sequence[str]],
    queries: np.ndarray,
    kinds: Mapping[str, tuple[int, bool]],
    setting: str | None,
) -> dict[str, Searched]:
    """Each kind of search through a fresh server, its database `setting` applied to
    every connection (ALTER DATABASE ... SET, reset afterwards)."""
    database = psql(pg, "SELECT current_database();")
    if setting:
        psql(pg, f"ALTER DATABASE {database} SET {setting};")
    searched: dict[str, Searched] = {}
    try:
        log = tmp / f"keel-{len(kinds)}-{bool(setting)}.log"
        with (
            uvicorn_server("keel", APP, env=env, log_path=log) as server,
            httpx.Client(base_url=server.url(), timeout=60) as client,
        ):
            for tenant, (who, username) in enumerate(users[:2]):
                client.headers.update(bearer(login(client, username, SEEDED_PASSWORD)))
                for kind, (of, exact) in kinds.items():
                    if of == tenant:
                        say(f"{kind}: {len(queries)} searches through the API ...")
                        api_searches(pg, client, who, queries[:10], exact)  # warm-up
                        searched[kind] = api_searches(pg, client, who, queries, exact, True)
    finally:
        if setting:
            psql(pg, f"ALTER DATABASE {database} RESET {setting.split()[0]};")
    return searched


def run(args: argparse.Namespace) -> dict[str, Any]:
    apply_quick(args)
    config = server_config(args)
    config.prepare()
    others = settle(args.quiet_wait, args.other_wait)
    with (
        source_tree(args.ref) as src,
        embedded_cluster() as pg,
        tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp,
    ):
        env = config.env(database_url=pg.url, data_dir=tmp, secret=new_secret(), src=src)
        seeded = seed(pg.url, seed=args.seed, env=env, src=src, extra=["--tenants=2"])
        users = [line.split("|") for line in psql(pg, _USERS).splitlines()]
        if len(users) < 2:
            raise BenchError("keel seed --tenants 2 made fewer than two active users")
        tenants = [u[0] for u in users[:2]]
        dimension = int(psql(pg, _DIMENSION))
        say(f"{args.documents:,} documents of dimension {dimension}, {args.share:.1%} in one")
        vectors = make_vectors(args, dimension)
        docs, queries = vectors[: args.documents], vectors[args.documents :]
        loaded = load_documents(pg, docs, tenants, args.share)
        seeded["dropped_queued_jobs"] = drop_queued_jobs(pg)
        rows = [np.array([r for r, t in enumerate(loaded.tenants) if t == x]) for x in tenants]
        say(f"the tenants hold {len(rows[0]):,} and {len(rows[1]):,}; exact searches ...")
        truth = [exact_sql(pg, tenants[0], q) for q in queries]
        env["KEEL_AUTO_MIGRATE"] = "false"
        searched: dict[str, Searched] = {}
        for setting in (None, "enable_sort = off"):
            kinds = {k: v[:2] for k, v in KINDS.items() if v[2] == setting}
            searched |= _search_all(pg, env, Path(tmp), users, queries, kinds, setting)
    ids = loaded.ids
    numpy_small = [[ids[r] for r in found] for found in numpy_truth(docs, queries, rows[0])]
    numpy_big = [[ids[r] for r in found] for found in numpy_truth(docs, queries, rows[1])]
    figures: dict[str, Any] = {
        "recall": recall(searched["small_tenant"].found, truth),
        "recall_big_tenant": recall(searched["big_tenant"].found, numpy_big),
        "recall_exact_via_api": recall(searched["small_exact"].found, truth),
        "recall_hnsw_walk": recall(searched["small_hnsw"].found, truth),
        "exact_sql_vs_numpy": recall(numpy_small, truth),
        "latency_ms": {k: percentiles(v.ms) for k, v in searched.items()},
        "sql_mean_ms": {k: search_ms(v.sql) for k, v in searched.items()},
    }
    lat = figures["latency_ms"]
    figures["small_vs_big_p50"] = lat["small_tenant"]["p50"] / lat["big_tenant"]["p50"]
    figures["target"] = TARGET
    figures["pass"] = figures["recall"] >= TARGET
    return {
        "server": config.describe(),
        "settings": {"search": SEARCH, "k": K, "dimension": dimension},
        "seeded": {
            **seeded,
            "tenant_documents": [len(r) for r in rows],
            "load_seconds": loaded.load_seconds,
            "hnsw_build_seconds": loaded.build_seconds,
        },
        "searches": {
            k: {"reply": v.reply, "sql_top": v.sql, "index_scans": v.index_scans}
            for k, v in searched.items()
        },
        "figures": figures,
        "pass": figures["pass"],
        "others_seen": others,
    }


HEADER = ["figure", "value", "target"]


def _how(reply: Mapping[str, Any]) -> str:
    return (
        f"{reply.get('index')}, ef_search {reply.get('ef_search')}, "
        f"iterative {reply.get('iterative_scan')}"
    )


def _rows(data: Mapping[str, Any]) -> list[list[str]]:
    f, seeded, searches = data["figures"], data["seeded"], data["searches"]
    lat, sql = f["latency_ms"], f["sql_mean_ms"]
    small, big = seeded["tenant_documents"]
    share = small / (small + big)

    def ms(kind: str) -> str:
        mean = f", SQL {sql[kind]:.2f}" if sql.get(kind) is not None else ""
        return f"{lat[kind]['p50']:.2f} / {lat[kind]['p95']:.2f}{mean}"

    return [
        [
            f"recall@{K}, one tenant holding {small:,} of {small + big:,} documents "
            f"({share:.1%}), through the API ({_how(searches['small_tenant']['reply'])})",
            f"**{f['recall']:.3f}**",
            f"≥ {f['target']}: {res.verdict(f['pass'])}",
        ],
        [
            f"latency ms p50 / p95 (HTTP), the {share:.0%} tenant ÷ the {1 - share:.0%} "
            "tenant (≈ unfiltered)",
            f"{ms('small_tenant')} ÷ {ms('big_tenant')} = **{f['small_vs_big_p50']:.2f}×**",
            "report",
        ],
        [
            f"recall@{K} of the {share:.0%} tenant when the plan walks the HNSW graph "
            "(`enable_sort = off` for the server's connections); ms p50 / p95",
            f"**{f['recall_hnsw_walk']:.3f}**; {ms('small_hnsw')}",
            "report",
        ],
        [
            f"recall@{K} of the {1 - share:.0%} tenant; the {share:.0%} tenant's exact search "
            "(ms p50 / p95)",
            f"{f['recall_big_tenant']:.3f}; {ms('small_exact')}",
            "reference",
        ],
    ]


def _scans(scans: Mapping[str, int] | None) -> str:
    if scans is None:
        return "not recorded"
    return ", ".join(f"`{name}` {count}" for name, count in scans.items()) or "none"


def render(data: Mapping[str, Any]) -> str:
    s, f, seeded = data["settings"], data["figures"], data["seeded"]
    lines = [
        f"### Filtered HNSW recall for one tenant ({data['timestamp']}, {data['commit'][:12]})",
        "",
        res.markdown_table(HEADER, _rows(data)),
        "",
        f"{s['documents']:,} documents, dimension {s['dimension']}, {s['clusters']} clusters "
        f"in {s['latent']} latent dimensions, {s['queries']} held-out queries. COPY "
        f"{seeded['load_seconds']:.1f} s, HNSW rebuild {seeded['hnsw_build_seconds']:.1f} s. "
        f"The exact SQL ground truth agrees with numpy at {f['exact_sql_vs_numpy']:.3f}; "
        f"`exact: true` through the API at {f['recall_exact_via_api']:.3f}. SQL = the search "
        f"statement's mean time in pg_stat_statements. {res.server_line(data)}.",
        "",
        "Index scans per kind of search (pg_stat_user_indexes, which plan ran): "
        + "; ".join(
            f"{kind}: {_scans(v.get('index_scans'))}" for kind, v in data["searches"].items()
        )
        + ".",
    ]
    return "\n".join(lines).rstrip()


def table(results: Results) -> str:
    stem, data = next(iter(results.items()))
    note = f"From {res.source_line(data, stem)} ({res.server_line(data)})."
    return f"{res.markdown_table(HEADER, _rows(data))}\n\n{note}"


def headline(results: Results) -> list[list[str]]:
    f = next(iter(results.values()))["figures"]
    label = "filtered vector search recall@10 via the API, one tenant holding 1% of documents"
    return [[label, f"{f['recall']:.3f}", f"≥ {f['target']} ({res.verdict(f['pass'])})"]]


SCENARIO = Scenario(
    name=NAME,
    summary=first_line(__doc__),
    add_arguments=add_arguments,
    run=run,
    render=render,
    table=table,
    headline=headline,
)
