"""Identity: authenticated GET /api/v1/users/me vs GET /health, and login latency.

    uv run python bench/identity.py [--duration 10] [--connections 64] [--threads 2]
                                    [--rounds 3] [--logins 50] [--hash-repeats 20]

1. On ONE running full app (one uvicorn worker, as the harness serves it), alternating
   wrk rounds of `GET /health` and `GET /api/v1/users/me` with `Authorization: Bearer`;
   headline: median req/s of /users/me ÷ /health (target >= 0.6).
2. Sequential `POST /api/v1/auth/login` latencies (right password, wrong password, unknown
   user, interleaved) at the configured argon2id cost, and the raw in-process
   `PasswordHasher` hash/verify cost for reference.

The server runs with RATE_LIMIT_ENABLED=false (wrk and the login series would otherwise
hit the per-user, per-IP and login limits) and ACCESS_TOKEN_MINUTES=120.
Results go to bench/results/identity.{json,md}; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

import _extra as x
import _harness as h
from keel.config import Settings
from keel.core.passwords import PasswordHasher

NAME = "identity"
TARGET_RATIO = 0.6
APP = "keel.app:create_app"
HEALTH = "/health"
ME = f"{x.API}/users/me"
LOGIN = f"{x.API}/auth/login"
SIGNUP = f"{x.API}/auth/signup"
USERNAME, PASSWORD = "bench.identity", "bench-identity-password"
LOGIN_KINDS = ("correct", "wrong_password", "unknown_user")


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/min/max/mean of samples (ms); inclusive quantiles (p99 of 50 ~ max)."""
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "n": float(len(samples)),
        "p50": statistics.median(samples),
        "p95": cuts[94],
        "p99": cuts[98],
        "min": min(samples),
        "max": max(samples),
        "mean": statistics.fmean(samples),
    }


# --- raw hashing cost -------------------------------------------------------------------


def hasher_cost(repeats: int) -> dict[str, Any]:
    """Time PasswordHasher in this process, pinned to the server's core like the server."""
    settings = Settings()
    hasher = PasswordHasher.from_settings(settings)
    params = {
        "memory_kib": settings.argon2_memory_kib,
        "time_cost": settings.argon2_time_cost,
        "parallelism": settings.argon2_parallelism,
    }
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if affinity is not None and (os.cpu_count() or 1) > h.SERVER_CPU:
        os.sched_setaffinity(0, {h.SERVER_CPU})
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
        "pinned_cpu": h.SERVER_CPU,
        "hash_ms": percentiles(hash_ms),
        "verify_correct_ms": percentiles(verify_ok),
        "verify_wrong_ms": percentiles(verify_bad),
        "verify_dummy_ms": percentiles(dummy),
    }


# --- API helpers --------------------------------------------------------------------------


def signup_and_login(client: httpx.Client) -> str:
    """Create the benchmark user through the API and sign in; the access token."""
    reply = client.post(
        SIGNUP,
        json={
            "email": f"{USERNAME}@example.com",
            "username": USERNAME,
            "password": PASSWORD,
            "full_name": "Bench Identity",
        },
    )
    if reply.status_code != 201:
        raise h.BenchError(f"signup answered {reply.status_code}: {reply.text[:300]}")
    return login_token(client, USERNAME, PASSWORD)


def login_token(client: httpx.Client, username: str, password: str) -> str:
    reply = client.post(LOGIN, data={"username": username, "password": password})
    if reply.status_code != 200:
        raise h.BenchError(f"login answered {reply.status_code}: {reply.text[:300]}")
    token: str = reply.json()["access_token"]
    return token


def check_me(client: httpx.Client, token: str) -> None:
    reply = client.get(ME, headers={"Authorization": f"Bearer {token}"})
    if reply.status_code != 200 or reply.json().get("username") != USERNAME:
        raise h.BenchError(f"GET {ME} answered {reply.status_code}: {reply.text[:300]}")
    if "x-request-id" not in reply.headers:
        raise h.BenchError(f"GET {ME}: no X-Request-ID, so not the full app: {reply.headers}")
    health = client.get(HEALTH)
    if health.status_code != 200 or "x-request-id" not in health.headers:
        raise h.BenchError(f"GET {HEALTH} answered {health.status_code}: {health.headers}")


