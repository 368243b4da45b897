"""A/B(/C...) measurements: alternate wrk runs over servers and targets, report medians.

Two shapes share one loop:

- several *targets* on one running server (e.g. `/health` and `/users/me`);
- several *variants*, each its own server (a uvicorn factory plus env), all started once
  and then measured in turn: `serve_variants` + `alternate`. A ladder is a list of variants;
  `per_request_us` and `step_deltas` turn the medians into µs per request and per step.

Each run: wait for other benchmarks and an idle machine, `warmup` seconds of the same
load, then the measured wrk run with the CPU split (and pg_stat_statements, given a
database). Any non-2xx reply stops the run (a figure from refused or failed requests
means nothing); socket errors are counted in the results.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.harness.base import BenchError, median, say
from bench.harness.noise import CpuSplit, cpu_split, settle
from bench.harness.pg import pgss_calls, pgss_reset, pgss_top, postmaster_pid
from bench.harness.proc import http_get
from bench.harness.server import Server, uvicorn_server
from bench.harness.wrk import Load, WrkResult, path_picker_lua, run_wrk
from keel.core.embedded import EmbeddedPostgres


@dataclass(frozen=True)
class LoadOptions:
    """wrk settings and waits, from the command line (see `add_load_args`)."""

    duration: float = 10.0
    connections: int = 64
    threads: int = 2
    rounds: int = 3
    warmup: float = 3.0
    headers: Mapping[str, str] = field(default_factory=dict)
    quiet_wait: float = 120.0
    other_wait: float = 600.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LoadOptions:
        return cls(
            duration=args.duration,
            connections=args.connections,
            threads=args.threads,
            rounds=args.rounds,
            warmup=args.warmup,
            headers=parse_headers(args.header),
            quiet_wait=args.quiet_wait,
            other_wait=args.other_wait,
        )


def add_load_args(
    parser: argparse.ArgumentParser, *, duration: float = 10.0, rounds: int = 3
) -> None:
    """The wrk/round options every closed-loop HTTP scenario takes."""
    group = parser.add_argument_group("load (wrk)")
    group.add_argument("--duration", type=float, default=duration, help="seconds per wrk run")
    group.add_argument("--connections", type=int, default=64)
    group.add_argument("--threads", type=int, default=2, help="wrk threads")
    group.add_argument("--rounds", type=int, default=rounds, help="alternations of all variants")
    group.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of the same load before each run"
    )
    group.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra request header, repeatable (e.g. 'Accept-Encoding: gzip', as browsers send)",
    )


def parse_headers(pairs: Sequence[str]) -> dict[str, str]:
    """['Name: value', ...] from the command line -> {'Name': 'value'}."""
    headers = {}
    for pair in pairs:
        name, sep, value = pair.partition(":")
        if not sep or not name.strip():
            raise SystemExit(f"--header wants 'Name: value', got {pair!r}")
        headers[name.strip()] = value.strip()
    return headers


# --- variants: one server each --------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One server to measure: a uvicorn factory (module:callable) and its own env on top."""

    key: str
    app: str
    env: Mapping[str, str] = field(default_factory=dict)
    # Checked on the first reply when not None: whether it must carry X-Request-ID
    # (Keel's request-context middleware), so a mislabelled variant fails loudly.
    has_request_id: bool | None = None


@contextlib.contextmanager
def serve_variants(
    variants: Sequence[Variant], base_env: Mapping[str, str], logs: Path
) -> Iterator[dict[str, Server]]:
    """Start every variant's server (one after the other, all pinned to the server core).

    Keel migrates the database on startup (KEEL_AUTO_MIGRATE); every variant after the
    first starts with KEEL_AUTO_MIGRATE=false. So put a Keel variant first, or migrate
    beforehand (`keel seed` does): the bare app reads Keel's tables but creates none.
    Idle servers cost nothing measurable, so they stay up and the runs alternate.
    """
    with contextlib.ExitStack() as stack:
        servers: dict[str, Server] = {}
        env = dict(base_env)
        for variant in variants:
            servers[variant.key] = stack.enter_context(
                uvicorn_server(
                    variant.key,
                    variant.app,
                    env={**env, **variant.env},
                    log_path=logs / f"{variant.key}.log",
                )
            )
            env.setdefault("KEEL_AUTO_MIGRATE", "false")
        yield servers


def check_reply(server: Server, path: str, headers: Mapping[str, str], variant: Variant) -> None:
    """Fail loudly unless path answers 200 and X-Request-ID presence matches the variant."""
    status, reply_headers, body = http_get(server.port, path, headers)
    if status != 200:
        raise BenchError(f"{variant.key}: GET {path} answered {status}: {body[:300]!r}")
    want = variant.has_request_id
    if want is not None and ("x-request-id" in reply_headers) != want:
        which = "with" if want else "without"
        raise BenchError(f"{variant.key}: expected a reply {which} X-Request-ID: {reply_headers}")


