"""Identity: authenticated GET /api/v1/users/me vs GET /health, and login latency.

1. On ONE running full app, alternating wrk rounds of `GET /health` and `GET
   /api/v1/users/me` with `Authorization: Bearer`; headline: median req/s of /users/me ÷
   /health (target >= 0.6).
2. Sequential `POST /api/v1/auth/login` latencies (right password, wrong password, unknown
   user, interleaved) at the configured argon2id cost, and the raw in-process
   `PasswordHasher` hash/verify cost for reference.

The user signs up through the API. Production defaults, with the login limit raised as
well as the API-wide ones (the login series makes hundreds of attempts from one IP).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from bench.harness import load as ld
from bench.harness import results as res
from bench.harness.base import API, CLIENT_CPU, SERVER_CPU, BenchError, percentiles, say
from bench.harness.keel_api import LOGIN, bearer, login, signup
from bench.harness.noise import cpu_split, noise_warning, settle
from bench.harness.pg import embedded_cluster, postmaster_pid, psql
from bench.harness.proc import source_tree
from bench.harness.scenario import Results, Scenario, first_line
from bench.harness.server import (
    BENCH_API_LIMIT,
    add_server_args,
    new_secret,
    server_config,
    uvicorn_server,
)
from bench.harness.wrk import Load, require_wrk
from keel.core.embedded import EmbeddedPostgres

NAME = "identity"
TARGET_RATIO = 0.6
APP = "keel.app:create_app"
HEALTH = "/health"
ME = f"{API}/users/me"
USERNAME, PASSWORD = "bench.identity", "bench-identity-password"
LOGIN_KINDS = ("correct", "wrong_password", "unknown_user")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ld.add_load_args(parser)
    add_server_args(parser)
    parser.add_argument("--logins", type=int, default=50, help="logins of each kind")
    parser.add_argument("--hash-repeats", type=int, default=20, help="raw hasher calls")


# --- raw hashing cost -------------------------------------------------------------------


def hasher_cost(repeats: int) -> dict[str, Any]:
    """Time PasswordHasher in this process, pinned to the server's core like the server."""
    from keel.config import Settings
    from keel.core.passwords import PasswordHasher

    settings = Settings()
    hasher = PasswordHasher.from_settings(settings)
    params = {
        "memory_kib": settings.argon2_memory_kib,
        "time_cost": settings.argon2_time_cost,
        "parallelism": settings.argon2_parallelism,
    }
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if affinity is not None and (os.cpu_count() or 1) > SERVER_CPU:
        os.sched_setaffinity(0, {SERVER_CPU})
    try:
        hashed = hasher.hash_sync(PASSWORD)
        hash_ms = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            hasher.hash_sync(PASSWORD)
            hash_ms.append((time.perf_counter() - t0) * 1e3)

        async def verify_series(password: str) -> list[float]:
            out = []
            await hasher.verify(password, hashed)  # start the worker thread
            for _ in range(repeats):
                t0 = time.perf_counter()
                await hasher.verify(password, hashed)
                out.append((time.perf_counter() - t0) * 1e3)
            return out

        async def dummy_series() -> list[float]:
            out = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                await hasher.verify_dummy(PASSWORD)
                out.append((time.perf_counter() - t0) * 1e3)
            return out

        verify_ok = asyncio.run(verify_series(PASSWORD))
        verify_bad = asyncio.run(verify_series(PASSWORD + "x"))
        dummy = asyncio.run(dummy_series())
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
    return {
        "params": params,
        "hash_prefix": hashed.rsplit("$", 2)[0],
        "pinned_cpu": SERVER_CPU,
        "hash_ms": percentiles(hash_ms),
        "verify_correct_ms": percentiles(verify_ok),
        "verify_wrong_ms": percentiles(verify_bad),
        "verify_dummy_ms": percentiles(dummy),
    }


# --- over HTTP ----------------------------------------------------------------------------


