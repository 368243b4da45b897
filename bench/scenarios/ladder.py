"""The request-path ladder: what each layer of Keel adds to an authenticated `GET /posts/{id}`.

Five servers on one seeded database, measured in alternation (wrk, closed loop), each
adding one layer to the one before (`bench.apps.ladder`):

1. bare FastAPI + asyncpg (one prepared statement, orjson);
2. + Keel's middleware stack;
3. + the bearer token and the `Viewer` (both cached);
4. + the API-wide rate limit (Redis, one round trip; with `--limiter off`, a no-op);
5. full Keel (`/api/v1/posts/{id}`).

Reported per rung: req/s, µs per request (1e6 ÷ req/s, the server core saturated), the
µs each step adds, and SQL statements per request. Then full Keel's memory: VmRSS and
VmHWM of its one worker after the rounds and after each of two further runs of
`--rss-requests` requests (growth between the two runs would mean a leak). Run it twice:
with production defaults, and with `--limiter off` (written as `ladder__limiter-off`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from bench.harness import load as ld
from bench.harness import results as res
from bench.harness.base import BenchError, say
from bench.harness.keel_api import SEEDED_PASSWORD, bearer, login
from bench.harness.noise import noise_warning
from bench.harness.scenario import Results, Scenario, first_line
from bench.harness.seeded import seeded_reads
from bench.harness.server import Server, add_server_args
from bench.harness.wrk import Load, path_picker_lua, run_wrk

NAME = "ladder"
RUNGS = (
    ld.Variant("keel", "keel.app:create_app", has_request_id=True),  # first: it migrates
    ld.Variant("bare", "bench.apps.bare:create_app", has_request_id=False),
    ld.Variant("middleware", "bench.apps.ladder:middleware", has_request_id=True),
    ld.Variant("viewer", "bench.apps.ladder:viewer", has_request_id=True),
    ld.Variant("limiter", "bench.apps.ladder:limiter", has_request_id=True),
)
ORDER = ("bare", "middleware", "viewer", "limiter", "keel")  # the ladder, bottom up
LABELS = {
    "bare": "bare FastAPI + asyncpg",
    "middleware": "+ middleware",
    "viewer": "+ token and viewer",
    "limiter": "+ limiter",
    "keel": "+ full Keel",
}


class LadderScenario(Scenario):
    def stem(self, args: argparse.Namespace) -> str:
        return NAME if args.limiter != "off" else f"{NAME}__limiter-off"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ld.add_load_args(parser)
    add_server_args(parser)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--posts", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ids", type=int, default=1_000, help="published post ids to pick from")
    parser.add_argument(
        "--rss-requests", type=int, default=100_000, help="requests per memory run (0: skip)"
    )


def _memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def _memory_runs(
    server: Server, load: Load, requests: int, rps: float, workdir: Path
) -> list[dict[str, Any]]:
    """Two runs of about `requests` requests each; memory after each."""
    script = path_picker_lua(load.paths, workdir / "rss.lua")
    seconds = max(1.0, requests / max(rps, 1.0))
    runs = []
    for run in (1, 2):
        result, _ = run_wrk(
            server.url(load.path),
            duration=seconds,
            connections=32,
            threads=1,
            headers=load.headers,
            script=script,
        )
        if result.non_2xx:
            raise BenchError(f"memory run {run}: {result.non_2xx} non-2xx replies")
        memory = _memory_kib(server.pid)  # uvicorn itself: one worker, no supervisor
        say(f"memory run {run}: {result.requests:,} requests, {memory}")
        runs.append({"requests": result.requests, **memory})
    return runs


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
        username, ids = fixture.username, fixture.post_ids
        bare_posts = f"/orgs/{fixture.org_id}/posts"  # every rung below Keel serves this
        with ld.serve_variants(RUNGS, env, Path(tmp)) as servers:
            with httpx.Client(base_url=servers["keel"].url(), timeout=30) as client:
                auth = bearer(login(client, username, SEEDED_PASSWORD))
            loads = {
                key: Load(
                    f"{fixture.posts_path if key == 'keel' else bare_posts}/{{id}}",
                    tuple(
                        f"{fixture.posts_path if key == 'keel' else bare_posts}/{i}" for i in ids
                    ),
                    auth if key != "bare" else {},
                )
                for key in ORDER
            }
            for variant in RUNGS:
                ld.check_reply(servers[variant.key], loads[variant.key].paths[0], auth, variant)
            measured = [ld.Measured(key, servers[key], loads[key]) for key in ORDER]
            rounds = ld.alternate(measured, options, Path(tmp), pg=pg)
            medians = ld.summarise(rounds)
            memory: list[dict[str, Any]] = []
            if args.rss_requests > 0:
                memory = _memory_runs(
                    servers["keel"],
                    loads["keel"],
                    args.rss_requests,
                    medians["keel"]["requests_per_sec"],
                    Path(tmp),
                )
    steps = ld.step_deltas(ORDER, medians)
    for step in steps:
        step["statements_per_request"] = medians[step["key"]].get("statements_per_request")
    return {
        "server": config.describe(),
        "settings": {"variants": {v.key: v.app for v in RUNGS}},
        "seeded": seeded,
        **rounds.as_json(),
        "others_seen": sorted(set(others + rounds.others_seen)),
        "medians": medians,
        "steps": steps,
        "keel_over_bare": medians["keel"]["requests_per_sec"] / medians["bare"]["requests_per_sec"],
        "memory": memory,
        "noisy": bool(noise_warning(ld.worst_other_cpu(medians))),
    }


HEADER = ["rung", "req/s", "µs/req", "step adds µs", "÷ bare", "SQL statements/req"]


def _rows(data: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for step in data["steps"]:
        statements = step.get("statements_per_request")
        rows.append(
            [
                LABELS[step["key"]],
                f"{step['requests_per_sec']:,.0f}",
                f"{step['us_per_request']:.0f}",
                "" if step["step_us"] is None else f"{step['step_us']:+.0f}",
                f"{step['ratio_to_first']:.2f}",
                "" if statements is None else f"{statements:.2f}",
            ]
        )
    return rows


def _memory_line(data: Mapping[str, Any]) -> str:
    runs = data.get("memory") or []
    if len(runs) < 2:
        return ""
    first, second = runs
    return (
        f"Full Keel's worker after {first['requests']:,} and then {second['requests']:,} more "
        f"requests: RSS {first['VmRSS'] / 1024:.1f} → {second['VmRSS'] / 1024:.1f} MiB, "
        f"peak {first['VmHWM'] / 1024:.1f} → {second['VmHWM'] / 1024:.1f} MiB "
        f"(growth {(second['VmHWM'] - first['VmHWM']) / 1024:+.1f} MiB)."
    )


def render(data: Mapping[str, Any]) -> str:
    s = data["settings"]
    lines = [
        f"### Request-path ladder, limiter {data['server']['limiter']} "
        f"({data['timestamp']}, {data['commit'][:12]})",
        "",
        res.markdown_table(HEADER, _rows(data)),
        "",
        _memory_line(data),
        "",
        f"wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s, {s['rounds']} "
        f"alternating rounds, {s['warmup']}s warm-up; every server one uvicorn worker on the "
        f"server core. {res.server_line(data)}.",
        "",
        noise_warning(ld.worst_other_cpu(data["medians"])),
    ]
    return "\n".join(lines).rstrip()


def table(results: Results) -> str:
    blocks = []
    for stem, data in sorted(results.items()):
        blocks.append(
            f"Limiter {data['server']['limiter']} (from {res.source_line(data, stem)}):\n\n"
            f"{res.markdown_table(HEADER, _rows(data))}\n\n{_memory_line(data)}".rstrip()
        )
    return "\n\n".join(blocks)


def headline(results: Results) -> list[list[str]]:
    rows = []
    for data in results.values():
        limiter = data["server"]["limiter"]
        rows.append(
            [
                f"ladder (limiter {limiter}): full Keel ÷ bare, `GET /posts/{{id}}`",
                f"{data['keel_over_bare']:.2f}",
                "≥ 0.6",
            ]
        )
        memory = data.get("memory") or []
        if len(memory) == 2:
            growth = (memory[1]["VmHWM"] - memory[0]["VmHWM"]) / 1024
            rows.append(
                [
                    f"peak RSS of one worker after 2 × {memory[0]['requests']:,} requests",
                    f"{memory[1]['VmHWM'] / 1024:.0f} MiB ({growth:+.1f} MiB on the 2nd run)",
                    "no growth",
                ]
            )
    return rows


SCENARIO = LadderScenario(
    name=NAME,
    summary=first_line(__doc__),
    add_arguments=add_arguments,
    run=run,
    render=render,
    table=table,
    headline=headline,
)
