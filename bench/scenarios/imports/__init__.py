"""Bulk imports on 100k-row files: the app's COPY + MERGE path vs `psql \\copy` and vs the ORM.

One embedded PostgreSQL, migrated; one full app (one uvicorn worker pinned to CPU 0, as the
harness serves it, production defaults) with an admin made from FIRST_SUPERUSER_*.
Deterministic files in a temp dir: users.csv (every row carries the SAME pre-hashed argon2id
password: the import's cost is measured, not hashing) and posts.csv (Faker text as `keel
seed` makes it, authors named by author_username, explicit ids and created_at), plus NDJSON
twins.

Each of --rounds rounds, from the same starting state (only the admin; app.posts empty):

1. users.csv through `POST /api/v1/admin/import/users?on_conflict=error` (streamed from
   disk; parse, validate, COPY to staging, checks, MERGE, commit: the request end to end),
   then the same rows by `psql \\copy` into an empty `LIKE app.users INCLUDING ALL` table.
2. posts.csv through `POST .../import/posts`, then `psql \\copy` of the same final rows (id,
   title, content, is_published, author_id, created_at) into an empty
   `LIKE app.posts INCLUDING ALL` table (generated tsvector, GIN and other indexes) with the
   same foreign key to app.users.
3. posts.csv again with on_conflict=update (identical rows: MERGE counts them unchanged),
   and a copy where every title changed (true updates): ÷ the first import.
4. The NDJSON twins through HTTP, and `keel import posts posts.csv` (the CLI) as a
   subprocess: other ways into the same path.

Each round also runs the naive baseline into the same starting states: --naive-rows ORM
objects added one at a time (`session.add(obj); await session.flush()`, one transaction,
commit at the end), extrapolated to 100k, and --naive-commit-rows committing every row; and
(--copy-breakdown) the posts `\\copy` again into the same table without its GIN index, its
generated tsvector and its foreign key, one more piece at a time, to price each piece.
Then --plain-users users with plain passwords (hashed by the import, argon2id defaults),
with the server pinned to one core and unpinned.

Before every timed step: VACUUM (ANALYZE) and CHECKPOINT (so autovacuum and checkpoints
stay out of the measurement), then wait for other benchmarks and an idle machine.
The job worker is off by default here (`--worker on` to change it): it would embed the
imported posts in the server process between and during the timed steps.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.harness import results as res
from bench.harness.base import SERVER_CPU, median, say
from bench.harness.noise import NOISY_OTHER_CPU_PCT, settle
from bench.harness.pg import embedded_cluster, psql
from bench.harness.proc import run_child, source_tree
from bench.harness.scenario import Results, Scenario, first_line
from bench.harness.server import Server, add_server_args, new_secret, server_config, uvicorn_server
from bench.scenarios.imports.data import generate, write_files
from bench.scenarios.imports.db import COPY_VARIANTS, index_defs, top_level_sql_ms
from bench.scenarios.imports.render import render
from bench.scenarios.imports.steps import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    ADMIN_USERNAME,
    Bench,
    cli_startup,
    login,
)

NAME = "imports"
APP = "keel.app:create_app"
TARGETS = {"posts_vs_copy": 0.5, "posts_vs_naive": 50.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_args(parser, worker=False)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--naive-rows", type=int, default=10_000)
    parser.add_argument(
        "--naive-commit-rows",
        type=int,
        default=2_000,
        help="rows for the naive variant that commits every row (0: skip it)",
    )
    parser.add_argument(
        "--copy-breakdown",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also \\copy posts without the GIN index / the tsvector / the FK",
    )
    parser.add_argument(
        "--fresh-server",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="restart the server before the changed-titles re-import (see TRIGGER_NOTE)",
    )
    parser.add_argument("--plain-users", type=int, default=500)
    parser.add_argument("--hash-repeats", type=int, default=10, help="raw hasher calls")
    parser.add_argument("--seed", type=int, default=1, help="data generator seed")
    parser.add_argument("--ndjson", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--cli", action=argparse.BooleanOptionalAction, default=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    others = settle(args.quiet_wait, args.other_wait)
    config = server_config(args)
    config.prepare()
    with (
        source_tree(args.ref) as src,
        embedded_cluster() as pg,
        tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp,
    ):
        workdir = Path(tmp)
        env = config.env(database_url=pg.url, data_dir=tmp, secret=new_secret(), src=src)
        env |= {
            "KEEL_AUTO_MIGRATE": "false",  # the prepare child migrated
            "FIRST_SUPERUSER_EMAIL": ADMIN_EMAIL,
            "FIRST_SUPERUSER_USERNAME": ADMIN_USERNAME,
            "FIRST_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
            "IMPORT_MAX_BYTES": str(1 << 30),
        }
        prep = run_child(
            "bench.scenarios.imports.data:child_prepare",
            {"url": pg.url, "hash_repeats": args.hash_repeats},
            src=src,
            cpu=SERVER_CPU,
            env=env,
        )
        t0 = time.perf_counter()
        data = generate(args.users, args.posts, args.seed, prep["hashed"])
        write_files(args, data, workdir)
        say(
            f"generated in {time.perf_counter() - t0:.1f} s: "
            + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in data.sizes.items())
        )
        with contextlib.ExitStack() as servers:

            def start() -> Server:
                log_path = workdir / "full.log"
                return servers.enter_context(
                    uvicorn_server("full", APP, env=env, log_path=log_path)
                )

            server = start()
            admin_sql = f"SELECT id FROM app.users WHERE username = '{ADMIN_USERNAME}';"  # noqa: S608
            bench = Bench(
                args, pg, src, env, server, login(server), psql(pg, admin_sql), data, workdir, start
            )
            bench.others += others
            for r in range(1, args.rounds + 1):
                bench.round(r)
            for r in range(1, args.rounds + 1):
                bench.plain_passwords(r)
            stored = psql(
                pg, "SELECT hashed_password FROM app.users WHERE username = 'plain.user.0';"
            )
            facts = {
                "plain_hash_params": stored.rsplit("$", 2)[0],
                "avg_content_chars": round(
                    sum(len(p["content"]) for p in data.posts) / max(1, len(data.posts))
                ),
                "avg_title_chars": round(
                    sum(len(p["title"]) for p in data.posts) / max(1, len(data.posts))
                ),
                "posts_table_after_import": bench.sizes.get("posts"),
                "users_table_after_import": bench.sizes.get("users"),
                "posts_indexes": index_defs(pg, "app", "posts"),
                "users_indexes": index_defs(pg, "app", "users"),
                "pg_version": psql(pg, "SHOW server_version;"),
            }
        startup = cli_startup(src, env) if args.cli else None
    return {"server": config.describe(), **assemble(args, prep, bench, facts, startup)}


def assemble(
    args: argparse.Namespace,
    prep: Mapping[str, Any],
    bench: Bench,
    facts: Mapping[str, Any],
    startup: float | None,
) -> dict[str, Any]:
    data, runs, others, structure = bench.data, bench.runs, bench.others, bench.structure
    med = {
        k: {
            "seconds": median([r.seconds for r in rs]),
            "rows_per_sec": median([r.rows_per_sec for r in rs]),
            "server_cpu_pct": median([r.cpu.server_pct for r in rs]),
            "postgres_cpu_pct": median([r.cpu.postgres_pct for r in rs]),
            "client_cpu_pct": median([r.cpu.client_pct for r in rs]),
            "other_cpu_pct": median([r.cpu.other_pct for r in rs]),
        }
        for k, rs in runs.items()
    }
    rate = {k: m["rows_per_sec"] for k, m in med.items()}
    secs = {k: m["seconds"] for k, m in med.items()}
    n_posts = len(data.posts)
    hash_ms = median(prep["hash_ms"])
    figures: dict[str, Any] = {
        "posts_vs_copy": rate["posts_app"] / rate["posts_copy"],
        "users_vs_copy": rate["users_app"] / rate["users_copy"],
        "posts_vs_naive": rate["posts_app"] / rate["posts_naive"],
        "users_vs_naive": rate["users_app"] / rate["users_naive"],
        # The ceiling for any import path: psql's COPY over the same naive ORM loop.
        "posts_copy_vs_naive": rate["posts_copy"] / rate["posts_naive"],
        "users_copy_vs_naive": rate["users_copy"] / rate["users_naive"],
        "reimport_same_vs_first": secs["posts_reimport_same"] / secs["posts_app"],
        "reimport_changed_vs_first": secs["posts_reimport_changed"] / secs["posts_app"],
        "naive_posts_100k_seconds": n_posts / rate["posts_naive"],
        "naive_users_100k_seconds": len(data.users) / rate["users_naive"],
        "per_round_posts_vs_copy": [
            a.rows_per_sec / b.rows_per_sec
            for a, b in zip(runs["posts_app"], runs["posts_copy"], strict=True)
        ],
        "per_round_users_vs_copy": [
            a.rows_per_sec / b.rows_per_sec
            for a, b in zip(runs["users_app"], runs["users_copy"], strict=True)
        ],
        "raw_hash_ms": hash_ms,
    }
    for key in ("plain_pinned", "plain_unpinned"):
        figures[f"{key}_ms_per_row"] = 1e3 / rate[key]
        figures[f"{key}_100k_minutes"] = 1e5 / rate[key] / 60
    if "posts_app_ndjson" in rate:
        figures["posts_ndjson_vs_csv"] = rate["posts_app_ndjson"] / rate["posts_app"]
        figures["users_ndjson_vs_csv"] = rate["users_app_ndjson"] / rate["users_app"]
    for kind in ("posts", "users"):
        if f"{kind}_naive_commit_each" in rate:
            figures[f"{kind}_vs_naive_commit_each"] = (
                rate[f"{kind}_app"] / rate[f"{kind}_naive_commit_each"]
            )
    if "posts_copy_minus_fk" in rate:
        # µs per row each piece adds to the posts \copy (the variants take one more away each)
        us = {k: 1e6 / rate[k] for k in ("posts_copy", *COPY_VARIANTS)}
        figures["posts_copy_us_per_row"] = {
            "total": us["posts_copy"],
            "triggers": us["posts_copy"] - us["posts_copy_minus_triggers"],
            "gin_index": us["posts_copy_minus_triggers"] - us["posts_copy_minus_gin"],
            "tsvector": us["posts_copy_minus_gin"] - us["posts_copy_minus_tsvector"],
            "foreign_key": us["posts_copy_minus_tsvector"] - us["posts_copy_minus_fk"],
            "rest": us["posts_copy_minus_fk"],
        }
    if "posts_cli" in rate:
        figures["posts_cli_vs_http"] = rate["posts_cli"] / rate["posts_app"]
        figures["posts_cli_minus_startup_vs_http"] = (
            n_posts / (secs["posts_cli"] - (startup or 0.0)) / rate["posts_app"]
        )
        figures["cli_startup_seconds"] = startup
    # Where the app's time goes: median per phase over the rounds (ms), SQL vs the rest.
    breakdown = {}
    for key in ("users_app", "posts_app", "posts_reimport_same", "posts_reimport_changed"):
        phases = sorted({p for r in runs[key] for p in r.sql})
        per = {p: median([r.sql.get(p, {}).get("ms", 0.0) for r in runs[key]]) for p in phases}
        sql_ms = median([top_level_sql_ms(r.sql) for r in runs[key]])
        breakdown[key] = {
            "wall_ms": secs[key] * 1e3,
            "sql_ms": sql_ms,
            "outside_sql_ms": secs[key] * 1e3 - sql_ms,
            "phases_ms": per,
        }
    for key in ("users_copy", "posts_copy"):
        breakdown[key] = {
            "wall_ms": secs[key] * 1e3,
            "sql_ms": median([top_level_sql_ms(r.sql) for r in runs[key]]),
            "phases_ms": {
                p: median([r.sql.get(p, {}).get("ms", 0.0) for r in runs[key]])
                for p in sorted({p for r in runs[key] for p in r.sql})
            },
        }
    passes = {k: figures[k] >= t for k, t in TARGETS.items()}
    worst_other = max(r.cpu.other_pct for rs in runs.values() for r in rs)
    return {
        "settings": {"app": APP, "server_pinned_cpu": SERVER_CPU},
        "data": {
            "users": len(data.users),
            "posts": n_posts,
            "file_bytes": data.sizes,
            "shared_hash_params": prep["hashed"].rsplit("$", 2)[0],
            **facts,
        },
        "copy_tables": structure,
        "hasher": {**prep, "hashed": "(omitted)"},
        "figures": figures,
        "targets": TARGETS,
        "pass": passes,
        "medians": med,
        "breakdown": breakdown,
        "rounds": {k: [r.as_json() for r in rs] for k, rs in runs.items()},
        "noisy": worst_other >= NOISY_OTHER_CPU_PCT,
        "worst_other_cpu_pct": worst_other,
        "others_seen": sorted(set(others)),
    }


def _figure_rows(data: Mapping[str, Any]) -> list[list[str]]:
    f, med, t, ok = data["figures"], data["medians"], data["targets"], data["pass"]
    return [
        [
            "posts: app (HTTP, CSV) ÷ `psql \\copy`, rows/s",
            f"{med['posts_app']['rows_per_sec']:,.0f} ÷ {med['posts_copy']['rows_per_sec']:,.0f}"
            f" = **{f['posts_vs_copy']:.2f}**",
            f"≥ {t['posts_vs_copy']}: {res.verdict(ok['posts_vs_copy'])}",
        ],
        [
            "users (pre-hashed): app ÷ `psql \\copy`",
            f"{med['users_app']['rows_per_sec']:,.0f} ÷ {med['users_copy']['rows_per_sec']:,.0f}"
            f" = **{f['users_vs_copy']:.2f}**",
            "report",
        ],
        [
            "posts: app ÷ naive ORM (flush per row)",
            f"{med['posts_app']['rows_per_sec']:,.0f} ÷ {med['posts_naive']['rows_per_sec']:,.0f}"
            f" = **{f['posts_vs_naive']:.1f}×**",
            f"≥ {t['posts_vs_naive']:g}×: {res.verdict(ok['posts_vs_naive'])}",
        ],
        [
            "… the ceiling: `psql \\copy` ÷ naive ORM (posts; users)",
            f"{f['posts_copy_vs_naive']:.1f}×; {f['users_copy_vs_naive']:.1f}×",
            "reference",
        ],
        [
            "posts re-import, identical rows; every title changed ÷ first import (time)",
            f"{f['reimport_same_vs_first']:.2f}; {f['reimport_changed_vs_first']:.2f}",
            "report",
        ],
        [
            "plain passwords, ms/row: server on 1 core; on 2",
            f"{f['plain_pinned_ms_per_row']:.1f}; {f['plain_unpinned_ms_per_row']:.1f}",
            "report",
        ],
    ]


def table(results: Results) -> str:
    stem, data = next(iter(results.items()))
    rows = _figure_rows(data)
    note = res.source_note(data, stem)
    return f"{res.markdown_table(['figure', 'value', 'target'], rows)}\n\n{note}"


def headline(results: Results) -> list[list[str]]:
    data = next(iter(results.values()))
    return [row for row in _figure_rows(data) if "reference" not in row[2]][:3]


SCENARIO = Scenario(
    name=NAME,
    summary=first_line(__doc__),
    add_arguments=add_arguments,
    run=run,
    render=render,
    table=table,
    headline=headline,
)
