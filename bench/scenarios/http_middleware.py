"""Middleware overhead: GET /health req/s with Keel's full middleware stack vs none.

Two servers, `full` (keel.app:create_app) and `no_middleware` (the same app built with
`create_app(middleware=False)`), measured in alternation. Headline: full ÷ no_middleware
median req/s (target >= 0.9). Run with `--header 'Accept-Encoding: gzip'` as well:
results go to `http_middleware__accept-encoding-gzip.json` then.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.apps.stack import FULL, NO_MIDDLEWARE
from bench.harness import load as ld
from bench.harness import results as res
from bench.harness.base import CLIENT_CPU, SERVER_CPU
from bench.harness.noise import noise_warning
from bench.harness.pg import embedded_cluster
from bench.harness.proc import source_tree
from bench.harness.scenario import Results, Scenario, first_line
from bench.harness.server import add_server_args, new_secret, server_config
from bench.harness.wrk import Load, require_wrk

NAME = "http_middleware"
PATH = "/health"
TARGET_RATIO = 0.9
VARIANTS = (FULL, NO_MIDDLEWARE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ld.add_load_args(parser)
    add_server_args(parser)


def run(args: argparse.Namespace) -> dict[str, Any]:
    require_wrk()
    options = ld.LoadOptions.from_args(args)
    config = server_config(args)
    config.prepare()
    with (
        source_tree(args.ref) as src,
        embedded_cluster() as pg,
        tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp,
    ):
        env = config.env(database_url=pg.url, data_dir=tmp, secret=new_secret(), src=src)
        with ld.serve_variants(VARIANTS, env, Path(tmp)) as servers:
            for variant in VARIANTS:
                ld.check_reply(servers[variant.key], PATH, options.headers, variant)
            measured = [ld.Measured(v.key, servers[v.key], Load(PATH)) for v in VARIANTS]
            rounds = ld.alternate(measured, options, Path(tmp))
    medians = ld.summarise(rounds)
    ratio = medians["full"]["requests_per_sec"] / medians["no_middleware"]["requests_per_sec"]
    return {
        "server": config.describe(),
        "settings": {"path": PATH, "variants": {v.key: v.app for v in VARIANTS}},
        **rounds.as_json(),
        "medians": medians,
        "ratio": ratio,
        "target": TARGET_RATIO,
        "pass": ratio >= TARGET_RATIO,
        "noisy": bool(noise_warning(ld.worst_other_cpu(medians))),
    }


def _baseline(data: Mapping[str, Any]) -> str:
    """The no-middleware variant's key ("bare" in results from before the harness)."""
    return "no_middleware" if "no_middleware" in data["medians"] else "bare"


def _headers(data: Mapping[str, Any]) -> str:
    sent = data["settings"].get("header") or []
    return ", ".join(f"`{h}`" for h in sent) or "no `Accept-Encoding` (wrk default)"


def render(data: Mapping[str, Any]) -> str:
    medians, s = data["medians"], data["settings"]
    rows = [
        [
            f"`{key}` ({app})",
            f"{medians[key]['requests_per_sec']:,.0f}",
            " / ".join(f"{r['requests_per_sec']:,.0f}" for r in data["rounds"][key]),
            f"{medians[key]['p50_ms']:.2f}",
            f"{medians[key]['p99_ms']:.2f}",
            int(medians[key]["errors"]),
            f"{medians[key]['other_cpu_pct']:.0f}",
        ]
        for key, app in s["variants"].items()
    ]
    header = [
        "variant",
        "median req/s",
        "req/s per round",
        "p50 ms",
        "p99 ms",
        "errors",
        "other CPU %",
    ]
    verdict = res.verdict(data["pass"]) + (" (noisy run, see below)" if data["noisy"] else "")
    return "\n".join(
        [
            f"### Middleware overhead: GET {PATH} ({data['timestamp']}, {data['commit'][:12]})",
            "",
            res.markdown_table(header, rows),
            "",
            f"**full ÷ {_baseline(data)} = {data['ratio']:.3f}** (target ≥ {data['target']}): "
            f"{verdict}",
            "",
            f"wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s"
            + "".join(f" -H '{h}'" for h in s["header"])
            + f", {s['rounds']} alternating rounds, {s['warmup']}s warm-up, medians over "
            f"rounds; server on CPU {SERVER_CPU}, wrk on CPU {CLIENT_CPU}. Server: "
            f"{res.server_line(data)}.",
            "",
            noise_warning(max(m["other_cpu_pct"] for m in medians.values())),
        ]
    ).rstrip()


def table(results: Results) -> str:
    rows = []
    for data in results.values():
        m = data["medians"]
        full, base = m["full"], m[_baseline(data)]
        rows.append(
            [
                _headers(data),
                f"{full['requests_per_sec']:,.0f}",
                f"{base['requests_per_sec']:,.0f}",
                f"{1e6 / full['requests_per_sec']:.1f}",
                f"{1e6 / base['requests_per_sec']:.1f}",
                f"{1e6 / full['requests_per_sec'] - 1e6 / base['requests_per_sec']:.0f}",
                f"{full['p50_ms']:.2f} / {base['p50_ms']:.2f} ms",
                f"{full['p99_ms']:.2f} / {base['p99_ms']:.2f} ms",
                f"**{data['ratio']:.3f}** (target {data['target']}: {res.verdict(data['pass'])})",
            ]
        )
    header = [
        "client sends",
        "full req/s",
        "none req/s",
        "full µs/req",
        "none µs/req",
        "middleware µs/req",
        "p50 full / none",
        "p99 full / none",
        "**full ÷ none**",
    ]
    sources = "; ".join(
        f"{res.source_line(d, stem)} ({res.server_line(d)})" for stem, d in results.items()
    )
    return f"{res.markdown_table(header, rows)}\n\nFrom {sources}."


def headline(results: Results) -> list[list[str]]:
    return [
        [
            f"`/health` full middleware ÷ none, client sends {_headers(d)}",
            f"{d['ratio']:.2f}",
            f"≥ {d['target']} ({res.verdict(d['pass'])})",
        ]
        for d in results.values()
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