def check_me(client: httpx.Client, token: str) -> None:
    reply = client.get(ME, headers=bearer(token))
    if reply.status_code != 200 or reply.json().get("username") != USERNAME:
        raise BenchError(f"GET {ME} answered {reply.status_code}: {reply.text[:300]}")
    if "x-request-id" not in reply.headers:
        raise BenchError(f"GET {ME}: no X-Request-ID, so not the full app: {reply.headers}")


def login_series(client: httpx.Client, count: int, warmup: int = 3) -> dict[str, list[float]]:
    """Sequential logins, the three kinds interleaved (rotating order); ms per kind."""
    forms = {
        "correct": {"username": USERNAME, "password": PASSWORD},
        "wrong_password": {"username": USERNAME, "password": PASSWORD + "-wrong"},
        "unknown_user": {"username": "nobody.here", "password": PASSWORD},
    }
    expected = {"correct": 200, "wrong_password": 401, "unknown_user": 401}
    times: dict[str, list[float]] = {k: [] for k in LOGIN_KINDS}
    for i in range(warmup + count):
        order = LOGIN_KINDS[i % 3 :] + LOGIN_KINDS[: i % 3]
        for kind in order:
            t0 = time.perf_counter()
            reply = client.post(LOGIN, data=forms[kind])
            elapsed = (time.perf_counter() - t0) * 1e3
            if reply.status_code != expected[kind]:
                raise BenchError(f"login {kind} answered {reply.status_code}: {reply.text[:200]}")
            if i >= warmup:
                times[kind].append(elapsed)
    return times


def floor_series(client: httpx.Client, token: str, count: int) -> dict[str, list[float]]:
    """Sequential GET /health and /users/me on the same connection: the no-hashing floor."""
    times: dict[str, list[float]] = {"health": [], "users_me": []}
    for i in range(count + 3):
        for key, path, headers in (("health", HEALTH, {}), ("users_me", ME, bearer(token))):
            t0 = time.perf_counter()
            reply = client.get(path, headers=headers)
            elapsed = (time.perf_counter() - t0) * 1e3
            if reply.status_code != 200:
                raise BenchError(f"GET {path} answered {reply.status_code}")
            if i >= 3:
                times[key].append(elapsed)
    return times


def stored_hash_params(pg: EmbeddedPostgres) -> str:
    """The argon2 parameters of the benchmark user's stored hash (not the hash itself)."""
    sql = f"SELECT hashed_password FROM app.users WHERE username = '{USERNAME}';"  # noqa: S608
    stored = psql(pg, sql)
    match = re.match(r"(\$argon2id?\$v=\d+\$m=\d+,t=\d+,p=\d+)\$", stored)
    return match[1] if match else "(not argon2: " + stored[:12] + ")"


def run(args: argparse.Namespace) -> dict[str, Any]:
    require_wrk()
    options = ld.LoadOptions.from_args(args)
    config = server_config(args, login_limit=BENCH_API_LIMIT)
    config.prepare()
    others = settle(args.quiet_wait, args.other_wait)
    say("timing PasswordHasher in-process ...")
    hasher = hasher_cost(args.hash_repeats)
    with (
        source_tree(args.ref) as src,
        embedded_cluster() as pg,
        tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp,
    ):
        env = config.env(database_url=pg.url, data_dir=tmp, secret=new_secret(), src=src)
        with uvicorn_server("full", APP, env=env, log_path=Path(tmp) / "full.log") as server:
            with httpx.Client(base_url=server.url(), timeout=30) as client:
                signup(client, USERNAME, PASSWORD, "Bench Identity")
                token = login(client, USERNAME, PASSWORD)
                check_me(client, token)
            measured = [
                ld.Measured("health", server, Load(HEALTH)),
                ld.Measured("users_me", server, Load(ME, headers=bearer(token))),
            ]
            rounds = ld.alternate(measured, options, Path(tmp), pg=pg)
            others += settle(args.quiet_wait, args.other_wait)
            with (
                httpx.Client(base_url=server.url(), timeout=30) as client,
                cpu_split((server.pid,), postmaster_pid(pg)) as login_cpu,
            ):
                logins = login_series(client, args.logins)
                floors = floor_series(client, token, args.logins)
            hash_params = stored_hash_params(pg)

    medians = ld.summarise(rounds)
    ratio = medians["users_me"]["requests_per_sec"] / medians["health"]["requests_per_sec"]
    return {
        "server": config.describe(),
        "settings": {
            "app": APP,
            "paths": {"health": HEALTH, "users_me": ME, "login": LOGIN},
            "wrk": f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency "
            f"-H 'Authorization: Bearer <token>' URL (pinned to CPU {CLIENT_CPU})",
        },
        **rounds.as_json(),
        "medians": medians,
        "ratio": ratio,
        "target": TARGET_RATIO,
        "pass": ratio >= TARGET_RATIO,
        "noisy": bool(noise_warning(ld.worst_other_cpu(medians))),
        "sql_users_me": rounds.sql["users_me"][-1],
        "sql_health": rounds.sql["health"][-1],
        "login": {kind: percentiles(times) for kind, times in logins.items()},
        "login_samples_ms": logins,
        "sequential_floor_ms": {k: percentiles(v) for k, v in floors.items()},
        "login_cpu": asdict(login_cpu()),
        "stored_hash_params": hash_params,
        "hasher": hasher,
        "others_seen": sorted(set(others + rounds.others_seen)),
    }


