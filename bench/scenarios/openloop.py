"""Open-loop load: authenticated GET /posts/{id} at 70% of measured capacity for N minutes.

1. Capacity: closed-loop wrk on full Keel (production defaults), authenticated
   `GET /api/v1/posts/{id}` over random published ids, `--capacity-rounds` runs, median.
2. Open loop: a constant arrival rate of `--fraction` (0.7) × that capacity for `--minutes`
   (3), from `bench.harness.openloop` pinned to the client core: p50/p99/p99.9 latency
   measured from each request's intended send time (no coordinated omission), errors, 5xx.
3. Capacity again, one run: after ÷ before shows whether the server degraded.

Target: 0 errors and 0 5xx. Data: `keel seed` (`--users`, `--posts`), embedding jobs it
queued dropped so the job worker idles; one seeded user signs in over HTTP.
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
from bench.harness.base import API, CLIENT_CPU, SERVER_CPU, median, say
from bench.harness.keel_api import SEEDED_PASSWORD, bearer, get_ok, login, seed
from bench.harness.noise import cpu_split, noise_warning, settle
from bench.harness.pg import embedded_cluster, postmaster_pid, read_fixture
from bench.harness.proc import run_child, source_tree
from bench.harness.scenario import Results, Scenario, first_line
from bench.harness.server import (
    Server,
    add_server_args,
    new_secret,
    rss_kib,
    server_config,
    uvicorn_server,
)
from bench.harness.wrk import Load, require_wrk
from keel.core.embedded import EmbeddedPostgres

NAME = "openloop"
APP = "keel.app:create_app"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_args(parser)
    group = parser.add_argument_group("open loop")
    group.add_argument("--minutes", type=float, default=3.0, help="open-loop duration")
    group.add_argument("--fraction", type=float, default=0.7, help="of the measured capacity")
    group.add_argument(
        "--rate", type=float, default=None, help="req/s to use instead of fraction × capacity"
    )
    group.add_argument(
        "--open-connections", type=int, default=64, help="keep-alive connections of the open loop"
    )
    group.add_argument("--timeout", type=float, default=10.0, help="s per request before an error")
    group = parser.add_argument_group("capacity (wrk, closed loop)")
    group.add_argument("--capacity-duration", type=float, default=10.0, help="s per wrk run")
    group.add_argument("--capacity-rounds", type=int, default=3)
    group.add_argument("--connections", type=int, default=64)
    group.add_argument("--threads", type=int, default=2, help="wrk threads")
    group.add_argument("--warmup", type=float, default=3.0, help="s of load before measuring")
    group = parser.add_argument_group("data")
    group.add_argument("--users", type=int, default=1_000)
    group.add_argument("--posts", type=int, default=20_000)
    group.add_argument("--seed", type=int, default=1)
    group.add_argument("--ids", type=int, default=1_000, help="published post ids to pick from")


def _capacity(
    server: Server,
    load: Load,
    args: argparse.Namespace,
    rounds: int,
    workdir: Path,
    pg: EmbeddedPostgres,
) -> ld.Rounds:
    options = ld.LoadOptions(
        duration=args.capacity_duration,
        connections=args.connections,
        threads=args.threads,
        rounds=rounds,
        warmup=args.warmup,
        quiet_wait=args.quiet_wait,
        other_wait=args.other_wait,
    )
    return ld.alternate([ld.Measured("post_by_id", server, load)], options, workdir, pg=pg)


def run(args: argparse.Namespace) -> dict[str, Any]:
    require_wrk()
    minutes = max(args.minutes, 0.05)
    # One token for the whole run, however long.
    config = server_config(args, access_token_minutes=min(24 * 60, max(120, int(minutes) + 60)))
    config.prepare()
    others = settle(args.quiet_wait, args.other_wait)
    with (
        source_tree(args.ref) as src,
        embedded_cluster() as pg,
        tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp,
    ):
        workdir = Path(tmp)
        env = config.env(database_url=pg.url, data_dir=tmp, secret=new_secret(), src=src)
        say(f"seeding {args.users:,} users and {args.posts:,} posts ...")
        seeded = seed(pg.url, users=args.users, posts=args.posts, seed=args.seed, env=env, src=src)
        fixture = read_fixture(pg, args.ids)
        seeded["dropped_queued_jobs"] = fixture.dropped_queued_jobs
        username, ids, posts = fixture.username, fixture.post_ids, fixture.posts_path
        env["KEEL_AUTO_MIGRATE"] = "false"  # `keel seed` migrated
        with uvicorn_server("full", APP, env=env, log_path=workdir / "full.log") as server:
            with httpx.Client(base_url=server.url(), timeout=30) as client:
                auth = bearer(login(client, username, SEEDED_PASSWORD))
                for post_id in ids[:5]:
                    get_ok(client, f"{posts}/{post_id}", auth)
            paths = tuple(f"{posts}/{i}" for i in ids)
            load = Load(f"{posts}/{{id}}", paths, auth)
            before = _capacity(server, load, args, args.capacity_rounds, workdir, pg)
            capacity = median([r.requests_per_sec for r in before.runs["post_by_id"]])
            rate = args.rate or args.fraction * capacity
            rss_before = rss_kib(server.pid)
            others += settle(args.quiet_wait, args.other_wait)
            say(f"open loop: {rate:,.0f} req/s for {minutes:g} min ...")
            spec = {
                "host": "127.0.0.1",
                "port": server.port,
                "paths": list(paths),
                "headers": dict(auth),
                "rate": rate,
                "duration": minutes * 60,
                "connections": args.open_connections,
                "timeout": args.timeout,
                "drain": args.timeout,
                "seed": args.seed,
            }
            with cpu_split((server.pid,), postmaster_pid(pg)) as cpu:
                result = run_child("bench.harness.openloop:generate", spec, cpu=CLIENT_CPU)
            split = cpu()
            rss_after = rss_kib(server.pid)
            after = _capacity(server, load, args, 1, workdir, pg)
            capacity_after = after.runs["post_by_id"][0].requests_per_sec
    lat = result["latency_ms"]
    say(
        f"open loop: {result['answered']:,} answered, {result['error_count']} errors, "
        f"{result['status_5xx']} 5xx; p50 {lat.get('p50', 0):.2f} ms, p99 "
        f"{lat.get('p99', 0):.2f} ms, p99.9 {lat.get('p99.9', 0):.2f} ms"
    )
    capacity_runs = before.as_json()
    return {
        "server": config.describe(),
        "settings": {"app": APP, "path": f"{API}/orgs/{{org_id}}/posts/{{id}}", "ids": len(ids)},
        "seeded": seeded,
        "capacity": {
            "requests_per_sec": capacity,
            "rounds": capacity_runs["rounds"]["post_by_id"],
            "cpu_rounds": capacity_runs["cpu_rounds"]["post_by_id"],
            "after_requests_per_sec": capacity_after,
            "after_vs_before": capacity_after / capacity,
        },
        "open_loop": result,
        "cpu": {
            "server_pct": split.server_pct,
            "postgres_pct": split.postgres_pct,
            "client_pct": split.client_pct,
            "other_pct": split.other_pct,
        },
        "server_rss_kib": {"before": rss_before, "after": rss_after},
        "figures": {
            "rate_vs_capacity": rate / capacity,
            "achieved_vs_rate": result["achieved_rate"] / rate,
            "errors": result["error_count"],
            "status_5xx": result["status_5xx"],
        },
        "pass": result["error_count"] == 0 and result["status_5xx"] == 0,
        "noisy": bool(noise_warning(split.other_pct)),
        "others_seen": sorted(set(others + before.others_seen + after.others_seen)),
    }


# --- report -------------------------------------------------------------------------------


def _latency(d: Mapping[str, float]) -> str:
    return " / ".join(f"{d.get(k, 0.0):.2f}" for k in ("p50", "p99", "p99.9", "max"))


def _rows(data: Mapping[str, Any]) -> list[list[str]]:
    cap, ol, f = data["capacity"], data["open_loop"], data["figures"]
    minutes = data["settings"]["minutes"]
    errors = ", ".join(f"{k} {v}" for k, v in ol["errors"].items()) or "none"
    return [
        [
            "capacity, closed loop (wrk): before / after the open loop",
            f"{cap['requests_per_sec']:,.0f} / {cap['after_requests_per_sec']:,.0f} req/s"
            f" (after ÷ before {cap['after_vs_before']:.2f})",
            "report",
        ],
        [
            f"open loop: {minutes:g} min at {f['rate_vs_capacity']:.2f} × capacity",
            f"{ol['rate']:,.0f} req/s scheduled, {ol['achieved_rate']:,.0f} answered/s"
            f" ({f['achieved_vs_rate']:.3f} of the rate)",
            "report",
        ],
        [
            "latency from intended send, ms: p50 / p99 / p99.9 / max",
            f"**{_latency(ol['latency_ms'])}**",
            "report",
        ],
        [
            "service time (from actual send), ms: p50 / p99 / p99.9 / max",
            _latency(ol["service_ms"]),
            "reference",
        ],
        [
            "errors (non-2xx, timeouts, connection); 5xx",
            f"**{ol['error_count']}** ({errors}); **{ol['status_5xx']}**",
            f"0 and 0: {res.verdict(data['pass'])}",
        ],
    ]


def render(data: Mapping[str, Any]) -> str:
    ol, s, cpu = data["open_loop"], data["settings"], data["cpu"]
    windows = [
        [
            f"{w['start_s']:.0f}",
            f"{w['answered']:,}",
            w["errors"],
            f"{w['p50_ms']:.2f}",
            f"{w['p99_ms']:.2f}",
            f"{w['max_ms']:.2f}",
        ]
        for w in ol["windows"]
    ]
    lag = ol["send_lag_ms"]
    rss = data["server_rss_kib"]
    lines = [
        f"### Open loop: GET {s['path']} ({data['timestamp']}, {data['commit'][:12]})",
        "",
        res.markdown_table(["figure", "value", "target"], _rows(data)),
        "",
        f"One full app (`{s['app']}`), one uvicorn worker on CPU {SERVER_CPU}; server: "
        f"{res.server_line(data)}. Capacity: `wrk -t{s['threads']} -c{s['connections']} "
        f"-d{s['capacity_duration']}s` over {s['ids']:,} random published ids, "
        f"{s['capacity_rounds']} runs, median. Open loop: {s['open_connections']} keep-alive "
        f"connections from one process on CPU {CLIENT_CPU} (`bench.harness.openloop`), "
        f"{ol['scheduled']:,} requests at fixed intervals; timeout {s['timeout']:g} s.",
        "",
        f"Generator: {ol['generator_cpu_pct']:.0f}% of its core; send lag (sent − due) p50 "
        f"{lag.get('p50', 0.0):.2f} ms, p99 {lag.get('p99', 0.0):.2f} ms. CPU during the open "
        f"loop: server {cpu['server_pct']:.0f}%, PostgreSQL {cpu['postgres_pct']:.0f}%, "
        f"other {cpu['other_pct']:.0f}% of a core. Server RSS {rss['before'] / 1024:.0f} → "
        f"{rss['after'] / 1024:.0f} MiB. Status codes: {ol['status']}.",
        "",
        "Per 10 s of the schedule (by due time):",
        "",
        res.markdown_table(["from s", "answered", "errors", "p50 ms", "p99 ms", "max ms"], windows),
        "",
        noise_warning(cpu["other_pct"]),
    ]
    return "\n".join(lines).rstrip()


def table(results: Results) -> str:
    stem, data = next(iter(results.items()))
    note = res.source_note(data, stem)
    return f"{res.markdown_table(['figure', 'value', 'target'], _rows(data))}\n\n{note}"


def headline(results: Results) -> list[list[str]]:
    data = next(iter(results.values()))
    ol, f = data["open_loop"], data["figures"]
    return [
        [
            f"open loop at {f['rate_vs_capacity']:.1f} × capacity ({ol['rate']:,.0f} req/s, "
            f"{data['settings']['minutes']:g} min): p50 / p99 / p99.9 ms; errors; 5xx",
            f"{_latency(ol['latency_ms']).rsplit(' / ', 1)[0]}; {ol['error_count']}; "
            f"{ol['status_5xx']}",
            f"0 errors, 0 5xx ({res.verdict(data['pass'])})",
        ]
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
