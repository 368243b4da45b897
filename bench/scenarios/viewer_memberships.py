"""Authenticated `GET /users/me` with the Viewer carrying memberships ÷ the Viewer without.

(Until tenant-scoped data it measured `GET /posts/{id}`; posts now live under an
organization, which the `before` loader, knowing no memberships, can't enter. `/users/me`
goes through the same viewer path. `tenant_read` prices the organization read itself.)

One seeded database, a reader who belongs to `--memberships` organizations (plus their
own), and four servers measured in alternation (wrk, closed loop):

- `keel`: today's Keel, whose viewer query also loads the caller's memberships;
- `before`: the same Keel with the viewer loader from before organizations
  (`bench.apps.viewer_before`): the baseline;
- `keel_uncached` / `before_uncached`: both with `VIEWER_CACHE_SIZE=0`, so every request
  runs the viewer query: the price of the memberships on a cache miss.

Figures: `keel ÷ before` (target ≥ 0.95, the hot path: cached viewers) and
`keel_uncached ÷ before_uncached` (reported: what a cold cache pays), with SQL statements
per request for each (the round trips: the memberships add none).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

from bench.harness import load as ld
from bench.harness import results as res
from bench.harness.base import API
from bench.harness.keel_api import SEEDED_PASSWORD, bearer, login
from bench.harness.noise import noise_warning
from bench.harness.pg import psql
from bench.harness.scenario import Results, Scenario, first_line
from bench.harness.seeded import seeded_reads
from bench.harness.server import add_server_args
from bench.harness.wrk import Load

NAME = "viewer_memberships"
UNCACHED = {"VIEWER_CACHE_SIZE": "0"}
VARIANTS = (
    ld.Variant("keel", "keel.app:create_app", has_request_id=True),
    ld.Variant("before", "bench.apps.viewer_before:create_app", has_request_id=True),
    ld.Variant("keel_uncached", "keel.app:create_app", UNCACHED, has_request_id=True),
    ld.Variant(
        "before_uncached", "bench.apps.viewer_before:create_app", UNCACHED, has_request_id=True
    ),
)
# (figure, with memberships, without, target or None for a reported figure)
PAIRS = (
    ("cached", "keel", "before", 0.95),
    ("uncached", "keel_uncached", "before_uncached", None),
)
LABELS = {
    "cached": "`GET {path}`, Viewer with memberships ÷ without (cached viewer)",
    "uncached": "the same with the viewer cache off (viewer query every request)",
}


PATH = "/users/me"
BEFORE_ORGANIZATIONS_PATH = "/posts/{id}"  # what results written before then measured


def _label(data: Mapping[str, Any], figure: str) -> str:
    return LABELS[figure].format(path=data.get("path", BEFORE_ORGANIZATIONS_PATH))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ld.add_load_args(parser)
    add_server_args(parser)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--posts", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ids", type=int, default=1_000, help="published post ids to pick from")
    parser.add_argument("--memberships", type=int, default=50, help="the reader's extra orgs")


def _join_organizations(pg: Any, user_id: str, count: int) -> int:
    """`count` organizations with the reader as a member, and a personal one they own."""
    user_id = str(UUID(user_id))  # the SQL below is built from a checked UUID and an int
    psql(
        pg,
        f"""
        INSERT INTO app.organizations (id, name, slug, personal)
        SELECT gen_random_uuid(), 'Bench ' || n, 'bench-' || n, false
        FROM generate_series(1, {int(count)}) AS n;
        INSERT INTO app.memberships (tenant_id, user_id, role)
        SELECT id, '{user_id}', (ARRAY['admin', 'member', 'viewer'])[1 + (random() * 2)::int]
        FROM app.organizations WHERE slug LIKE 'bench-%';
        INSERT INTO app.organizations (id, name, slug, personal)
        VALUES (gen_random_uuid(), 'reader', '~bench-reader', true);
        INSERT INTO app.memberships (tenant_id, user_id, role)
        SELECT id, '{user_id}', 'owner' FROM app.organizations WHERE slug = '~bench-reader';
        ANALYZE app.organizations, app.memberships;
        """,  # noqa: S608
    )
    count_sql = f"SELECT count(*) FROM app.memberships WHERE user_id = '{user_id}';"  # noqa: S608
    return int(psql(pg, count_sql))


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
        seeded["reader_memberships"] = _join_organizations(pg, fixture.user_id, args.memberships)
        with ld.serve_variants(VARIANTS, env, Path(tmp)) as servers:
            with httpx.Client(base_url=servers["keel"].url(), timeout=30) as client:
                auth = bearer(login(client, fixture.username, SEEDED_PASSWORD))
            me = f"{API}{PATH}"
            for variant in VARIANTS:
                ld.check_reply(servers[variant.key], me, auth, variant)
            measured = [
                ld.Measured(v.key, servers[v.key], Load(me, headers=auth)) for v in VARIANTS
            ]
            rounds = ld.alternate(measured, options, Path(tmp), pg=pg)
    medians = ld.summarise(rounds)
    figures: dict[str, Any] = {}
    for figure, with_key, without_key, target in PAIRS:
        w, wo = medians[with_key], medians[without_key]
        ratio = w["requests_per_sec"] / wo["requests_per_sec"]
        figures[figure] = {
            "ratio": ratio,
            "target": target,
            "pass": None if target is None else ratio >= target,
            "with_us": ld.per_request_us(w["requests_per_sec"]),
            "without_us": ld.per_request_us(wo["requests_per_sec"]),
            "with_statements_per_request": w.get("statements_per_request"),
            "without_statements_per_request": wo.get("statements_per_request"),
        }
    return {
        "server": config.describe(),
        "path": PATH,
        "settings": {"variants": {v.key: [v.app, dict(v.env)] for v in VARIANTS}},
        "seeded": seeded,
        **rounds.as_json(),
        "others_seen": sorted(set(others + rounds.others_seen)),
        "medians": medians,
        "figures": figures,
        "pass": all(f["pass"] for f in figures.values() if f["pass"] is not None),
        "noisy": bool(noise_warning(ld.worst_other_cpu(medians))),
    }


def _target(f: Mapping[str, Any]) -> str:
    return "reported" if f["target"] is None else f"≥ {f['target']}: {res.verdict(f['pass'])}"


def _rows(data: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for figure, with_key, without_key, _ in PAIRS:
        f = data["figures"][figure]
        w, wo = data["medians"][with_key], data["medians"][without_key]
        statements = f.get("with_statements_per_request")
        before = f.get("without_statements_per_request")
        rows.append(
            [
                _label(data, figure),
                f"{w['requests_per_sec']:,.0f} ÷ {wo['requests_per_sec']:,.0f} req/s = "
                f"**{f['ratio']:.3f}**",
                f"{f['with_us']:.0f} / {f['without_us']:.0f}",
                f"{statements:.2f} / {before:.2f}"
                if statements is not None and before is not None
                else "",
                _target(f),
            ]
        )
    return rows


HEADER = ["figure", "with ÷ without", "µs/req with / without", "SQL statements/req", "target"]


def render(data: Mapping[str, Any]) -> str:
    s, med = data["settings"], data["medians"]
    lines = [
        f"### Viewer memberships ({data['timestamp']}, {data['commit'][:12]})",
        "",
        res.markdown_table(HEADER, _rows(data)),
        "",
        res.rounds_table(data),
        "",
        f"wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s, {s['rounds']} "
        f"alternating rounds, {s['warmup']}s warm-up; the reader belongs to "
        f"{data['seeded']['reader_memberships']} organizations. {res.server_line(data)}.",
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
    f = data["figures"]["cached"]
    return [
        [_label(data, "cached"), f"{f['ratio']:.2f}", f"≥ {f['target']} ({res.verdict(f['pass'])})"]
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
