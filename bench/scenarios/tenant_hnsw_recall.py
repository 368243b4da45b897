"""Filtered HNSW recall@10 for one tenant holding 1% of 100k documents, and its latency.

Data: `keel seed --tenants 100` (100 users, each with a personal organization), then
`--documents` rows in `app.documents` spread evenly over them by binary COPY, so the
measured tenant holds 1/`--tenants` of the table. Vectors (the dimension the migration
gave `documents.embedding`, from the settings) are clustered with a low intrinsic
dimension, like text embeddings: `--clusters` centres in a `--latent`-dimensional space,
points around them, mapped to the full dimension by one random linear map plus a little
isotropic noise, normalised. Tenants are assigned at random, so the tenant filter is
independent of where a vector lies (the hard case for a filtered HNSW walk). Queries are
held-out points of the same distribution. The migration's HNSW index(es) are dropped
before the COPY and rebuilt after it with their own definitions (timed).

Searched through the API: `POST /api/v1/orgs/{org_id}/documents/search`
(`{"vector": ..., "limit": 10}`) as the tenant's owner, on a Keel server with
production defaults: the service picks the index, ef_search and the iterative scan.
Ground truth: the same tenant's 10 nearest by an exact scan in SQL (`SET
enable_indexscan = off`, ORDER BY distance), checked against numpy.

Latency, SQL level (the repository's statement, `keel.documents.repository.nearest`, with
the scan settings the service uses; one transaction per query, sequential): the tenant
filter ÷ no filter (the whole table, as in the admin-wide search before tenancy), and the
exact filtered scan. The API's own latency (HTTP, sequential) is reported too.
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
from bench.harness.pg import drop_queued_jobs, embedded_cluster, psql
from bench.harness.proc import source_tree
from bench.harness.scenario import Results, Scenario, add_quick, apply_quick, first_line
from bench.harness.server import add_server_args, new_secret, server_config, uvicorn_server
from keel.config import Settings
from keel.core.db import create_database
from keel.core.viewer import Viewer
from keel.documents import repository
from keel.documents.models import OPERATORS
from keel.documents.schemas import DocumentSearch
from keel.documents.service import search_documents
from keel.seed.repository import connect

NAME = "tenant_hnsw_recall"
APP = "keel.app:create_app"
SEARCH = API + "/orgs/{org_id}/documents/search"
TARGET = 0.95
K = 10
QUICK = {"documents": 5_000, "queries": 20, "clusters": 20}
_VECTOR_SCHEMA = (
    "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'"
)
_HNSW_DEFS = (
    "SELECT indexname || '|' || indexdef FROM pg_indexes "
    "WHERE schemaname = 'app' AND tablename = 'documents' AND indexdef LIKE '%USING hnsw%'"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_args(parser)
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=100, help="the tenant holds 1/this")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--latent", type=int, default=24, help="intrinsic dimension")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--maintenance-work-mem", default="1GB")
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


def load_documents(pg: Any, vectors: np.ndarray, tenants: Sequence[str], seed: int) -> Loaded:
    """COPY the documents, each in a random tenant, without HNSW indexes; then rebuild
    those with the migration's own definitions."""
    defs = [line.split("|", 1) for line in psql(pg, _HNSW_DEFS).splitlines()]
    if not defs:
        raise BenchError("the migration made no HNSW index on app.documents")
    psql(pg, "".join(f"DROP INDEX app.{name};" for name, _ in defs))
    rng = np.random.default_rng(seed + 1)
    owners = [tenants[i] for i in rng.integers(len(tenants), size=len(vectors))]
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


def vector_text(vector: np.ndarray) -> str:
    return repository.vector_literal(vector.tolist())


def exact_sql(pg: Any, tenant: str, query: np.ndarray, operator: str) -> list[str]:
    """The tenant's K nearest by a sequential scan (index scans off)."""
    # A checked UUID, an operator from Keel's table, numbers: nothing from outside.
    where = f"WHERE tenant_id = '{UUID(tenant)}'"
    order = f"ORDER BY embedding {operator} '{vector_text(query)}'::vector, id LIMIT {K}"
    sql = "SET enable_indexscan = off; SET enable_bitmapscan = off; "
    sql += f"SELECT id FROM app.documents {where} {order};"  # noqa: S608
    return psql(pg, sql).splitlines()


def recall(found: Sequence[str], truth: Sequence[str]) -> float:
    return len(set(found) & set(truth)) / len(truth)


# name -> (a platform admin: no tenant filter, an exact scan)
SERVICE_SEARCHES = {
    "filtered": (False, False),
    "unfiltered": (True, False),
    "filtered_exact": (False, True),
}


def _settings(env: Mapping[str, str]) -> Settings:
    """The servers' vector settings (their defaults), for a client in this process."""
    return Settings(_env_file=None, database_url=env["DATABASE_URL"], environment="testing")


