"""Middleware cost in-process: µs per GET /health calling the ASGI app directly, no network.

    uv run python bench/asgi_inprocess.py [--requests 20000] [--repeats 5] [--only a,b]

Much less noisy than wrk (best of --repeats timed loops, one process per variant pinned to
one core), so it resolves the small pieces the HTTP breakdown cannot. It leaves out
uvicorn, httptools and the kernel, so its absolute µs are lower than the HTTP figures.
Variants are those of middleware_breakdown.py. Writes bench/results/asgi_inprocess.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness as h
from middleware_breakdown import VARIANTS

NAME = "asgi_inprocess"
PATH = "/health"


async def _time_requests(
    app: Any, requests: int, repeats: int, extra_headers: dict[str, str]
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
        raise h.BenchError(f"GET {PATH} answered {sorted(set(replies))}")
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(requests):
            await one()
        timings.append((time.perf_counter() - start) / requests * 1e6)
    return timings


def child(app_spec: str, args: argparse.Namespace) -> None:
    """Build one variant and time it; write the per-repeat µs/req to args.out."""
    import uvloop

    module, factory = app_spec.split(":")
    app = getattr(importlib.import_module(module), factory)()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    headers = h.parse_headers(args.header)
    timings = asyncio.run(_time_requests(app, args.requests, args.repeats, headers))
    args.out.write_text(json.dumps(timings))


def run_variant(
    app_spec: str, args: argparse.Namespace, src: Path | None, tmp: Path
) -> list[float]:
    out, log = tmp / "result.json", tmp / f"{app_spec.replace(':', '-')}.log"
    paths = [str(src) if src else None, str(h.REPO_ROOT), os.environ.get("PYTHONPATH")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, paths)),
        "ENVIRONMENT": "testing",
        "LOG_JSON": "true",
        "DATABASE_URL": "postgresql://bench@/unused",  # the lifespan never runs here
        "KEEL_DATA_DIR": str(tmp),
    }
    argv = [sys.executable, __file__, "--child", app_spec, "--out", str(out)]
    argv += ["--requests", str(args.requests), "--repeats", str(args.repeats)]
    argv += [f"--header={header}" for header in args.header]
    with log.open("wb") as sink:  # the access log goes here, as to a file in production
        proc = subprocess.run(
            h.pinned(h.SERVER_CPU, argv), env=env, cwd=h.REPO_ROOT, stdout=sink, stderr=sink
        )
    if proc.returncode != 0:
        raise h.BenchError(f"{app_spec} failed:\n{log.read_text(errors='replace')[-3000:]}")
    timings: list[float] = json.loads(out.read_text())
    return timings


def render(data: dict[str, Any]) -> str:
    best = data["best_us"]
    rows = [
        [
            f"`{key}`",
            f"{us:.1f}",
            f"{us - best['bare']:+.1f}",
            f"{best['full'] - us:+.1f}",
            " / ".join(f"{t:.1f}" for t in data["timings"][key]),
        ]
        for key, us in best.items()
    ]
    header = ["variant", "µs/req (best)", "vs bare", "saves vs full", "each repeat"]
    s = data["settings"]
    return "\n".join(
        [
            f"### In-process ASGI cost: GET {PATH} ({data['timestamp']}, {data['commit'][:12]})",
            "",
            h.markdown_table(header, rows),
            "",
            f"{s['requests']} requests × {s['repeats']} repeats per variant, best repeat"
            + "".join(f", header '{header}'" for header in s["header"])
            + f", uvloop, one process per variant on CPU {h.SERVER_CPU}; access log to a file.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated variant keys to run")
    parser.add_argument(
        "--header", action="append", default=[], help="extra request header 'Name: value'"
    )
    parser.add_argument("--ref", default=None, help="time src/ as committed at this git ref")
    parser.add_argument(
        "--quiet-wait", type=float, default=120.0, help="max s to wait for an idle machine"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args)
        return 0
    wanted = {"full", "bare", *args.only.split(",")} if args.only else None
    variants = [v for v in VARIANTS if wanted is None or v.key in wanted]
    timings: dict[str, list[float]] = {}
    with h.source_tree(args.ref) as src, tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        for variant in variants:
            h.wait_for_quiet(args.quiet_wait)
            timings[variant.key] = run_variant(variant.app, args, src, Path(tmp))
            print(f"{variant.key:>30}: {min(timings[variant.key]):6.1f} µs/req", file=sys.stderr)
    data: dict[str, Any] = {
        "benchmark": NAME,
        "timestamp": h.now_iso(),
        "commit": h.git_commit(args.ref),
        "settings": {k: v for k, v in vars(args).items() if k not in ("child", "out")},
        "timings": timings,
        "best_us": {key: min(values) for key, values in timings.items()},
    }
    markdown = render(data)
    h.write_results(h.results_name(NAME, args.header), data, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
