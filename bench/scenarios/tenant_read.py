"""Tenant-scoped `GET /orgs/{org_id}/posts/{id}` ÷ the same read before tenancy part 2.

A/B in one run, one embedded PostgreSQL with two databases, each migrated and seeded by
its own code:

- `tenant`: Keel as served (the working tree, or `--ref`), reading
  `GET /api/v1/orgs/{org_id}/posts/{id}` from database `keel`;
- `before`: Keel at `--before` (default aee2abf, the last commit before tenant-scoped
  data), its `src/` taken with `git archive` into a temp dir and put first on PYTHONPATH
  (same venv), reading `GET /api/v1/posts/{id}` from database `keel_before`.

Both databases get the same `keel seed --users --posts --seed` (same names and text; ids
differ), then VACUUM ANALYZE. The reader is the active user with the most published
posts; each server reads `--ids` of that user's own published posts (in the new schema
they live in the reader's personal organization, whose id is the reader's), picked at
random per request (wrk + Lua). The servers run with production defaults and alternate,
round by round. Figure: tenant ÷ before req/s (target ≥ 0.95), with µs/req and SQL
statements per request for each.
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
from bench.harness.base import API, say
from bench.harness.keel_api import SEEDED_PASSWORD, bearer, login, seed
from bench.harness.noise import noise_warning, settle
from bench.harness.pg import embedded_cluster, psql, read_fixture
from bench.harness.proc import git_commit, source_tree
from bench.harness.scenario import Results, Scenario, add_quick, apply_quick, first_line
from bench.harness.server import add_server_args, new_secret, server_config
from bench.harness.wrk import Load, require_wrk
from keel.core.embedded import EmbeddedPostgres

NAME = "tenant_read"
APP = "keel.app:create_app"
BEFORE_COMMIT = "aee2abf"
BEFORE_DATABASE = "keel_before"
TARGET = 0.95
QUICK = {"users": 200, "posts": 3_000, "ids": 100, "rounds": 1, "duration": 2.0, "warmup": 0.0}
NEW_PATH = API + "/orgs/{org_id}/posts/{post_id}"
OLD_PATH = API + "/posts/{post_id}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ld.add_load_args(parser)
    add_server_args(parser)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--posts", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ids", type=int, default=1_000, help="the reader's posts to pick from")
    parser.add_argument("--before", default=BEFORE_COMMIT, help="the commit served as the baseline")
    add_quick(parser, QUICK)


def _seed_and_pick(
    pg: EmbeddedPostgres, args: argparse.Namespace, env: Mapping[str, str], src: Path | None
) -> tuple[dict[str, Any], Any]:
    """`keel seed` with this side's code into this side's database; the reader and posts."""
    seeded = seed(pg.url, users=args.users, posts=args.posts, seed=args.seed, env=env, src=src)
    fixture = read_fixture(pg, args.ids, own_posts=True)
    seeded["dropped_queued_jobs"] = fixture.dropped_queued_jobs
    seeded["reader_published_posts"] = len(fixture.post_ids)
    seeded["migration"] = psql(pg, "SELECT version_num FROM alembic_version;")
    return seeded, fixture


def run(args: argparse.Namespace) -> dict[str, Any]:
    apply_quick(args)
    require_wrk()
    options = ld.LoadOptions.from_args(args)
    config = server_config(args)
    config.prepare()
    others = settle(args.quiet_wait, args.other_wait)
    before_commit = git_commit(args.before)
    with (
        source_tree(args.ref) as src,
        source_tree(args.before) as old_src,
        embedded_cluster() as pg,
        tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp,
    ):
        psql(pg, f"CREATE DATABASE {BEFORE_DATABASE};")
        old_pg = EmbeddedPostgres(pg.data_dir, database=BEFORE_DATABASE)
        secret = new_secret()
        env = config.env(database_url=pg.url, data_dir=tmp, secret=secret, src=src)
        old_env = config.env(database_url=old_pg.url, data_dir=tmp, secret=secret, src=old_src)
        say(f"seeding {args.users:,} users and {args.posts:,} posts, twice ...")
        seeded = {
            "tenant": _seed_and_pick(pg, args, env, src),
            "before": _seed_and_pick(old_pg, args, old_env, old_src),
        }
        variants = (
            ld.Variant("tenant", APP, {**env, "KEEL_AUTO_MIGRATE": "false"}, True),
            ld.Variant("before", APP, {**old_env, "KEEL_AUTO_MIGRATE": "false"}, True),
        )
        loads: dict[str, Load] = {}
        with ld.serve_variants(variants, {}, Path(tmp)) as servers:
            for variant in variants:
                _, fixture = seeded[variant.key]
                with httpx.Client(base_url=servers[variant.key].url(), timeout=30) as client:
                    auth = bearer(login(client, fixture.username, SEEDED_PASSWORD))
                template = NEW_PATH if variant.key == "tenant" else OLD_PATH
                paths = tuple(
                    template.format(org_id=fixture.user_id, post_id=i) for i in fixture.post_ids
                )
                ld.check_reply(servers[variant.key], paths[0], auth, variant)
                loads[variant.key] = Load(paths[0], paths, auth)
            measured = [
                ld.Measured("tenant", servers["tenant"], loads["tenant"], pg),
                ld.Measured("before", servers["before"], loads["before"], old_pg),
            ]
            rounds = ld.alternate(measured, options, Path(tmp), pg=pg)
    medians = ld.summarise(rounds)
    new, old = medians["tenant"], medians["before"]
    ratio = new["requests_per_sec"] / old["requests_per_sec"]
    return {
        "server": config.describe(),
        "settings": {
            "before_commit": before_commit,
            "paths": {"tenant": NEW_PATH, "before": OLD_PATH},
        },
        "seeded": {key: {**data, "reader": fx.username} for key, (data, fx) in seeded.items()},
        **rounds.as_json(),
        "others_seen": sorted(set(others + rounds.others_seen)),
        "medians": medians,
        "figures": {
            "ratio": ratio,
            "target": TARGET,
            "pass": ratio >= TARGET,
            "tenant_us": ld.per_request_us(new["requests_per_sec"]),
            "before_us": ld.per_request_us(old["requests_per_sec"]),
        },
        "pass": ratio >= TARGET,
        "noisy": bool(noise_warning(ld.worst_other_cpu(medians))),
    }


HEADER = ["figure", "tenant ÷ before", "µs/req tenant / before", "SQL statements/req", "target"]


def _rows(data: Mapping[str, Any]) -> list[list[str]]:
    f, med = data["figures"], data["medians"]
    new, old = med["tenant"], med["before"]
    statements = (new.get("statements_per_request"), old.get("statements_per_request"))
    return [
        [
            "`GET /orgs/{org_id}/posts/{id}` ÷ `GET /posts/{id}` at "
            f"{data['settings']['before_commit'][:7]}",
            f"{new['requests_per_sec']:,.0f} ÷ {old['requests_per_sec']:,.0f} req/s = "
            f"**{f['ratio']:.3f}**",
            f"{f['tenant_us']:.0f} / {f['before_us']:.0f}",
            f"{statements[0]:.2f} / {statements[1]:.2f}" if None not in statements else "",
            f"≥ {f['target']}: {res.verdict(f['pass'])}",
        ]
    ]


def render(data: Mapping[str, Any]) -> str:
    s, med = data["settings"], data["medians"]
    seeded = data["seeded"]["tenant"]
    lines = [
        f"### Tenant-scoped read ({data['timestamp']}, {data['commit'][:12]})",
        "",
        res.markdown_table(HEADER, _rows(data)),
        "",
        res.rounds_table(data, cpu=True),
        "",
        f"wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s, {s['rounds']} "
        f"alternating rounds, {s['warmup']}s warm-up. Each database: `keel seed` "
        f"{s['users']:,} users and {s['posts']:,} posts; the reader "
        f"`{seeded['reader']}` reads {seeded['reader_published_posts']:,} of their own "
        f"published posts. Migrations: {seeded.get('migration')} ÷ "
        f"{data['seeded']['before'].get('migration')}. {res.server_line(data)}.",
        "",
        noise_warning(max(m["other_cpu_pct"] for m in med.values())),
    ]
    return "\n".join(lines).rstrip()


def table(results: Results) -> str:
    stem, data = next(iter(results.items()))
    note = res.source_note(data, stem)
    return f"{res.markdown_table(HEADER, _rows(data))}\n\n{note}"


def headline(results: Results) -> list[list[str]]:
    f = next(iter(results.values()))["figures"]
    row = ["tenant-scoped `GET /orgs/{org_id}/posts/{id}` ÷ before tenancy"]
    return [[*row, f"{f['ratio']:.2f}", f"≥ {f['target']} ({res.verdict(f['pass'])})"]]


SCENARIO = Scenario(
    name=NAME,
    summary=first_line(__doc__),
    add_arguments=add_arguments,
    run=run,
    render=render,
    table=table,
    headline=headline,
)
