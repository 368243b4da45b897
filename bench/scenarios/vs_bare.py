"""Keel's authenticated reads ÷ the same reads from a bare FastAPI + asyncpg app.

Two servers on one seeded database, measured in alternation (wrk, closed loop):

- `GET /api/v1/posts/{id}` (Bearer) ÷ the bare app's `GET /posts/{id}` (target ≥ 0.6);
- `GET /api/v1/users/me` (Bearer) ÷ the bare app's `GET /users/{id}` (target ≥ 0.6);
- `GET /api/v1/posts?limit=20` (Bearer) ÷ the bare app's 20 newest posts (target ≥ 0.5).

The bare app (`bench.apps.bare`) selects the same columns and answers the same JSON, with
no middleware, auth or ORM: what the read costs when Python stays out of the way. Keel
runs with production defaults. Also reported: µs per request each (1e6 / req/s, the
server's core being saturated), what Keel adds, and SQL statements per request
(pg_stat_statements calls ÷ requests: the database round trips).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from bench.harness import load as ld
from bench.harness import results as res
from bench.harness.base import API
from bench.harness.keel_api import SEEDED_PASSWORD, bearer, get_ok, login
from bench.harness.noise import noise_warning
from bench.harness.scenario import Results, Scenario, first_line
from bench.harness.seeded import seeded_reads
from bench.harness.server import add_server_args
from bench.harness.wrk import Load

NAME = "vs_bare"
KEEL = ld.Variant("keel", "keel.app:create_app", has_request_id=True)
BARE = ld.Variant("bare", "bench.apps.bare:create_app", has_request_id=False)
# (figure, Keel's key, the bare app's key, target)
PAIRS = (
    ("post_by_id", "keel_post_by_id", "bare_post_by_id", 0.6),
    ("user", "keel_users_me", "bare_user_by_id", 0.6),
    ("list_20", "keel_list_20", "bare_list_20", 0.5),
)
LABELS = {
    "post_by_id": "`GET /posts/{id}` ÷ bare PK lookup",
    "user": "`GET /users/me` ÷ bare user by id",
    "list_20": "`GET /posts?limit=20` ÷ bare list of 20",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ld.add_load_args(parser)
    add_server_args(parser)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--posts", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ids", type=int, default=1_000, help="published post ids to pick from")


def run(args: argparse.Namespace) -> dict[str, Any]:
    with seeded_reads(args, seed_value=args.seed) as (
        options,
        config,
        others,
        pg,
        tmp,
        env,
        seeded,
        fixture,
    ):
        username, user_id, ids = fixture.username, fixture.user_id, fixture.post_ids
        posts, bare_posts = fixture.posts_path, f"/orgs/{fixture.org_id}/posts"
        with ld.serve_variants((KEEL, BARE), env, Path(tmp)) as servers:
            keel, bare = servers["keel"], servers["bare"]
            with httpx.Client(base_url=keel.url(), timeout=30) as client:
                auth = bearer(login(client, username, SEEDED_PASSWORD))
            ld.check_reply(keel, f"{posts}/{ids[0]}", auth, KEEL)
            ld.check_reply(bare, f"{bare_posts}/{ids[0]}", {}, BARE)
            with httpx.Client(timeout=30) as client:
                same = get_ok(client, keel.url(f"{posts}/{ids[0]}"), auth) == get_ok(
                    client, bare.url(f"{bare_posts}/{ids[0]}")
                )
            keel_ids = tuple(f"{posts}/{i}" for i in ids)
            bare_ids = tuple(f"{bare_posts}/{i}" for i in ids)
            measured = [
                ld.Measured("keel_post_by_id", keel, Load(f"{posts}/{{id}}", keel_ids, auth)),
                ld.Measured("bare_post_by_id", bare, Load(f"{bare_posts}/{{id}}", bare_ids)),
                ld.Measured("keel_users_me", keel, Load(f"{API}/users/me", headers=auth)),
                ld.Measured("bare_user_by_id", bare, Load(f"/users/{user_id}")),
                ld.Measured("keel_list_20", keel, Load(f"{posts}?limit=20", headers=auth)),
                ld.Measured("bare_list_20", bare, Load(f"{bare_posts}?limit=20")),
            ]
            rounds = ld.alternate(measured, options, Path(tmp), pg=pg)
    medians = ld.summarise(rounds)
    figures = {}
    for figure, keel_key, bare_key, target in PAIRS:
        k, b = medians[keel_key], medians[bare_key]
        ratio = k["requests_per_sec"] / b["requests_per_sec"]
        figures[figure] = {
            "ratio": ratio,
            "target": target,
            "pass": ratio >= target,
            "keel_us": ld.per_request_us(k["requests_per_sec"]),
            "bare_us": ld.per_request_us(b["requests_per_sec"]),
            "keel_adds_us": ld.per_request_us(k["requests_per_sec"])
            - ld.per_request_us(b["requests_per_sec"]),
            "keel_statements_per_request": k.get("statements_per_request"),
            "bare_statements_per_request": b.get("statements_per_request"),
        }
    return {
        "server": config.describe(),
        "settings": {"variants": {KEEL.key: KEEL.app, BARE.key: BARE.app}},
        "seeded": seeded,
        "same_post_json": same,
        **rounds.as_json(),
        "others_seen": sorted(set(others + rounds.others_seen)),
        "medians": medians,
        "figures": figures,
        "pass": all(f["pass"] for f in figures.values()),
        "noisy": bool(noise_warning(ld.worst_other_cpu(medians))),
    }


def _rows(data: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for figure, keel_key, bare_key, _ in PAIRS:
        f = data["figures"][figure]
        k, b = data["medians"][keel_key], data["medians"][bare_key]
        statements = f.get("keel_statements_per_request")
        bare_statements = f.get("bare_statements_per_request")
        rows.append(
            [
                LABELS[figure],
                f"{k['requests_per_sec']:,.0f} ÷ {b['requests_per_sec']:,.0f} req/s = "
                f"**{f['ratio']:.3f}**",
                f"{f['keel_us']:.0f} / {f['bare_us']:.0f} (+{f['keel_adds_us']:.0f})",
                f"{statements:.2f} / {bare_statements:.2f}"
                if statements is not None and bare_statements is not None
                else "",
                f"≥ {f['target']}: {res.verdict(f['pass'])}",
            ]
        )
    return rows


HEADER = ["figure", "Keel ÷ bare", "µs/req Keel / bare (Keel adds)", "SQL statements/req", "target"]


def render(data: Mapping[str, Any]) -> str:
    s, med = data["settings"], data["medians"]
    lines = [
        f"### Keel ÷ bare FastAPI + asyncpg ({data['timestamp']}, {data['commit'][:12]})",
        "",
        res.markdown_table(HEADER, _rows(data)),
        "",
        res.rounds_table(data, cpu=True),
        "",
        f"wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s, {s['rounds']} "
        f"alternating rounds, {s['warmup']}s warm-up; both servers one uvicorn worker on the "
        f"server core. Keel: {res.server_line(data)}. Same JSON for a post from both: "
        f"{data['same_post_json']}.",
        "",
        noise_warning(max(m["other_cpu_pct"] for m in med.values())),
    ]
    return "\n".join(lines).rstrip()


def table(results: Results) -> str:
    stem, data = next(iter(results.items()))
    note = res.source_note(data, stem)
    return f"{res.markdown_table(HEADER, _rows(data))}\n\n{note}"


def headline(results: Results) -> list[list[str]]:
    data = next(iter(results.values()))
    return [
        [LABELS[name], f"{f['ratio']:.2f}", f"≥ {f['target']} ({res.verdict(f['pass'])})"]
        for name, f in data["figures"].items()
    ]


SCENARIO = Scenario(
    name=NAME,
    summary=first_line(__doc__),
    add_arguments=add_arguments,
    run=run,
    render=render,
    table=table,
    headline=headline,
)