# --- report -------------------------------------------------------------------------------


def render(data: Mapping[str, Any]) -> str:
    med, s = data["medians"], data["settings"]
    rows = [
        [
            f"`GET {path}`",
            f"{med[key]['requests_per_sec']:,.0f}",
            " / ".join(f"{r['requests_per_sec']:,.0f}" for r in data["rounds"][key]),
            f"{1e6 / med[key]['requests_per_sec']:.0f}",
            f"{med[key]['p50_ms']:.2f}",
            f"{med[key]['p99_ms']:.2f}",
            f"{med[key]['server_cpu_pct']:.0f} / {med[key]['postgres_cpu_pct']:.0f}",
            f"{med[key]['other_cpu_pct']:.0f}",
        ]
        for key, path in (("health", HEALTH), ("users_me", ME))
    ]
    header = [
        "endpoint",
        "median req/s",
        "req/s per round",
        "µs/req",
        "p50 ms",
        "p99 ms",
        "CPU % server / postgres",
        "other CPU %",
    ]
    verdict = res.verdict(data["pass"]) + (" (noisy run, see below)" if data["noisy"] else "")
    lg = data["login"]
    login_rows = [
        [
            kind.replace("_", " "),
            f"{lg[kind]['p50']:.1f}",
            f"{lg[kind]['p95']:.1f}",
            f"{lg[kind]['p99']:.1f}",
            f"{lg[kind]['min']:.1f} – {lg[kind]['max']:.1f}",
            int(lg[kind]["n"]),
        ]
        for kind in LOGIN_KINDS
    ]
    raw = data["hasher"]
    raw_rows = [
        [name, f"{raw[key]['p50']:.1f}", f"{raw[key]['p95']:.1f}", int(raw[key]["n"])]
        for name, key in (
            ("`hash_sync`", "hash_ms"),
            ("`verify` (right password)", "verify_correct_ms"),
            ("`verify` (wrong password)", "verify_wrong_ms"),
            ("`verify_dummy`", "verify_dummy_ms"),
        )
    ]
    p = raw["params"]
    sql_lines = [
        f"- {q['calls']:,} calls, mean {q['mean_ms']:.3f} ms: `{q['query'][:140]}`"
        for q in data["sql_users_me"][:4]
    ]
    floor = data["sequential_floor_ms"]
    lines = [
        f"### Identity ({data['timestamp']}, {data['commit'][:12]})",
        "",
        f"#### `GET {ME}` vs `GET {HEALTH}` on the same server",
        "",
        res.markdown_table(header, rows),
        "",
        f"**users/me ÷ health = {data['ratio']:.3f}** (target ≥ {TARGET_RATIO}): {verdict}",
        "",
        f"One full app (`{APP}`), one uvicorn worker on CPU {SERVER_CPU}, wrk on CPU "
        f"{CLIENT_CPU}: `wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s "
        f"--latency [-H 'Authorization: Bearer …'] URL`, {s['rounds']} alternating rounds, "
        f"{s['warmup']}s warm-up before each run, medians. Server: {res.server_line(data)}. "
        "PostgreSQL (embedded, not pinned) CPU is reported apart from other CPU (noise).",
        "",
        "Busiest SQL during the last /users/me run (pg_stat_statements):",
        "",
        *sql_lines,
        "",
        f"#### Login latency (argon2id m={p['memory_kib']} KiB, t={p['time_cost']}, "
        f"p={p['parallelism']}; stored hash `{data['stored_hash_params']}`)",
        "",
        res.markdown_table(
            ["POST /api/v1/auth/login", "p50 ms", "p95 ms", "p99 ms", "min – max ms", "n"],
            login_rows,
        ),
        "",
        f"Sequential, one keep-alive httpx connection, the three kinds interleaved, "
        f"{s['logins']} each after 3 warm-up rounds; other CPU during the series "
        f"{data['login_cpu']['other_pct']:.0f}%. Floor on the same connection, no hashing: "
        f"`GET {HEALTH}` p50 {floor['health']['p50']:.2f} ms, "
        f"`GET {ME}` p50 {floor['users_me']['p50']:.2f} ms.",
        "",
        f"Raw `PasswordHasher` in-process (pinned to CPU {raw['pinned_cpu']}):",
        "",
        res.markdown_table(["call", "p50 ms", "p95 ms", "n"], raw_rows),
        "",
        noise_warning(max(m["other_cpu_pct"] for m in med.values())),
    ]
    if data["others_seen"]:
        lines.append(f"Other benchmarks were still running at some point: {data['others_seen']}")
    return "\n".join(lines).rstrip()


