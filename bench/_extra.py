"""Extras for benchmarks that keep ONE server up and hit several endpoints on it.

`_harness` starts a fresh uvicorn per measurement and drives it with a plain `wrk URL`.
The identity and posts benchmarks need a bit more, built here on top of it:

* `embedded_cluster`: the embedded PostgreSQL object itself (socket, pgdata, psql), not just
  its URL, for psql, pgbench and telling its processes apart from the rest of the machine;
* `wait_for_other_benchmarks`: wait (up to 10 min) until no other bench/ script or wrk runs;
* `run_wrk_script`: wrk with a Lua script, e.g. `path_picker_lua` (random path per request);
* `cpu_split`: CPU used during a run by the server, by PostgreSQL, and by everything else
  (only the last is noise: PostgreSQL's work is part of what a database endpoint costs);
* `run_rounds`: alternate several targets on the same running server, round after round;
* `run_pgbench` and `pg_stat_statements` helpers for SQL-level measurements.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import _harness as h
from keel.core.embedded import PORT, EmbeddedPostgres, bin_path

OTHER_BENCH_PATTERNS = ("bench/",)
OTHER_WAIT_S = 600.0
API = "/api/v1"


def add_extra_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--other-wait",
        type=float,
        default=OTHER_WAIT_S,
        help="before each run, wait up to this many seconds for other bench/ scripts and wrk",
    )


# --- other benchmarks -------------------------------------------------------------------


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return parents


def _own_family() -> set[int]:
    """This process, its ancestors (uv run) and its descendants (our servers, wrk, pgbench)."""
    parents = _parents()
    family = {os.getpid()}
    grew = True
    while grew:  # descendants first: an ancestor's other children are not ours
        kids = {p for p, pp in parents.items() if pp in family and p not in family}
        family |= kids
        grew = bool(kids)
    pid = os.getpid()
    while pid in parents and parents[pid] > 1:  # then the ancestors themselves, not pid 1
        pid = parents[pid]
        family.add(pid)
    return family


def other_benchmarks() -> list[str]:
    """`pgrep -af` lines of bench/ scripts and wrk processes that are not ours."""
    lines: list[str] = []
    for argv in (*(["pgrep", "-af", p] for p in OTHER_BENCH_PATTERNS), ["pgrep", "-a", "wrk"]):
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        lines += [line for line in out.splitlines() if line.strip()]
    family = _own_family()
    mine = {line for line in lines if int(line.split(maxsplit=1)[0]) in family}
    return sorted(set(lines) - mine)


def wait_for_other_benchmarks(max_wait: float) -> list[str]:
    """Wait up to max_wait s until no other benchmark runs; what still runs ([] if none)."""
    deadline = time.monotonic() + max_wait
    while True:
        others = other_benchmarks()
        if not others or time.monotonic() >= deadline:
            if others:
                print(
                    f"still running after {max_wait:.0f}s, going ahead: {others}", file=sys.stderr
                )
            return others
        print(f"other benchmark running, waiting: {others[0]}", file=sys.stderr)
        time.sleep(10.0)


def settle(args: argparse.Namespace) -> list[str]:
    """Before a measurement: no other benchmark (up to --other-wait), then an idle machine."""
    others = wait_for_other_benchmarks(args.other_wait)
    h.wait_for_quiet(args.quiet_wait)
    return others


# --- embedded PostgreSQL ------------------------------------------------------------------


@contextlib.contextmanager
def embedded_cluster() -> Iterator[EmbeddedPostgres]:
    """Like `_harness.embedded_postgres`, but yields the server object (its url is `.url`)."""
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        try:
            pg.ensure_running()
            yield pg
        finally:
            pg.stop()


def conn_args(pg: EmbeddedPostgres) -> list[str]:
    """libpq command-line options (psql, pgbench) for the embedded server's socket."""
    return ["-h", str(pg.socket_dir), "-p", str(PORT), "-U", "postgres"]