async def service_searches(settings: Settings, owner: str, queries: np.ndarray) -> dict[str, Any]:
    """Each query through the service function the API calls, in this process, one
    transaction each, sequential: the tenant's search, the whole table's (a platform
    admin: no filter) and the tenant's exact search. ms and ids per query."""
    database = create_database(settings, str(settings.database_url))
    tenant = UUID(owner)
    out: dict[str, Any] = {kind: {"ms": [], "ids": []} for kind in SERVICE_SEARCHES}
    try:
        async with database.sessionmaker() as session:
            layout = await repository.load_layout(session)
            await session.commit()
            for measured in (False, True):  # one pass to warm the caches, one measured
                for vector in queries:
                    for kind, (admin, exact) in SERVICE_SEARCHES.items():
                        viewer = Viewer(
                            user_id=uuid4() if admin else tenant,
                            family_id=uuid4(),
                            is_superuser=admin,
                            is_active=True,
                        )
                        search = DocumentSearch(vector=vector.tolist(), limit=K, exact=exact)
                        t0 = time.perf_counter()
                        async with session.begin():
                            result = await search_documents(
                                session, viewer, layout, settings, search, None
                            )
                        if measured:
                            out[kind]["ms"].append((time.perf_counter() - t0) * 1000)
                            out[kind]["ids"].append([str(hit.id) for hit in result.items])
                        if kind == "filtered":
                            out["index"] = result.index
    finally:
        await database.dispose()
    return out


def api_search(
    base_url: str, username: str, org_id: str, queries: np.ndarray
) -> tuple[list[list[str]], list[float], dict[str, Any]]:
    """Each query through the API, sequentially: the ids found, ms per request, and the
    first reply's description of the search (index, ef_search, iterative scan)."""
    path = SEARCH.format(org_id=org_id)
    found: list[list[str]] = []
    ms: list[float] = []
    meta: dict[str, Any] = {}
    with httpx.Client(base_url=base_url, timeout=60) as client:
        auth = bearer(login(client, username, SEEDED_PASSWORD))
        for vector in queries:
            body = {"vector": vector.tolist(), "limit": K}
            t0 = time.perf_counter()
            reply = expect(client.post(path, json=body, headers=auth), 200, f"POST {path}")
            ms.append((time.perf_counter() - t0) * 1000)
            data = reply.json()
            found.append([item["id"] for item in data["items"]])
            meta = meta or {k: v for k, v in data.items() if k != "items"}
    return found, ms, meta


