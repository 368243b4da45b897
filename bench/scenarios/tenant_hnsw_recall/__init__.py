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
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import numpy as np

from bench.harness.base import API, BenchError, percentiles, say
from bench.harness.keel_api import SEEDED_PASSWORD, bearer, expect, login, seed
from bench.harness.noise import settle
from bench.harness.pg import drop_queued_jobs, embedded_cluster, pgss_reset, pgss_top, psql
from bench.harness.proc import source_tree
from bench.harness.scenario import Scenario, add_quick, apply_quick, first_line
from bench.harness.server import add_server_args, new_secret, server_config, uvicorn_server
from bench.scenarios.tenant_hnsw_recall.data import (
    K,
    exact_sql,
    load_documents,
    make_vectors,
    numpy_truth,
    recall,
)
from bench.scenarios.tenant_hnsw_recall.render import headline, render, table

NAME = "tenant_hnsw_recall"
APP = "keel.app:create_app"
SEARCH = API + "/orgs/{org_id}/documents/search"
TARGET = 0.95
QUICK = {"documents": 5_000, "queries": 20, "clusters": 20, "share": 0.02}


class Kind(NamedTuple):
    """A kind of search: whose (0: the tenant holding --share, 1: the rest), what the
    request body adds, and a database setting for the server's connections (or None)."""

    tenant: int
    body: Mapping[str, Any]
    setting: str | None = None


# `small_hnsw`: the small tenant's search again, on a server whose connections have
# enable_sort off, so the planner walks the HNSW graph rather than sorting the tenant's rows
# read by its btree (its choice for a small enough tenant): filtered HNSW's own recall.
KINDS = {
    "small_tenant": Kind(0, {}),
    "small_exact": Kind(0, {"exact": True}),
    "big_tenant": Kind(1, {}),
    "small_hnsw": Kind(0, {}, "enable_sort = off"),
}


def kinds_for(args: argparse.Namespace) -> dict[str, Kind]:
    """KINDS, and the small tenant's search at each --ef-search (the request's own)."""
    return KINDS | {f"small_ef{ef}": Kind(0, {"ef_search": ef}) for ef in args.ef_search}


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
    parser.add_argument(
        "--ef-search",
        type=lambda text: [int(v) for v in text.split(",") if v.strip()],
        default=[200, 400],
        help="the small tenant's search again with these ef_search (comma-separated)",
    )
    add_quick(parser, QUICK)


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
    extra: Mapping[str, Any],
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
        body = {"vector": vector.tolist(), "limit": K, **extra}
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
    kinds: Mapping[str, Kind],
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
                for name, kind in kinds.items():
                    if kind.tenant == tenant:
                        say(f"{name}: {len(queries)} searches through the API ...")
                        api_searches(pg, client, who, queries[:10], kind.body)  # warm-up
                        searched[name] = api_searches(pg, client, who, queries, kind.body, True)
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
            kinds = {k: v for k, v in kinds_for(args).items() if v.setting == setting}
            searched |= _search_all(pg, env, Path(tmp), users, queries, kinds, setting)
    ids = loaded.ids
    numpy_small = [[ids[r] for r in found] for found in numpy_truth(docs, queries, rows[0])]
    numpy_big = [[ids[r] for r in found] for found in numpy_truth(docs, queries, rows[1])]
    figures: dict[str, Any] = {
        "recall": recall(searched["small_tenant"].found, truth),
        "recall_big_tenant": recall(searched["big_tenant"].found, numpy_big),
        "recall_exact_via_api": recall(searched["small_exact"].found, truth),
        "recall_hnsw_walk": recall(searched["small_hnsw"].found, truth),
        "recall_by_ef_search": {
            ef: recall(searched[f"small_ef{ef}"].found, truth) for ef in args.ef_search
        },
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


SCENARIO = Scenario(
    name=NAME,
    summary=first_line(__doc__),
    add_arguments=add_arguments,
    run=run,
    render=render,
    table=table,
    headline=headline,
)