def login_series(client: httpx.Client, count: int, warmup: int = 3) -> dict[str, list[float]]:
    """Sequential logins, the three kinds interleaved (rotating order); ms per kind."""
    forms = {
        "correct": {"username": USERNAME, "password": PASSWORD},
        "wrong_password": {"username": USERNAME, "password": PASSWORD + "-wrong"},
        "unknown_user": {"username": "nobody.here", "password": PASSWORD},
    }
    expect = {"correct": 200, "wrong_password": 401, "unknown_user": 401}
    times: dict[str, list[float]] = {k: [] for k in LOGIN_KINDS}
    for i in range(warmup + count):
        order = LOGIN_KINDS[i % 3 :] + LOGIN_KINDS[: i % 3]
        for kind in order:
            t0 = time.perf_counter()
            reply = client.post(LOGIN, data=forms[kind])
            elapsed = (time.perf_counter() - t0) * 1e3
            if reply.status_code != expect[kind]:
                raise h.BenchError(f"login {kind} answered {reply.status_code}: {reply.text[:200]}")
            if i >= warmup:
                times[kind].append(elapsed)
    return times


def floor_series(client: httpx.Client, token: str, count: int) -> dict[str, list[float]]:
    """Sequential GET /health and /users/me on the same connection: the no-hashing floor."""
    auth = {"Authorization": f"Bearer {token}"}
    times: dict[str, list[float]] = {"health": [], "users_me": []}
    for i in range(count + 3):
        for key, path, headers in (("health", HEALTH, {}), ("users_me", ME, auth)):
            t0 = time.perf_counter()
            reply = client.get(path, headers=headers)
            elapsed = (time.perf_counter() - t0) * 1e3
            if reply.status_code != 200:
                raise h.BenchError(f"GET {path} answered {reply.status_code}")
            if i >= 3:
                times[key].append(elapsed)
    return times


def stored_hash_params(pg: Any) -> str:
    """The argon2 parameters of the benchmark user's stored hash (not the hash itself)."""
    sql = f"SELECT hashed_password FROM app.users WHERE username = '{USERNAME}';"  # noqa: S608
    stored = x.psql(pg, sql)
    match = re.match(r"(\$argon2id?\$v=\d+\$m=\d+,t=\d+,p=\d+)\$", stored)
    return match[1] if match else "(not argon2: " + stored[:12] + ")"


# --- report -------------------------------------------------------------------------------


