"""Middleware cost in-process: µs per GET /health calling the ASGI app directly, no network.

Much less noisy than wrk (best of --repeats timed loops, one process per variant pinned to
one core), so it resolves the small pieces the HTTP breakdown cannot. It leaves out
uvicorn, httptools and the kernel, so its absolute µs are lower than the HTTP figures.
Variants are those of middleware_breakdown (bench/apps/stack.py); the baseline is Keel
without middleware. The app's lifespan never runs: no database, limiter or worker.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.apps.stack import VARIANTS
from bench.harness import results as res
from bench.harness.base import SERVER_CPU, BenchError, say
from bench.harness.load import parse_headers
from bench.harness.noise import wait_for_quiet
from bench.harness.proc import run_child, source_tree
from bench.harness.scenario import Results, Scenario, first_line
from bench.harness.server import add_server_args, new_secret, server_config

NAME = "asgi_inprocess"
PATH = "/health"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=20000, help="requests per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated variant keys to run")
    parser.add_argument(
        "--header", action="append", default=[], help="extra request header 'Name: value'"
    )
    add_server_args(parser)


async def _time_requests(
    app: Any, requests: int, repeats: int, extra_headers: Mapping[str, str]
) -> list[float]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"bench"),
            *((k.lower().encode(), v.encode()) for k, v in extra_headers.items()),
        ],
    }
    replies: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            replies.append(message["status"])

    async def one() -> None:
        await app({**scope, "state": {}}, receive, send)

    for _ in range(max(1000, requests // 10)):  # warm up
        await one()
    if set(replies) != {200}:
        raise BenchError(f"GET {PATH} answered {sorted(set(replies))}")
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(requests):
            await one()
        timings.append((time.perf_counter() - start) / requests * 1e6)
    return timings


def child(spec: Mapping[str, Any]) -> dict[str, Any]:
    """In a child process: build one variant and time it; µs/req per repeat."""
    import uvloop

    module, factory = str(spec["app"]).split(":")
    app = getattr(importlib.import_module(module), factory)()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    timings = asyncio.run(_time_requests(app, spec["requests"], spec["repeats"], spec["headers"]))
    return {"timings": timings}


def run(args: argparse.Namespace) -> dict[str, Any]:
    wanted = {"full", "no_middleware", *args.only.split(",")} if args.only else None
    variants = [v for v in VARIANTS if wanted is None or v.key in wanted]
    config = server_config(args)
    timings: dict[str, list[float]] = {}
    with source_tree(args.ref) as src, tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        # The lifespan never runs, so the database URL is never used.
        env = config.env(
            database_url="postgresql://bench@/unused", data_dir=tmp, secret=new_secret()
        )
        spec = {"requests": args.requests, "repeats": args.repeats}
        spec["headers"] = parse_headers(args.header)
        for variant in variants:
            wait_for_quiet(args.quiet_wait)
            log = Path(tmp) / f"{variant.key}.log"  # the access log goes here, as in production
            out = run_child(
                "bench.scenarios.asgi_inprocess:child",
                {**spec, "app": variant.app},
                src=src,
                cpu=SERVER_CPU,
                env=env,
                log=log,
            )
            timings[variant.key] = out["timings"]
            say(f"{variant.key:>30}: {min(timings[variant.key]):6.1f} µs/req")
    return {
        "server": config.describe(),
        "timings": timings,
        "best_us": {key: min(values) for key, values in timings.items()},
    }


def _baseline(best: Mapping[str, float]) -> str:
    return "no_middleware" if "no_middleware" in best else "bare"


def _rows(data: Mapping[str, Any]) -> list[list[str]]:
    best = data["best_us"]
    base = best[_baseline(best)]
    return [
        [
            f"`{key}`",
            f"{us:.1f}",
            f"{us - base:+.1f}",
            f"{best['full'] - us:+.1f}",
            " / ".join(f"{t:.1f}" for t in data["timings"][key]),
        ]
        for key, us in best.items()
    ]


HEADER = ["variant", "µs/req (best)", "vs none", "saves vs full", "each repeat"]


def render(data: Mapping[str, Any]) -> str:
    s = data["settings"]
    return "\n".join(
        [
            f"### In-process ASGI cost: GET {PATH} ({data['timestamp']}, {data['commit'][:12]})",
            "",
            res.markdown_table(HEADER, _rows(data)),
            "",
            f"{s['requests']} requests × {s['repeats']} repeats per variant, best repeat"
            + "".join(f", header '{h}'" for h in s["header"])
            + f", uvloop, one process per variant on CPU {SERVER_CPU}; access log to a file.",
        ]
    )


def table(results: Results) -> str:
    """The whole stack and the pieces, µs/req saved by removing each, one column per run."""
    stems = list(results)
    keys = [k for k in results[stems[0]]["best_us"] if k not in ("bare", "no_middleware")]
    rows = []
    for key in keys:
        cells = []
        for stem in stems:
            best = results[stem]["best_us"]
            base = best[_baseline(best)]
            if key not in best:
                cells.append("")
            elif key == "full":
                cells.append(f"{best['full'] - base:.1f} (whole stack)")
            else:
                cells.append(f"{best['full'] - best[key]:.1f}")
        rows.append([f"`{key}`", *cells])
    header = ["µs/req saved by removing", *(_client(results[s]) for s in stems)]
    sources = "; ".join(res.source_line(d, stem) for stem, d in results.items())
    return f"{res.markdown_table(header, rows)}\n\nFrom {sources}."


def _client(data: Mapping[str, Any]) -> str:
    sent = data["settings"].get("header") or []
    return ", ".join(f"`{h}`" for h in sent) or "no `Accept-Encoding`"


SCENARIO = Scenario(
    name=NAME,
    summary=first_line(__doc__),
    add_arguments=add_arguments,
    run=run,
    render=render,
    table=table,
)