def psql(pg: EmbeddedPostgres, sql: str, *, pgoptions: str | None = None) -> str:
    """Run SQL (several statements allowed) with psql -XAtq; its output, tuples only."""
    env = {**os.environ, "PGOPTIONS": pgoptions} if pgoptions else None
    argv = [*pg.psql_argv(), "-XAtq", "-v", "ON_ERROR_STOP=1", "-f", "-"]
    proc = subprocess.run(argv, input=sql, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise h.BenchError(f"psql failed: {proc.stderr.strip()}\n--- SQL ---\n{sql[:2000]}")
    return proc.stdout.rstrip("\n")


def postmaster_pid(pg: EmbeddedPostgres) -> int | None:
    try:
        return int((pg.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def pgss_reset(pg: EmbeddedPostgres) -> None:
    psql(pg, "SELECT pg_stat_statements_reset();")


def pgss_top(pg: EmbeddedPostgres, limit: int = 6) -> list[dict[str, Any]]:
    """The statements that took the most time since the last reset (this database only)."""
    sql = f"""
        SELECT calls, round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 3),
               rows, shared_blks_hit + shared_blks_read,
               regexp_replace(left(query, 200), '\\s+', ' ', 'g')
        FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND query NOT ILIKE '%pg_stat_statements%'
        ORDER BY total_exec_time DESC LIMIT {int(limit)};
    """  # noqa: S608 - limit is an int
    rows = []
    for line in psql(pg, sql).splitlines():
        calls, total, mean, nrows, blocks, query = line.split("|", 5)
        rows.append(
            {
                "calls": int(calls),
                "total_ms": float(total),
                "mean_ms": float(mean),
                "rows": int(nrows),
                "shared_blocks": int(blocks),
                "query": query,
            }
        )
    return rows


# --- CPU accounting ---------------------------------------------------------------------


@dataclass(frozen=True)
class CpuSplit:
    """CPU used during a run, in % of one core."""

    server_pct: float
    postgres_pct: float
    other_pct: float


def _cpu_seconds() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU seconds of it and its reaped children)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[int, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out[int(stat.parent.name)] = (int(fields[1]), sum(int(v) for v in fields[11:15]) / tick)
    return out


@contextlib.contextmanager
def cpu_split(server_pid: int | None, pg: EmbeddedPostgres) -> Iterator[Callable[[], CpuSplit]]:
    """Split the CPU used during the block into server, PostgreSQL and other processes.

    This process and its reaped children (wrk, pgbench) count nowhere. PostgreSQL is its
    postmaster and the postmaster's children (backends; ended backends are in the
    postmaster's reaped-children time).
    """
    pm = postmaster_pid(pg)
    own = _own_family() - ({server_pid} if server_pid else set())
    t0, before = time.monotonic(), _cpu_seconds()
    result: list[CpuSplit] = []

    def get() -> CpuSplit:
        return result[0] if result else CpuSplit(0.0, 0.0, 0.0)

    yield get
    after, wall = _cpu_seconds(), time.monotonic() - t0
    buckets = {"server": 0.0, "postgres": 0.0, "other": 0.0}
    for pid, (ppid, seconds) in after.items():
        used = seconds - before.get(pid, (0, 0.0))[1]
        if pid == server_pid:
            buckets["server"] += used
        elif pm is not None and (pid == pm or ppid == pm):
            buckets["postgres"] += used
        elif pid not in own:
            buckets["other"] += used
    pct = {k: max(0.0, v / wall * 100) for k, v in buckets.items()} if wall > 0 else buckets
    result.append(CpuSplit(pct["server"], pct["postgres"], pct["other"]))


# --- wrk with Lua -----------------------------------------------------------------------


def path_picker_lua(paths: Sequence[str], dest: Path, seed: int = 1) -> Path:
    """Write a wrk script sending GET to a random one of `paths` per request (-H headers kept).

    Requests are formatted once per thread in init(); each thread has its own seed.
    """
    if not paths:
        raise ValueError("no paths")
    items = ",\n".join(f'  "{p}"' for p in paths if '"' not in p and "\\" not in p)
    dest.write_text(
        f"""-- generated by bench/_extra.py
local paths = {{
{items}
}}
local counter = 0
local reqs = {{}}

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

function init(args)
  math.randomseed({int(seed)} * 1000 + (tid or 0))
  for i, p in ipairs(paths) do
    reqs[i] = wrk.format(nil, p)
  end
end

function request()
  return reqs[math.random(#reqs)]
end
"""
    )
    return dest


def run_wrk_script(
    url: str,
    *,
    duration: int,
    connections: int,
    threads: int,
    headers: Mapping[str, str] | None = None,
    script: Path | None = None,
) -> tuple[h.WrkResult, str]:
    """`_harness.run_wrk` plus an optional Lua script (-s)."""
    argv = [h.require_wrk(), f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    if script is not None:
        argv += ["-s", str(script)]
    proc = subprocess.run(
        h.pinned(h.CLIENT_CPU, [*argv, url]),
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
    )
    if proc.returncode != 0:
        raise h.BenchError(f"wrk failed (exit {proc.returncode}): {proc.stderr or proc.stdout}")
    result = h.parse_wrk(proc.stdout)
    if not {"50", "99"} <= result.latency_ms.keys():  # e.g. trailing blanks after a value
        pcts = {
            m[1]: h.parse_duration_ms(m[2])
            for m in re.finditer(r"^\s+(\d+)%\s+(\S+)\s*$", proc.stdout, re.MULTILINE)
        }
        result = replace(result, latency_ms=pcts)
    if not {"50", "99"} <= result.latency_ms.keys():
        raise h.BenchError(f"wrk output without the 50%/99% latency lines:\n{proc.stdout}")
    return result, proc.stdout


@dataclass(frozen=True)
class Target:
    """One thing to load on the running server: a path, or a random pick among paths."""

    key: str
    path: str  # what the report shows; also what is requested when `paths` is empty
    paths: tuple[str, ...] = ()
    auth: bool = True


@dataclass
class Rounds:
    """Per target: wrk results, CPU splits and top SQL statements, one per round."""

    runs: dict[str, list[h.WrkResult]] = field(default_factory=dict)
    cpu: dict[str, list[CpuSplit]] = field(default_factory=dict)
    sql: dict[str, list[list[dict[str, Any]]]] = field(default_factory=dict)
    others_seen: list[str] = field(default_factory=list)


def run_rounds(
    server: h.Server,
    pg: EmbeddedPostgres,
    targets: Sequence[Target],
    auth_headers: Mapping[str, str],
    args: argparse.Namespace,
    workdir: Path,
) -> Rounds:
    """Alternate targets (A, B, C, A, B, C, ...) for args.rounds rounds on one server.

    Before each run: other benchmarks gone, machine quiet, args.warmup s of the same load.
    pg_stat_statements is reset before and read after each measured run.
    """
    extra = h.parse_headers(args.header)
    scripts = {
        t.key: path_picker_lua(t.paths, workdir / f"{t.key}.lua") for t in targets if t.paths
    }
    out = Rounds({t.key: [] for t in targets}, {t.key: [] for t in targets})
    out.sql = {t.key: [] for t in targets}
    for round_no in range(1, args.rounds + 1):
        for t in targets:
            headers = {**extra, **(auth_headers if t.auth else {})}
            out.others_seen += settle(args)
            load: dict[str, Any] = {
                "connections": args.connections,
                "headers": headers,
                "script": scripts.get(t.key),
            }
            if args.warmup > 0:
                run_wrk_script(server.url(t.path), duration=args.warmup, threads=1, **load)
            pgss_reset(pg)
            with cpu_split(server.proc.pid, pg) as cpu:
                result, raw = run_wrk_script(
                    server.url(t.path), duration=args.duration, threads=args.threads, **load
                )
            split = cpu()
            out.sql[t.key].append(pgss_top(pg))
            if result.non_2xx:
                raise h.BenchError(f"{t.key}: {result.non_2xx} non-2xx replies\n{raw}")
            result = replace(result, other_cpu_pct=split.other_pct)
            out.runs[t.key].append(result)
            out.cpu[t.key].append(split)
            print(
                f"round {round_no} {t.key:>18}: {result.requests_per_sec:>9,.0f} req/s"
                f"  p50 {result.latency_ms['50']:.2f} ms  p99 {result.latency_ms['99']:.2f} ms"
                f"  CPU server {split.server_pct:.0f}% pg {split.postgres_pct:.0f}%"
                f" other {split.other_pct:.0f}%",
                file=sys.stderr,
            )
    out.others_seen = sorted(set(out.others_seen))
    return out


def summarise(rounds: Rounds) -> dict[str, dict[str, float]]:
    """`_harness.summarise` plus median server and PostgreSQL CPU % per target."""
    medians: dict[str, dict[str, float]] = h.summarise(rounds.runs)
    for key, splits in rounds.cpu.items():
        medians[key]["server_cpu_pct"] = h.median([s.server_pct for s in splits])
        medians[key]["postgres_cpu_pct"] = h.median([s.postgres_pct for s in splits])
    return medians


def server_env(url: str, data_dir: str, src: Path | None, secret: str) -> dict[str, str]:
    """The harness's server environment, plus what multi-request benchmarks need.

    RATE_LIMIT_ENABLED=false: wrk would hit the per-user / per-IP / login limits at once.
    ACCESS_TOKEN_MINUTES=120: one token lasts the whole run. SECRET_KEY: fixed for the
    run, so tokens and cursors stay valid across servers and can be decoded here.
    """
    env = {
        "DATABASE_URL": url,
        "ENVIRONMENT": "testing",
        "LOG_JSON": "true",
        "KEEL_DATA_DIR": data_dir,
        "RATE_LIMIT_ENABLED": "false",
        "WORKER_ENABLED": "false",  # background embedding would skew the figures
        "ACCESS_TOKEN_MINUTES": "120",
        "SECRET_KEY": secret,
    }
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


# --- pgbench ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PgbenchResult:
    tps: float
    transactions: int
    failed: int
    latency_avg_ms: float
    # script file name -> {"transactions", "tps", "latency_avg_ms"}
    per_script: dict[str, dict[str, float]]
    cpu: CpuSplit | None = None


def parse_pgbench(output: str) -> PgbenchResult:
    def num(pattern: str, text: str = output) -> float:
        match = re.search(pattern, text, re.MULTILINE)
        if match is None:
            raise h.BenchError(f"pgbench output lacks /{pattern}/:\n{output}")
        return float(match[1])

    per_script: dict[str, dict[str, float]] = {}
    blocks = re.split(r"^SQL script \d+: ", output, flags=re.MULTILINE)[1:]
    for block in blocks:
        name = Path(block.split("\n", 1)[0].strip()).name
        stats = {
            "transactions": num(r"^ - (\d+) transactions", block),
            "tps": num(r"tps = ([0-9.]+)\)", block),
        }
        lat = re.search(r"^ - latency average = ([0-9.]+) ms", block, re.MULTILINE)
        if lat is not None:
            stats["latency_avg_ms"] = float(lat[1])
        per_script[name] = stats
    failed = re.search(r"^number of failed transactions: (\d+)", output, re.MULTILINE)
    return PgbenchResult(
        tps=num(r"^tps = ([0-9.]+)"),
        transactions=int(num(r"^number of transactions actually processed: (\d+)")),
        failed=int(failed[1]) if failed else 0,
        latency_avg_ms=num(r"^latency average = ([0-9.]+) ms"),
        per_script=per_script,
    )


def pgbench_argv(
    pg: EmbeddedPostgres, scripts: Sequence[Path], *, duration: int, clients: int, threads: int
) -> list[str]:
    argv = [str(bin_path("pgbench")), *conn_args(pg), "-n", "-T", str(duration)]
    argv += ["-c", str(clients), "-j", str(threads)]
    for script in scripts:
        argv += ["-f", f"{script}@1"]
    return [*argv, pg.database]


def run_pgbench(
    pg: EmbeddedPostgres,
    scripts: Sequence[Path],
    *,
    duration: int,
    clients: int,
    threads: int,
    pgoptions: str | None = None,
) -> tuple[PgbenchResult, str]:
    """pgbench -n -T duration -c clients -j threads -f s1@1 -f s2@1 ...; parsed, and raw output.

    With several scripts, each transaction runs one of them picked at random (equal weights).
    """
    env = {**os.environ, "PGOPTIONS": pgoptions} if pgoptions else None
    argv = pgbench_argv(pg, scripts, duration=duration, clients=clients, threads=threads)
    with cpu_split(None, pg) as cpu:
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=duration + 120, check=False
        )
    if proc.returncode != 0:
        raise h.BenchError(f"pgbench failed (exit {proc.returncode}): {proc.stderr}{proc.stdout}")
    result = parse_pgbench(proc.stdout)
    if result.failed:
        raise h.BenchError(f"pgbench: {result.failed} failed transactions\n{proc.stdout}")
    return replace(result, cpu=cpu()), proc.stdout
