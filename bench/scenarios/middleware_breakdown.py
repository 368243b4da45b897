"""Price each piece of Keel's middleware stack on GET /health, one removal at a time.

Each variant (bench/apps/stack.py) is the full stack minus one piece. "saves µs/req" is
1e6/req_s(full) - 1e6/req_s(variant): the server CPU time per request that piece costs.
`--only a,b` measures only those variants (plus full and no_middleware).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.apps.stack import VARIANTS
from bench.harness import load as ld
from bench.harness import results as res
from bench.harness.noise import noise_warning
from bench.harness.pg import embedded_cluster
from bench.harness.proc import source_tree
from bench.harness.scenario import Results, Scenario, first_line
from bench.harness.server import add_server_args, new_secret, server_config
from bench.harness.wrk import Load, require_wrk

NAME = "middleware_breakdown"
PATH = "/health"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ld.add_load_args(parser, duration=8)
    add_server_args(parser)
    parser.add_argument("--only", default="", help="comma-separated variant keys to run")


def run(args: argparse.Namespace) -> dict[str, Any]:
    require_wrk()
    wanted = {"full", "no_middleware", *filter(None, args.only.split(","))} if args.only else None
    variants = tuple(v for v in VARIANTS if wanted is None or v.key in wanted)
    options = ld.LoadOptions.from_args(args)
    config = server_config(args)
    config.prepare()
    with (
        source_tree(args.ref) as src,
        embedded_cluster() as pg,
        tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp,
    ):
        env = config.env(database_url=pg.url, data_dir=tmp, secret=new_secret(), src=src)
        with ld.serve_variants(variants, env, Path(tmp)) as servers:
            for variant in variants:
                ld.check_reply(servers[variant.key], PATH, options.headers, variant)
            measured = [ld.Measured(v.key, servers[v.key], Load(PATH)) for v in variants]
            rounds = ld.alternate(measured, options, Path(tmp))
    medians = ld.summarise(rounds)
    return {
        "server": config.describe(),
        "settings": {"path": PATH, "variants": {v.key: v.app for v in variants}},
        **rounds.as_json(),
        "medians": medians,
        "noisy": bool(noise_warning(ld.worst_other_cpu(medians))),
    }


def _baseline(medians: Mapping[str, Any]) -> str:
    return "no_middleware" if "no_middleware" in medians else "bare"


def _rows(data: Mapping[str, Any]) -> list[list[str]]:
    medians = data["medians"]
    full_us = 1e6 / medians["full"]["requests_per_sec"]
    base_rps = medians[_baseline(medians)]["requests_per_sec"]
    rows = []
    for key in data["settings"]["variants"]:
        m = medians[key]
        rps = m["requests_per_sec"]
        rows.append(
            [
                f"`{key}`",
                f"{rps:,.0f}",
                f"{1e6 / rps:.1f}",
                f"{rps / base_rps:.3f}",
                f"{full_us - 1e6 / rps:+.1f}",
                f"{m['p50_ms']:.2f}",
                f"{m['p99_ms']:.2f}",
                f"{m['other_cpu_pct']:.0f}",
            ]
        )
    return rows


HEADER = [
    "variant",
    "median req/s",
    "µs/req",
    "÷ none",
    "saves µs/req",
    "p50 ms",
    "p99 ms",
    "other CPU %",
]


def render(data: Mapping[str, Any]) -> str:
    s = data["settings"]
    return "\n".join(
        [
            f"### Middleware breakdown: GET {PATH} ({data['timestamp']}, {data['commit'][:12]})",
            "",
            res.markdown_table(HEADER, _rows(data)),
            "",
            f"wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s"
            + "".join(f" -H '{h}'" for h in s["header"])
            + f", {s['rounds']} alternating rounds, {s['warmup']}s warm-up, medians over rounds."
            f" Server: {res.server_line(data)}.",
            "",
            noise_warning(max(m["other_cpu_pct"] for m in data["medians"].values())),
        ]
    ).rstrip()


def table(results: Results) -> str:
    parts = []
    for stem, data in results.items():
        parts.append(res.markdown_table(HEADER, _rows(data)))
        parts.append(res.source_note(data, stem))
    return "\n\n".join(parts)


SCENARIO = Scenario(
    name=NAME,
    summary=first_line(__doc__),
    add_arguments=add_arguments,
    run=run,
    render=render,
    table=table,
)