def numpy_truth(docs: np.ndarray, queries: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """Row numbers of each query's K nearest (cosine) among `rows` (all if None)."""
    pool = docs if rows is None else docs[rows]
    nearest = np.argsort(-(queries @ pool.T), axis=1)[:, :K]
    return nearest if rows is None else rows[nearest]


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
        seeded = seed(pg.url, seed=args.seed, env=env, src=src, extra=[f"--tenants={args.tenants}"])
        users = [
            line.split("|")
            for line in psql(
                pg,
                "SELECT id || '|' || username || '|' || is_active FROM app.users"
                " ORDER BY username;",
            ).splitlines()
        ]
        owner, username = next((u[0], u[1]) for u in users if u[2] == "true")
        settings = _settings(env)
        dimension = int(psql(pg, repository._DIMENSION + ";"))
        say(f"{args.documents:,} documents of dimension {dimension} over {len(users)} tenants")
        vectors = make_vectors(args, dimension)
        docs, queries = vectors[: args.documents], vectors[args.documents :]
        loaded = load_documents(pg, docs, [u[0] for u in users], args.seed)
        seeded["dropped_queued_jobs"] = drop_queued_jobs(pg)
        mine = np.array([row for row, t in enumerate(loaded.tenants) if t == owner])
        say(f"the tenant holds {len(mine):,} of {len(docs):,} documents; exact searches ...")
        operator = OPERATORS[settings.vector_metric]
        truth = [exact_sql(pg, owner, q, operator) for q in queries]
        say("searches through the service ...")
        service = asyncio.run(service_searches(settings, owner, queries))
        env["KEEL_AUTO_MIGRATE"] = "false"
        with uvicorn_server("keel", APP, env=env, log_path=Path(tmp) / "keel.log") as server:
            api_found, api_ms, api_meta = api_search(server.url(), username, owner, queries)
    by_numpy = [[loaded.ids[r] for r in rows] for rows in numpy_truth(docs, queries, mine)]
    whole_table = [[loaded.ids[r] for r in rows] for rows in numpy_truth(docs, queries, None)]
    figures: dict[str, Any] = {
        "recall_api": mean_recall(api_found, truth),
        "recall_service": mean_recall(service["filtered"]["ids"], truth),
        "recall_unfiltered": mean_recall(service["unfiltered"]["ids"], whole_table),
        "exact_sql_vs_numpy": mean_recall(by_numpy, truth),
        "api_equals_service": float(
            np.mean([a == s for a, s in zip(api_found, service["filtered"]["ids"], strict=True)])
        ),
        "latency_ms": {
            **{kind: percentiles(service[kind]["ms"]) for kind in SERVICE_SEARCHES},
            "api_filtered": percentiles(api_ms),
        },
    }
    lat = figures["latency_ms"]
    figures["filtered_vs_unfiltered_p50"] = lat["filtered"]["p50"] / lat["unfiltered"]["p50"]
    figures["target"] = TARGET
    figures["pass"] = figures["recall_api"] >= TARGET
    return {
        "server": config.describe(),
        "settings": {"search": SEARCH, "k": K, "dimension": dimension},
        "seeded": {
            **seeded,
            "tenant_documents": len(mine),
            "documents_total": len(docs),
            "load_seconds": loaded.load_seconds,
            "hnsw_build_seconds": loaded.build_seconds,
        },
        "search": {**api_meta, "service_index": service["index"]},
        "figures": figures,
        "pass": figures["pass"],
        "others_seen": others,
    }


def mean_recall(found: Sequence[Sequence[str]], truth: Sequence[Sequence[str]]) -> float:
    return float(np.mean([recall(f, t) for f, t in zip(found, truth, strict=True)]))


HEADER = ["figure", "value", "target"]


def _rows(data: Mapping[str, Any]) -> list[list[str]]:
    f, seeded, search = data["figures"], data["seeded"], data["search"]
    lat = f["latency_ms"]
    share = seeded["tenant_documents"] / seeded["documents_total"]
    how = (
        f"{search.get('index')}, ef_search {search.get('ef_search')}, "
        f"iterative {search.get('iterative_scan')}"
    )
    return [
        [
            f"recall@{K}, one tenant ({seeded['tenant_documents']:,} of "
            f"{seeded['documents_total']:,} documents, {share:.1%}), through the API ({how})",
            f"**{f['recall_api']:.3f}**",
            f"≥ {f['target']}: {res.verdict(f['pass'])}",
        ],
        [
            "latency p50 / p95, tenant filter ÷ none (service, in-process)",
            f"{lat['filtered']['p50']:.2f} / {lat['filtered']['p95']:.2f} ms ÷ "
            f"{lat['unfiltered']['p50']:.2f} / {lat['unfiltered']['p95']:.2f} ms = "
            f"**{f['filtered_vs_unfiltered_p50']:.2f}×**",
            "report",
        ],
        [
            "recall@10 without a filter (whole table); exact filtered scan p50",
            f"{f['recall_unfiltered']:.3f}; {lat['filtered_exact']['p50']:.2f} ms",
            "reference",
        ],
        [
            "API p50 / p95 (HTTP, sequential)",
            f"{lat['api_filtered']['p50']:.2f} / {lat['api_filtered']['p95']:.2f} ms",
            "report",
        ],
    ]


def render(data: Mapping[str, Any]) -> str:
    s, f, seeded = data["settings"], data["figures"], data["seeded"]
    lines = [
        f"### Filtered HNSW recall for one tenant ({data['timestamp']}, {data['commit'][:12]})",
        "",
        res.markdown_table(HEADER, _rows(data)),
        "",
        f"{s['documents']:,} documents, dimension {s['dimension']}, {s['clusters']} clusters "
        f"in {s['latent']} latent dimensions, {s['tenants']} tenants, {s['queries']} held-out "
        f"queries. COPY {seeded['load_seconds']:.1f} s, HNSW rebuild "
        f"{seeded['hnsw_build_seconds']:.1f} s. Exact SQL ground truth agrees with numpy at "
        f"{f['exact_sql_vs_numpy']:.3f}; the API returned the service's ids for "
        f"{f['api_equals_service']:.0%} of the queries. {res.server_line(data)}.",
    ]
    return "\n".join(lines).rstrip()


def table(results: Results) -> str:
    stem, data = next(iter(results.items()))
    note = f"From {res.source_line(data, stem)} ({res.server_line(data)})."
    return f"{res.markdown_table(HEADER, _rows(data))}\n\n{note}"


def headline(results: Results) -> list[list[str]]:
    f = next(iter(results.values()))["figures"]
    label = "filtered HNSW recall@10, one tenant holding 1% of the documents"
    return [[label, f"{f['recall_api']:.3f}", f"≥ {f['target']} ({res.verdict(f['pass'])})"]]


SCENARIO = Scenario(
    name=NAME,
    summary=first_line(__doc__),
    add_arguments=add_arguments,
    run=run,
    render=render,
    table=table,
    headline=headline,
)