# --- alternating runs -----------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """One thing measured each round: a load on a server.

    `pg` names the database it reads when it is not `alternate`'s (two databases in one
    cluster, e.g. two versions of Keel): its pg_stat_statements are the ones counted.
    """

    key: str
    server: Server
    load: Load
    pg: EmbeddedPostgres | None = None


@dataclass
class Rounds:
    """Per key, one entry per round: wrk results, CPU splits, busiest SQL statements."""

    runs: dict[str, list[WrkResult]] = field(default_factory=dict)
    cpu: dict[str, list[CpuSplit]] = field(default_factory=dict)
    sql: dict[str, list[list[dict[str, Any]]]] = field(default_factory=dict)
    # Statements executed per request (pg_stat_statements calls ÷ wrk's requests): the
    # database round trips each request costs.
    statements_per_request: dict[str, list[float]] = field(default_factory=dict)
    others_seen: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "rounds": {k: [wrk_json(r) for r in v] for k, v in self.runs.items()},
            "cpu_rounds": {k: [asdict(c) for c in v] for k, v in self.cpu.items()},
            "statements_per_request": self.statements_per_request,
            "others_seen": sorted(set(self.others_seen)),
        }


def wrk_json(result: WrkResult) -> dict[str, Any]:
    return {**asdict(result), "errors": result.errors}


def alternate(
    measured: Sequence[Measured],
    options: LoadOptions,
    workdir: Path,
    *,
    pg: EmbeddedPostgres | None = None,
) -> Rounds:
    """Measure each entry in turn (A, B, C, A, B, C, ...) for options.rounds rounds."""
    scripts = {
        m.key: path_picker_lua(m.load.paths, workdir / f"{m.key}.lua")
        for m in measured
        if m.load.paths
    }
    out = Rounds()
    for m in measured:
        out.runs[m.key], out.cpu[m.key], out.sql[m.key] = [], [], []
        out.statements_per_request[m.key] = []
    postmaster = postmaster_pid(pg)
    for round_no in range(1, options.rounds + 1):
        for m in measured:
            headers = {**options.headers, **m.load.headers}
            url = m.server.url(m.load.path)
            script = scripts.get(m.key)
            out.others_seen += settle(options.quiet_wait, options.other_wait)
            if options.warmup > 0:
                run_wrk(
                    url,
                    duration=options.warmup,
                    connections=options.connections,
                    threads=1,
                    headers=headers,
                    script=script,
                )
            db = m.pg or pg
            if db is not None:
                pgss_reset(db)
            with cpu_split((m.server.pid,), postmaster) as cpu:
                result, raw = run_wrk(
                    url,
                    duration=options.duration,
                    connections=options.connections,
                    threads=options.threads,
                    headers=headers,
                    script=script,
                )
            split = cpu()
            if db is not None:
                out.sql[m.key].append(pgss_top(db))
                calls = pgss_calls(db)
                out.statements_per_request[m.key].append(calls / max(1, result.requests))
            if result.non_2xx:
                raise BenchError(f"{m.key}: {result.non_2xx} non-2xx replies\n{raw}")
            if result.socket_errors and any(result.socket_errors.values()):
                say(f"{m.key}: wrk reports socket errors {result.socket_errors}")
            result = replace(result, other_cpu_pct=split.other_pct)
            out.runs[m.key].append(result)
            out.cpu[m.key].append(split)
            say(
                f"round {round_no} {m.key:>24}: {result.requests_per_sec:>9,.0f} req/s"
                f"  p50 {result.latency_ms['50']:.2f} ms  p99 {result.latency_ms['99']:.2f} ms"
                f"  CPU server {split.server_pct:.0f}% pg {split.postgres_pct:.0f}%"
                f" other {split.other_pct:.0f}%"
            )
    return out


def summarise(rounds: Rounds) -> dict[str, dict[str, float]]:
    """Per key: median req/s, p50/p99 (ms), CPU split (%), and the total of errors."""
    medians: dict[str, dict[str, float]] = {}
    for key, results in rounds.runs.items():
        cpu = rounds.cpu.get(key, [])
        medians[key] = {
            "requests_per_sec": median([r.requests_per_sec for r in results]),
            "us_per_request": 1e6 / median([r.requests_per_sec for r in results]),
            "p50_ms": median([r.latency_ms["50"] for r in results]),
            "p99_ms": median([r.latency_ms["99"] for r in results]),
            "errors": float(sum(r.errors for r in results)),
            "other_cpu_pct": median([r.other_cpu_pct or 0.0 for r in results]),
            "server_cpu_pct": median([c.server_pct for c in cpu]) if cpu else 0.0,
            "postgres_cpu_pct": median([c.postgres_pct for c in cpu]) if cpu else 0.0,
        }
        statements = rounds.statements_per_request.get(key)
        if statements:
            medians[key]["statements_per_request"] = median(statements)
    return medians


def per_request_us(requests_per_sec: float) -> float:
    """µs of server time per request: with the server's core saturated, 1e6 / req/s."""
    return 1e6 / requests_per_sec if requests_per_sec > 0 else float("inf")


def step_deltas(
    keys: Sequence[str], medians: Mapping[str, Mapping[str, float]]
) -> list[dict[str, Any]]:
    """A ladder's rungs in order: each one's µs/req, what it adds over the previous rung,
    and its req/s as a ratio of the first rung's (the baseline)."""
    steps: list[dict[str, Any]] = []
    base = medians[keys[0]]["requests_per_sec"]
    previous: float | None = None
    for key in keys:
        rps = medians[key]["requests_per_sec"]
        us = per_request_us(rps)
        steps.append(
            {
                "key": key,
                "requests_per_sec": rps,
                "us_per_request": us,
                "step_us": None if previous is None else us - previous,
                "ratio_to_first": rps / base,
            }
        )
        previous = us
    return steps


def worst_other_cpu(medians: Mapping[str, Mapping[str, float]]) -> float:
    return max((m.get("other_cpu_pct", 0.0) for m in medians.values()), default=0.0)