def render(data: dict[str, Any]) -> str:
    med = data["medians"]
    s = data["settings"]
    rows = [
        [
            f"`GET {path}`",
            f"{med[key]['requests_per_sec']:,.0f}",
            " / ".join(f"{r.requests_per_sec:,.0f}" for r in data["rounds"][key]),
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
    verdict = "PASS" if data["pass"] else "FAIL"
    if data["noisy"]:
        verdict += " (noisy run, see below)"
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
    lines = [
        f"### Identity ({data['timestamp']}, {data['commit'][:12]})",
        "",
        f"#### `GET {ME}` vs `GET {HEALTH}` on the same server",
        "",
        h.markdown_table(header, rows),
        "",
        f"**users/me ÷ health = {data['ratio']:.3f}** (target ≥ {TARGET_RATIO}): {verdict}",
        "",
        f"One full app (`{APP}`), one uvicorn worker on CPU {h.SERVER_CPU}, wrk on CPU "
        f"{h.CLIENT_CPU}: `wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s "
        f"--latency [-H 'Authorization: Bearer …'] URL`, {s['rounds']} alternating rounds, "
        f"{s['warmup']}s warm-up before each run, medians. Server env: "
        "`RATE_LIMIT_ENABLED=false` (otherwise the per-user/IP limits throttle wrk), "
        "`ACCESS_TOKEN_MINUTES=120`, `ENVIRONMENT=testing`, `LOG_JSON=true`. PostgreSQL "
        "(embedded, not pinned) CPU is reported apart from other CPU (noise).",
        "",
        "Busiest SQL during the last /users/me run (pg_stat_statements):",
        "",
        *sql_lines,
        "",
        f"#### Login latency (argon2id m={p['memory_kib']} KiB, t={p['time_cost']}, "
        f"p={p['parallelism']}; stored hash `{data['stored_hash_params']}`)",
        "",
        h.markdown_table(
            ["POST /api/v1/auth/login", "p50 ms", "p95 ms", "p99 ms", "min – max ms", "n"],
            login_rows,
        ),
        "",
        "Medians side by side: right password "
        f"**{lg['correct']['p50']:.1f} ms**, wrong password "
        f"**{lg['wrong_password']['p50']:.1f} ms**, unknown user "
        f"**{lg['unknown_user']['p50']:.1f} ms** (unknown ÷ wrong = "
        f"{lg['unknown_user']['p50'] / lg['wrong_password']['p50']:.2f}).",
        "",
        f"Sequential, one keep-alive httpx connection, the three kinds interleaved, "
        f"{s['logins']} each after 3 warm-up rounds; other CPU during the series "
        f"{data['login_cpu']['other_pct']:.0f}%. Floor on the same connection, no hashing: "
        f"`GET {HEALTH}` p50 {data['sequential_floor_ms']['health']['p50']:.2f} ms, "
        f"`GET {ME}` p50 {data['sequential_floor_ms']['users_me']['p50']:.2f} ms.",
        "",
        f"Raw `PasswordHasher` in-process (pinned to CPU {raw['pinned_cpu']}):",
        "",
        h.markdown_table(["call", "p50 ms", "p95 ms", "n"], raw_rows),
        "",
        h.noise_warning(med),
    ]
    if data["others_seen"]:
        lines.append(f"Other benchmarks were still running at some point: {data['others_seen']}")
    return "\n".join(lines).rstrip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    h.add_load_args(parser)
    x.add_extra_args(parser)
    parser.add_argument("--logins", type=int, default=50, help="logins of each kind")
    parser.add_argument("--hash-repeats", type=int, default=20, help="raw hasher calls")
    args = parser.parse_args(argv)
    h.require_wrk()

    others = x.settle(args)
    commit = h.git_commit(args.ref)  # now: src may be committed to while this runs
    print("timing PasswordHasher in-process ...", file=sys.stderr)
    hasher = hasher_cost(args.hash_repeats)
    targets = (
        x.Target("health", HEALTH, auth=False),
        x.Target("users_me", ME),
    )
    with (
        h.source_tree(args.ref) as src,
        x.embedded_cluster() as pg,
        tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp,
    ):
        env = x.server_env(pg.url, tmp, src, secrets.token_urlsafe(48))
        log_path = Path(tmp) / "full.log"
        with h.uvicorn_server("full", APP, env=env, log_path=log_path) as server:
            with httpx.Client(base_url=server.url(""), timeout=30) as client:
                token = signup_and_login(client)
                check_me(client, token)
            auth = {"Authorization": f"Bearer {token}"}
            rounds = x.run_rounds(server, pg, targets, auth, args, Path(tmp))
            others += x.settle(args)
            with (
                httpx.Client(base_url=server.url(""), timeout=30) as client,
                x.cpu_split(server.proc.pid, pg) as login_cpu,
            ):
                logins = login_series(client, args.logins)
                floors = floor_series(client, token, args.logins)
            hash_params = stored_hash_params(pg)

    medians = x.summarise(rounds)
    ratio = medians["users_me"]["requests_per_sec"] / medians["health"]["requests_per_sec"]
    login = {kind: percentiles(times) for kind, times in logins.items()}
    data: dict[str, Any] = {
        "benchmark": NAME,
        "timestamp": h.now_iso(),
        "commit": commit,
        "settings": {
            **vars(args),
            "app": APP,
            "paths": {"health": HEALTH, "users_me": ME, "login": LOGIN},
            "server_env": {k: v for k, v in env.items() if k not in ("SECRET_KEY", "PYTHONPATH")},
            "wrk": f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency "
            "-H 'Authorization: Bearer <token>' URL (pinned to CPU 1)",
        },
        "rounds": rounds.runs,
        "cpu_rounds": {k: [asdict(c) for c in v] for k, v in rounds.cpu.items()},
        "medians": medians,
        "ratio": ratio,
        "target": TARGET_RATIO,
        "pass": ratio >= TARGET_RATIO,
        "noisy": bool(h.noise_warning(medians)),
        "sql_users_me": rounds.sql["users_me"][-1],
        "sql_health": rounds.sql["health"][-1],
        "login": login,
        "login_samples_ms": logins,
        "sequential_floor_ms": {k: percentiles(v) for k, v in floors.items()},
        "login_cpu": asdict(login_cpu()),
        "stored_hash_params": hash_params,
        "hasher": hasher,
        "others_seen": sorted(set(others + rounds.others_seen)),
    }
    markdown = render(data)
    h.write_results(h.results_name(NAME, args.header), data, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
