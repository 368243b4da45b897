"""Posts and full-text search on 100k seeded posts: GIN vs seq scan, reads, keyset vs offset.

One embedded PostgreSQL, seeded with `keel seed` (fixed seed), then VACUUM ANALYZE; the
embedding jobs seeding queued are dropped, so the job worker idles as in steady state.

1. Search, SQL level (pgbench, no HTTP): the app's search SQL (compiled from
   keel.search.repository.search_posts) for a few queries drawn from the seeded text, with
   the GIN index vs forced to a sequential scan (PGOPTIONS="-c enable_bitmapscan=off
   -c enable_indexscan=off"). Headline: QPS ratio of the ranked query (target >= 20).
2. `GET /api/v1/posts/{id}` (random published ids, wrk + Lua) ÷ `GET /health`, same server
   (target >= 0.5).
3. `GET /api/v1/posts?limit=20`: page 500 by keyset cursor ÷ first page (target >= 0.8),
   and page 500 by offset (offset=9980) ÷ first page next to it.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from bench.harness import load as ld
from bench.harness import results as res
from bench.harness.base import API, BenchError, median, say
from bench.harness.keel_api import SEEDED_PASSWORD, bearer, login, seed, walk_cursor
from bench.harness.noise import noise_warning, settle
from bench.harness.pg import drop_queued_jobs, embedded_cluster, explain, explain_prepared, psql
from bench.harness.proc import run_child, source_tree
from bench.harness.scenario import Results, Scenario, first_line
from bench.harness.server import add_server_args, new_secret, server_config, uvicorn_server
from bench.harness.wrk import Load, require_wrk
from bench.scenarios.posts.render import render
from bench.scenarios.posts.search import SEQ_OPTIONS, search_bench, search_noise
from bench.scenarios.posts.sql import (
    data_facts,
    main_sql_ms,
    one_organization,
    pick_queries,
    pick_viewer,
    plan_summary,
    plan_uses,
    posts_scan,
    query_matches,
    word_stats,
)

NAME = "posts"
APP = "keel.app:create_app"
HEALTH = "/health"
TARGETS = {"search_gin_vs_seq": 20.0, "post_by_id_vs_health": 0.5, "keyset_p500_vs_first": 0.8}
GIN_INDEX, KEYSET_INDEX = "ix_posts_tenant_id_search", "ix_posts_tenant_id_created_at_id"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ld.add_load_args(parser)
    add_server_args(parser)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1, help="keel seed's random seed")
    parser.add_argument("--ids", type=int, default=1_000, help="post ids wrk picks from")
    parser.add_argument("--page", type=int, default=500, help="the deep page to compare")
    parser.add_argument("--limit", type=int, default=20, help="page size")
    parser.add_argument("--pgbench-duration", type=int, default=10)
    parser.add_argument("--pgbench-clients", type=int, default=2)
    parser.add_argument("--pgbench-threads", type=int, default=2)


def page_ids(client: httpx.Client, auth: Mapping[str, str], path: str) -> list[str]:
    reply = client.get(path, headers=auth)
    if reply.status_code != 200:
        raise BenchError(f"GET {path} answered {reply.status_code}: {reply.text[:300]}")
    return [item["id"] for item in reply.json()["items"]]


def run(args: argparse.Namespace) -> dict[str, Any]:
    require_wrk()
    options = ld.LoadOptions.from_args(args)
    config = server_config(args)
    config.prepare()
    others = settle(args.quiet_wait, args.other_wait)
    with (
        source_tree(args.ref) as src,
        embedded_cluster() as pg,
        tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp,
    ):
        workdir = Path(tmp)
        secret = new_secret()
        env = config.env(database_url=pg.url, data_dir=tmp, secret=secret, src=src)
        say(f"seeding {args.users:,} users and {args.posts:,} posts ...")
        seeded = seed(pg.url, users=args.users, posts=args.posts, seed=args.seed, env=env, src=src)
        seeded["dropped_queued_jobs"] = drop_queued_jobs(pg)
        viewer = pick_viewer(pg)
        one_organization(pg, viewer["id"])  # one large tenant: every post in the reader's
        psql(pg, "VACUUM (ANALYZE) app.posts, app.users; CHECKPOINT;")
        facts = data_facts(pg)
        say(f"seeded: {seeded}; {facts}")
        posts = f"{API}/orgs/{viewer['id']}/posts"
        words = word_stats(pg)
        queries = pick_queries(pg, words)
        matches = query_matches(pg, queries)
        ids = psql(
            pg,
            "SELECT id FROM app.posts WHERE is_published ORDER BY md5(id::text) "  # noqa: S608
            f"LIMIT {int(args.ids)};",
        ).splitlines()

        env["KEEL_AUTO_MIGRATE"] = "false"  # `keel seed` migrated
        with uvicorn_server("full", APP, env=env, log_path=workdir / "full.log") as server:
            with httpx.Client(base_url=server.url(), timeout=60) as client:
                auth = bearer(login(client, viewer["username"], SEEDED_PASSWORD))
                page_path = f"{posts}?limit={args.limit}"
                cursor, keyset_items, walk_s = walk_cursor(
                    client, auth, posts, args.page, args.limit
                )
                offset = (args.page - 1) * args.limit
                offset_path = f"{posts}?offset={offset}&limit={args.limit}"
                offset_items = page_ids(client, auth, offset_path)
                for post_id in ids[:5]:
                    check = client.get(f"{posts}/{post_id}", headers=auth)
                    if check.status_code != 200:
                        raise BenchError(f"GET post {post_id}: {check.status_code}")
            sql = run_child(
                "bench.scenarios.posts.sql:child_sql",
                {
                    "viewer_id": viewer["id"],
                    "queries": queries,
                    "secret": secret,
                    "cursor": cursor,
                    "offset": offset,
                    "limit": args.limit,
                    "post_id": ids[0],
                },
                src=src,
                env=env,
            )
            by_id = Load(f"{posts}/{{id}}", tuple(f"{posts}/{i}" for i in ids), auth)
            measured = [
                ld.Measured("health", server, Load(HEALTH)),
                ld.Measured("post_by_id", server, by_id),
                ld.Measured("list_first", server, Load(page_path, headers=auth)),
                ld.Measured(
                    "list_keyset_p500", server, Load(f"{page_path}&cursor={cursor}", headers=auth)
                ),
                ld.Measured("list_offset_p500", server, Load(offset_path, headers=auth)),
            ]
            rounds = ld.alternate(measured, options, workdir, pg=pg)

        # Plans after the HTTP runs (caches as warm as the app had them), then pgbench.
        plans: dict[str, Any] = {
            "list_keyset": explain_prepared(pg, sql["list_keyset"]),
            "list_offset": explain_prepared(pg, sql["list_offset"]),
            "list_first": explain_prepared(pg, sql["list_first"]),
            "get_post": explain_prepared(pg, sql["get_post"]),
            "list_keyset_generic": explain_prepared(pg, sql["list_keyset"], analyze=False),
            "list_offset_generic": explain_prepared(pg, sql["list_offset"], analyze=False),
            "search": [],
        }
        search_ok: list[dict[str, Any]] = []
        for i, q in enumerate(queries):
            entry = {"query": q}
            for variant in ("ranked", "full"):
                stmt = sql[f"search_{variant}"][i]
                entry[f"{variant}_gin"] = explain(pg, stmt)
                entry[f"{variant}_seq"] = explain(pg, stmt, pgoptions=SEQ_OPTIONS)
            search_ok.append(
                {
                    "gin_mode_scan": posts_scan(entry["ranked_gin"]),
                    "seq_mode_scan": posts_scan(entry["ranked_seq"]),
                    "full_gin_mode_uses_index": plan_uses(entry["full_gin"], GIN_INDEX),
                    "full_seq_mode_uses_index": plan_uses(entry["full_seq"], GIN_INDEX),
                }
            )
            plans["search"].append(entry)
        plans["summary"] = {
            k: plan_summary(v) for k, v in plans.items() if isinstance(v, str) and k != "search"
        }
        search = search_bench(
            pg, {"ranked": sql["search_ranked"], "full": sql["search_full"]}, args, workdir
        )

    medians = ld.summarise(rounds)
    rps = {k: m["requests_per_sec"] for k, m in medians.items()}
    # Equal-weight mix of only the queries whose GIN-mode plan uses the index, from the
    # per-script mean latencies (QPS of an equal mix = 1 / mean latency).
    on_index = [i for i, ok in enumerate(search_ok) if GIN_INDEX in ok["gin_mode_scan"]]
    per_q = search["ranked"]["per_query"]
    gin_ms = sum(per_q[i]["gin_latency_ms"] for i in on_index)
    seq_ms = sum(per_q[i]["seq_latency_ms"] for i in on_index)
    figures = {
        "search_gin_vs_seq": search["ranked"]["ratio"],
        "search_gin_vs_seq_index_queries": seq_ms / gin_ms if gin_ms else 0.0,
        "search_full_gin_vs_seq": search["full"]["ratio"],
        "post_by_id_vs_health": rps["post_by_id"] / rps["health"],
        "keyset_p500_vs_first": rps["list_keyset_p500"] / rps["list_first"],
        "offset_p500_vs_first": rps["list_offset_p500"] / rps["list_first"],
    }
    labels = {
        "health": f"`GET {HEALTH}`",
        "post_by_id": f"`GET {API}/orgs/{{org_id}}/posts/{{id}}` (random of {len(ids):,})",
        "list_first": f"`GET {API}/orgs/{{org_id}}/posts?limit={args.limit}` (first page)",
        "list_keyset_p500": f"keyset page {args.page} (`&cursor=…`)",
        "list_offset_p500": f"offset page {args.page} (`offset={offset}&limit={args.limit}`)",
    }
    round_data = rounds.as_json()
    return {
        "server": config.describe(),
        "settings": {"app": APP, "seq_pgoptions": SEQ_OPTIONS},
        "seeded": seeded,
        "data": facts,
        "viewer": viewer,
        "search_queries": matches,
        "figures": figures,
        "targets": TARGETS,
        "pass": {k: figures[k] >= t for k, t in TARGETS.items()},
        "noisy": bool(noise_warning(ld.worst_other_cpu(medians))) or bool(search_noise(search)),
        "search": search,
        "http": {
            "labels": labels,
            "rounds": round_data["rounds"],
            "cpu_rounds": round_data["cpu_rounds"],
            "medians": medians,
            "sql_top": {k: v[-1] for k, v in rounds.sql.items()},
            "main_sql_ms": {k: median([main_sql_ms(r) for r in v]) for k, v in rounds.sql.items()},
            "walk_seconds": walk_s,
            "keyset_equals_offset": keyset_items == offset_items and bool(keyset_items),
            "post_ids_sample": ids[:5],
            "others_seen": sorted(set(others + rounds.others_seen)),
        },
        "sql": sql,
        "plans": plans,
        "plans_ok": {
            "search": search_ok,
            "keyset_uses_created_at_id": plan_uses(plans["list_keyset"], KEYSET_INDEX),
            "offset_uses_created_at_id": plan_uses(plans["list_offset"], KEYSET_INDEX),
        },
        "top_words": words[:10],
        "distinct_lexemes": len(words),
    }


FIGURES = (
    ("search: GIN ÷ forced seq scan (QPS, ranked query, 5-query mix)", "search_gin_vs_seq", "×"),
    ("`GET /posts/{id}` ÷ `GET /health` (req/s)", "post_by_id_vs_health", ""),
    ("keyset page {page} ÷ page 1 (req/s)", "keyset_p500_vs_first", ""),
    ("offset page {page} ÷ page 1 (req/s)", "offset_p500_vs_first", ""),
)


def _figure_rows(data: Mapping[str, Any]) -> list[list[str]]:
    f, targets, med = data["figures"], data["targets"], data["http"]["medians"]
    rps = {k: m["requests_per_sec"] for k, m in med.items()}
    detail = {
        "post_by_id_vs_health": f"{rps['post_by_id']:,.0f} ÷ {rps['health']:,.0f} req/s = ",
        "keyset_p500_vs_first": f"{rps['list_keyset_p500']:,.0f} ÷ {rps['list_first']:,.0f} = ",
        "offset_p500_vs_first": f"{rps['list_offset_p500']:,.0f} ÷ {rps['list_first']:,.0f} = ",
    }
    rows = []
    for label, key, unit in FIGURES:
        value = f"{f[key]:.1f}×" if unit else f"{f[key]:.3f}"
        target = targets.get(key)
        goal = f"≥ {target:g}{unit}: {res.verdict(data['pass'][key])}" if target else "reference"
        label = label.replace("{page}", str(data["settings"].get("page", 500)))
        rows.append([label, f"{detail.get(key, '')}**{value}**", goal])
    return rows


def table(results: Results) -> str:
    stem, data = next(iter(results.items()))
    note = res.source_note(data, stem)
    return f"{res.markdown_table(['figure', 'value', 'target'], _figure_rows(data))}\n\n{note}"


def headline(results: Results) -> list[list[str]]:
    data = next(iter(results.values()))
    return [row for row in _figure_rows(data) if "reference" not in row[2]]


SCENARIO = Scenario(
    name=NAME,
    summary=first_line(__doc__),
    add_arguments=add_arguments,
    run=run,
    render=render,
    table=table,
    headline=headline,
)
