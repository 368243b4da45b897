"""Deployment choices priced on authenticated `GET /posts/{id}`: PgBouncer, tracing.

Keel servers on one seeded database, measured in alternation (wrk, closed loop):
- `direct`: production defaults, tracing off (no OTLP endpoint): the baseline;
- `pgbouncer`: DATABASE_URL through a real PgBouncer (Debian's, transaction pooling,
  a pool of `--pool` server connections) with DB_PGBOUNCER=true (statement caches off:
  each read is parsed again, in the same round trip as its execution);
- `otel_absent`: `direct` as if OpenTelemetry were not installed (`bench.apps.no_otel`
  makes importing it fail): tracing off ÷ this, target ≥ 0.98;
- `otel_on`: tracing on, every request sampled, exporting over OTLP/HTTP to a sink in
  the bench process: tracing on ÷ off, reported.
Production defaults otherwise. PgBouncer is not pinned to a core: on this 2-core machine it
competes with the server and PostgreSQL, as it would on a shared host.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from bench.harness import load as ld
from bench.harness import results as res
from bench.harness.keel_api import SEEDED_PASSWORD, bearer, login
from bench.harness.noise import noise_warning
from bench.harness.otlp import otlp_sink
from bench.harness.pgbouncer import pgbouncer
from bench.harness.scenario import Results, Scenario, first_line
from bench.harness.seeded import seeded_reads
from bench.harness.server import add_server_args
from bench.harness.wrk import Load

NAME = "deploy"
DIRECT = ld.Variant("direct", "keel.app:create_app", has_request_id=True)
ABSENT = ld.Variant("otel_absent", "bench.apps.no_otel:create_app", has_request_id=True)
# (figure, measured key, baseline key, label, target or None)
PAIRS = (
    ("pgbouncer", "pgbouncer", "direct", "`GET /posts/{id}` via PgBouncer ÷ direct", None),
    ("tracing_off", "direct", "otel_absent", "tracing off ÷ OpenTelemetry absent", 0.98),
    ("tracing_on", "otel_on", "direct", "tracing on ÷ off (OTLP/HTTP, all sampled)", None),
)
KEYS = ("direct", "pgbouncer", "otel_absent", "otel_on")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ld.add_load_args(parser)
    add_server_args(parser)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--posts", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ids", type=int, default=500, help="published post ids to pick from")
    parser.add_argument("--pool", type=int, default=10, help="PgBouncer's default_pool_size")


def run(args: argparse.Namespace) -> dict[str, Any]:
    with (
        seeded_reads(args, seed_value=args.seed) as (
            options,
            config,
            others,
            pg,
            tmp,
            env,
            seeded,
            fixture,
        ),
        pgbouncer(pg.url, pool_size=args.pool) as bouncer_url,
        otlp_sink() as otlp,
    ):
        bounced = ld.Variant(
            "pgbouncer",
            "keel.app:create_app",
            env={
                "DATABASE_URL": bouncer_url,
                "DB_PGBOUNCER": "true",
                "DATABASE_DIRECT_URL": pg.url,
            },
            has_request_id=True,
        )
        traced = ld.Variant(
            "otel_on",
            "keel.app:create_app",
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp, "OTEL_TRACES_SAMPLER": "always_on"},
            has_request_id=True,
        )
        variants = (DIRECT, bounced, ABSENT, traced)
        with ld.serve_variants(variants, env, Path(tmp)) as servers:
            with httpx.Client(base_url=servers["direct"].url(), timeout=30) as client:
                auth = bearer(login(client, fixture.username, SEEDED_PASSWORD))
            paths = tuple(f"{fixture.posts_path}/{i}" for i in fixture.post_ids)
            for variant in variants:
                ld.check_reply(servers[variant.key], paths[0], auth, variant)
            load = Load(f"{fixture.posts_path}/{{id}}", paths, auth)
            measured = [ld.Measured(key, servers[key], load) for key in KEYS]
            rounds = ld.alternate(measured, options, Path(tmp), pg=pg)
    medians = ld.summarise(rounds)
    figures = {}
    for figure, key, base, _, target in PAIRS:
        ratio = medians[key]["requests_per_sec"] / medians[base]["requests_per_sec"]
        figures[figure] = {
            "ratio": ratio,
            "target": target,
            "pass": None if target is None else ratio >= target,
            "us": ld.per_request_us(medians[key]["requests_per_sec"]),
            "baseline_us": ld.per_request_us(medians[base]["requests_per_sec"]),
            "statements_per_request": medians[key].get("statements_per_request"),
        }
    return {
        "server": config.describe(),
        "settings": {"pgbouncer_pool": args.pool, "pool_mode": "transaction"},
        "seeded": seeded,
        **rounds.as_json(),
        "others_seen": sorted(set(others + rounds.others_seen)),
        "medians": medians,
        "figures": figures,
        "noisy": bool(noise_warning(ld.worst_other_cpu(medians))),
    }


def _rows(data: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for figure, key, base, label, target in PAIRS:
        f, m, b = data["figures"][figure], data["medians"][key], data["medians"][base]
        rows.append(
            [
                label,
                f"{m['requests_per_sec']:,.0f} ÷ {b['requests_per_sec']:,.0f} req/s = "
                f"**{f['ratio']:.3f}**",
                f"{f['us']:.0f} / {f['baseline_us']:.0f}",
                "reported" if target is None else f"≥ {target}: {res.verdict(f['pass'])}",
            ]
        )
    return rows


HEADER = ["figure", "ratio", "µs/req (measured / baseline)", "target"]


def render(data: Mapping[str, Any]) -> str:
    s, med = data["settings"], data["medians"]
    lines = [
        f"### Deployment choices ({data['timestamp']}, {data['commit'][:12]})",
        "",
        res.markdown_table(HEADER, _rows(data)),
        "",
        res.rounds_table(data),
        "",
        f"wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s, {s['rounds']} "
        f"alternating rounds; PgBouncer {s['pool_mode']} pooling, pool {s['pgbouncer_pool']}. "
        f"Keel: {res.server_line(data)}.",
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
    rows = []
    for figure, _, _, label, target in PAIRS:
        f = data["figures"].get(figure)
        if f is not None:
            verdict = "reported" if target is None else f"≥ {target} ({res.verdict(f['pass'])})"
            rows.append([label, f"{f['ratio']:.2f}", verdict])
    return rows


SCENARIO = Scenario(
    name=NAME,
    summary=first_line(__doc__),
    add_arguments=add_arguments,
    run=run,
    render=render,
    table=table,
    headline=headline,
)