def table(results: Results) -> str:
    stem, data = next(iter(results.items()))
    med, lg, raw = data["medians"], data["login"], data["hasher"]
    p = raw["params"]
    rows = [
        [
            "`/users/me` ÷ `/health`",
            f"{med['users_me']['requests_per_sec']:,.0f} ÷ "
            f"{med['health']['requests_per_sec']:,.0f} req/s = **{data['ratio']:.3f}**",
            f"≥ {data['target']}: {res.verdict(data['pass'])}",
        ],
        [
            "login p50: right / wrong password / unknown user",
            f"**{lg['correct']['p50']:.1f} / {lg['wrong_password']['p50']:.1f} / "
            f"{lg['unknown_user']['p50']:.1f} ms** (p95 {lg['correct']['p95']:.1f} / "
            f"{lg['wrong_password']['p95']:.1f} / {lg['unknown_user']['p95']:.1f})",
            f"report; unknown ÷ wrong = "
            f"{lg['unknown_user']['p50'] / lg['wrong_password']['p50']:.2f}",
        ],
        [
            f"raw argon2id (m={p['memory_kib']} KiB, t={p['time_cost']}, p={p['parallelism']}) "
            "hash / verify, in-process",
            f"{raw['hash_ms']['p50']:.1f} / {raw['verify_correct_ms']['p50']:.1f} ms",
            "reference",
        ],
    ]
    note = res.source_note(data, stem)
    return f"{res.markdown_table(['figure', 'value', 'target'], rows)}\n\n{note}"


def headline(results: Results) -> list[list[str]]:
    data = next(iter(results.values()))
    lg = data["login"]
    return [
        [
            "`/users/me` ÷ `/health`",
            f"{data['ratio']:.2f}",
            f"≥ {data['target']} ({res.verdict(data['pass'])})",
        ],
        [
            "login latency p50: right password / wrong / unknown user",
            f"{lg['correct']['p50']:.0f} / {lg['wrong_password']['p50']:.0f} / "
            f"{lg['unknown_user']['p50']:.0f} ms",
            "report",
        ],
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
