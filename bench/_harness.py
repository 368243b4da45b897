"""Shared benchmark plumbing: embedded PostgreSQL, uvicorn servers, wrk runs and reports.

Every HTTP benchmark under bench/ follows the same shape: one embedded PostgreSQL for the
run, real uvicorn processes pinned to one core, wrk pinned to the other, and results
written to bench/results/ as JSON plus a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
SERVER_CPU, CLIENT_CPU = 0, 1

_COUNT_UNITS = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9}
_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
_SOCKET_ERRORS = r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"


class BenchError(RuntimeError):
    """A benchmark could not run or a server misbehaved; the message says why."""


# --- wrk output parsing -------------------------------------------------------------------


def parse_count(text: str) -> float:
    """wrk's scaled counts: '850', '1.23k', '2.00M'."""
    match = re.fullmatch(_NUMBER + r"([kMG]?)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk count: {text!r}")
    return float(match[1]) * _COUNT_UNITS[match[2]]


def parse_duration_ms(text: str) -> float:
    """wrk's durations in milliseconds: '850.00us', '2.1ms', '1.00s', '1.00m'."""
    match = re.fullmatch(_NUMBER + r"(us|ms|s|m|h)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * _TIME_UNITS_MS[match[2]]


@dataclass(frozen=True)
class WrkResult:
    """One wrk run, latencies in milliseconds."""

    requests_per_sec: float
    requests: int
    latency_avg_ms: float
    latency_ms: dict[str, float]  # percentile ("50", "75", "90", "99") -> ms
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    # CPU other processes used during the run, in % of one core (noise on a shared box).
    other_cpu_pct: float | None = None

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


def parse_wrk(output: str) -> WrkResult:
    """Parse `wrk --latency` output."""

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise BenchError(f"wrk output lacks /{pattern}/:\n{output}")
        return match

    rps = float(find(r"^Requests/sec:\s+" + _NUMBER)[1])
    total = int(find(r"^\s*(\d+) requests in ")[1])
    avg = parse_duration_ms(find(r"^\s*Latency\s+(\S+)")[1])
    pcts = {
        m[1]: parse_duration_ms(m[2])
        for m in re.finditer(r"^\s+(\d+)%\s+(\S+)$", output, re.MULTILINE)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock = re.search(_SOCKET_ERRORS, output)
    socket_errors = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()), strict=True))
        if sock
        else {}
    )
    return WrkResult(rps, total, avg, pcts, int(non_2xx[1]) if non_2xx else 0, socket_errors)


# --- processes ----------------------------------------------------------------------------


def require_wrk() -> str:
    """Path of wrk, or exit with how to install it."""
    path = shutil.which("wrk")
    if path is None:
        sys.exit("wrk is not installed. Install it with:  apt-get install -y wrk")
    return path


def pinned(cpu: int, argv: Sequence[str]) -> list[str]:
    """argv run on one core via taskset, when taskset exists and the core does."""
    taskset = shutil.which("taskset")
    if taskset is None or cpu >= (os.cpu_count() or 1):
        return list(argv)
    return [taskset, "-c", str(cpu), *argv]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(
    port: int, path: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """One GET to 127.0.0.1:port; header names lower-cased."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _log_tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


@dataclass
class Server:
    """A running uvicorn process."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def uvicorn_argv(app: str, port: int, *, factory: bool = True) -> list[str]:
    """uvicorn as production runs it: one worker, uvloop, httptools, no access log."""
    argv = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", "1", "--loop", "uvloop", "--http", "httptools"]
    argv += ["--no-access-log", "--no-server-header", "--log-level", "warning"]
    return [*argv, "--factory"] if factory else argv


@contextlib.contextmanager
def uvicorn_server(
    name: str,
    app: str,
    *,
    env: Mapping[str, str],
    log_path: Path,
    ready_path: str = "/health",
    startup_timeout: float = 60.0,
) -> Iterator[Server]:
    """Start uvicorn on a free port pinned to SERVER_CPU, wait for ready_path to answer 200."""
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # env's PYTHONPATH (a source snapshot, see source_tree) wins over the editable install.
    paths = [env.get("PYTHONPATH"), str(REPO_ROOT), os.environ.get("PYTHONPATH")]
    pythonpath = os.pathsep.join(filter(None, paths))
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            pinned(SERVER_CPU, uvicorn_argv(app, port)),
            cwd=REPO_ROOT,
            env={**os.environ, **env, "PYTHONPATH": pythonpath},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(name, port, proc, log_path)
    try:
        _wait_ready(server, ready_path, startup_timeout)
        yield server
    finally:
        stop_server(server)


def _wait_ready(server: Server, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(
                f"{server.name}: uvicorn exited with {server.proc.returncode} during startup\n"
                f"--- tail of {server.log_path} ---\n{_log_tail(server.log_path)}"
            )
        try:
            status, _, _ = http_get(server.port, path, timeout=2.0)
        except OSError as exc:
            last = str(exc)
        else:
            if status == 200:
                return
            last = f"HTTP {status}"
        time.sleep(0.2)
    raise BenchError(
        f"{server.name}: {path} not ready after {timeout}s ({last})\n"
        f"--- tail of {server.log_path} ---\n{_log_tail(server.log_path)}"
    )


def stop_server(server: Server, grace: float = 15.0) -> None:
    """SIGTERM uvicorn's process group, SIGKILL it if it lingers."""
    if server.proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGTERM)
    try:
        server.proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()


def run_wrk(
    url: str,
    *,
    duration: int,
    connections: int,
    threads: int,
    headers: Mapping[str, str] | None = None,
) -> tuple[WrkResult, str]:
    """Run wrk --latency pinned to CLIENT_CPU; the parsed result and wrk's raw output."""
    argv = [require_wrk(), f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    proc = subprocess.run(
        pinned(CLIENT_CPU, [*argv, url]),
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(f"wrk failed (exit {proc.returncode}): {proc.stderr or proc.stdout}")
    return parse_wrk(proc.stdout), proc.stdout


def warm_up(
    server: Server,
    path: str,
    seconds: int,
    connections: int,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Load the server briefly so imports, caches and pools are warm before measuring."""
    if seconds > 0:
        url = server.url(path)
        run_wrk(url, duration=seconds, connections=connections, threads=1, headers=headers)


# --- noise ------------------------------------------------------------------------------


def _busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (0.0 without /proc)."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return 0.0
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _others_seconds(exclude: set[int]) -> dict[int, float]:
    """CPU seconds (own + reaped children) of every process but those in exclude, by pid."""
    seconds: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        pid = int(stat.parent.name)
        if pid in exclude:
            continue
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        seconds[pid] = sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return seconds


@contextlib.contextmanager
def cpu_meter(server_pid: int) -> Iterator[Callable[[], float | None]]:
    """Measure CPU used by other processes than the server and this one (with wrk, its child).

    Yields a callable giving that, in % of one core, once the block has run (None without
    /proc). Processes that start and exit inside the block count only once their parent
    reaps them; that is close enough to flag a noisy run.
    """
    exclude = {server_pid, os.getpid()}
    t0, before = time.monotonic(), _others_seconds(exclude)
    result: list[float] = []
    yield lambda: result[0] if result else None
    after, wall = _others_seconds(exclude), time.monotonic() - t0
    if before and wall > 0:
        used = sum(sec - before.get(pid, 0.0) for pid, sec in after.items())
        result.append(max(0.0, used / wall * 100))


NOISY_OTHER_CPU_PCT = 10.0


def wait_for_quiet(max_wait: float, threshold_pct: float = NOISY_OTHER_CPU_PCT) -> float:
    """Wait (up to max_wait s) until the machine is idle for a second; return the last busy %."""
    deadline = time.monotonic() + max_wait
    while True:
        before, t0 = _busy_seconds(), time.monotonic()
        time.sleep(1.0)
        busy = (_busy_seconds() - before) / (time.monotonic() - t0) * 100
        if busy < threshold_pct or time.monotonic() >= deadline:
            return busy
        print(f"machine busy ({busy:.0f}% of a core in use); waiting to start", file=sys.stderr)
        time.sleep(4.0)


def noise_warning(medians: Mapping[str, Mapping[str, float]]) -> str:
    """A Markdown warning if other processes took noticeable CPU during the runs, else ""."""
    worst = max(m["other_cpu_pct"] for m in medians.values())
    if worst < NOISY_OTHER_CPU_PCT:
        return ""
    return (
        f"**Warning: other processes used up to {worst:.0f}% of a core during the runs, so the "
        "figures may be skewed: check that the per-round numbers agree, or re-run on a quiet "
        "machine.**"
    )


# --- database -----------------------------------------------------------------------------


@contextlib.contextmanager
def embedded_postgres() -> Iterator[str]:
    """One throwaway embedded PostgreSQL for the whole run; yields its DATABASE_URL."""
    from keel.core.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        try:
            yield pg.ensure_running()
        finally:
            pg.stop()


# --- alternating A/B runs ---------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One app to measure: a uvicorn factory (module:callable)."""

    key: str
    app: str
    has_request_id: bool = True  # whether replies must carry X-Request-ID


def add_load_args(parser: argparse.ArgumentParser) -> None:
    """The wrk/round options every HTTP benchmark takes."""
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of all variants")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load before measuring")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra request header, repeatable (e.g. 'Accept-Encoding: gzip', as browsers send)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="before each run, wait up to this many seconds for other processes to go idle",
    )
    parser.add_argument(
        "--ref",
        default=None,
        help="serve src/ as committed at this git ref (e.g. HEAD) instead of the working tree",
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


def check_reply(
    server: Server, variant: Variant, path: str, request_headers: Mapping[str, str]
) -> None:
    """Fail loudly unless path answers 200 and X-Request-ID presence matches the variant."""
    status, headers, body = http_get(server.port, path, request_headers)
    if status != 200:
        raise BenchError(f"{variant.key}: GET {path} answered {status}: {body[:200]!r}")
    if ("x-request-id" in headers) != variant.has_request_id:
        want = "with" if variant.has_request_id else "without"
        raise BenchError(f"{variant.key}: expected a reply {want} X-Request-ID, got {headers}")


def measure(
    variant: Variant, path: str, env: Mapping[str, str], log_path: Path, args: argparse.Namespace
) -> WrkResult:
    """Start the variant, check it, warm it up, run wrk once, stop it."""
    headers = parse_headers(args.header)
    with uvicorn_server(variant.key, variant.app, env=env, log_path=log_path) as server:
        check_reply(server, variant, path, headers)
        warm_up(server, path, args.warmup, args.connections, headers)
        with cpu_meter(server.proc.pid) as other_cpu:
            result, raw = run_wrk(
                server.url(path),
                duration=args.duration,
                connections=args.connections,
                threads=args.threads,
                headers=headers,
            )
        result = replace(result, other_cpu_pct=other_cpu())
    if result.non_2xx:
        raise BenchError(f"{variant.key}: {result.non_2xx} non-2xx replies\n{raw}")
    return result


def run_alternating(
    variants: Sequence[Variant], path: str, args: argparse.Namespace
) -> dict[str, list[WrkResult]]:
    """Measure variants in turn (A,B,A,B,...) for args.rounds rounds on one embedded PostgreSQL.

    Servers get ENVIRONMENT=testing and LOG_JSON=true, and log to a file, as in production.
    """
    runs: dict[str, list[WrkResult]] = {v.key: [] for v in variants}
    with (
        source_tree(args.ref) as src,
        embedded_postgres() as url,
        tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp,
    ):
        # No job worker: embedding seeded posts in the background would skew every figure.
        env = {"DATABASE_URL": url, "ENVIRONMENT": "testing", "LOG_JSON": "true"}
        env["WORKER_ENABLED"] = "false"
        env["KEEL_DATA_DIR"] = tmp
        if src is not None:
            env["PYTHONPATH"] = str(src)
        for round_no in range(1, args.rounds + 1):
            for variant in variants:
                log_path = Path(tmp) / f"{variant.key}-{round_no}.log"
                wait_for_quiet(args.quiet_wait)
                result = measure(variant, path, env, log_path, args)
                env["KEEL_AUTO_MIGRATE"] = "false"  # the first server migrated the database
                runs[variant.key].append(result)
                print(
                    f"round {round_no} {variant.key:>24}: {result.requests_per_sec:>9,.0f} req/s"
                    f"  p50 {result.latency_ms['50']:.2f} ms  p99 {result.latency_ms['99']:.2f} ms"
                    f"  other CPU {result.other_cpu_pct or 0:.0f}%",
                    file=sys.stderr,
                )
    return runs


def summarise(runs: Mapping[str, Sequence[WrkResult]]) -> dict[str, dict[str, float]]:
    """Per variant: median req/s, median p50/p99 (ms) and total socket errors."""
    return {
        key: {
            "requests_per_sec": median([r.requests_per_sec for r in results]),
            "p50_ms": median([r.latency_ms["50"] for r in results]),
            "p99_ms": median([r.latency_ms["99"] for r in results]),
            "errors": float(sum(r.errors for r in results)),
            "other_cpu_pct": median([r.other_cpu_pct or 0.0 for r in results]),
        }
        for key, results in runs.items()
    }


# --- reporting ----------------------------------------------------------------------------


@contextlib.contextmanager
def source_tree(ref: str | None) -> Iterator[Path | None]:
    """None for the working tree, else a temp copy of src/ as committed at ref."""
    if ref is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="keel-src-") as tmp:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", ref, "src"], cwd=REPO_ROOT, capture_output=True
        )
        if archive.returncode != 0:
            raise BenchError(f"git archive {ref} failed: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        yield Path(tmp) / "src"


def git_commit(ref: str | None = None) -> str:
    """The commit served: ref's, or HEAD's plus "-dirty" if src/ or bench/apps.py differ."""
    proc = subprocess.run(
        ["git", "rev-parse", f"{ref or 'HEAD'}^{{commit}}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    commit = proc.stdout.strip() or "unknown"
    if ref is not None:
        return commit
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "src", "bench/apps.py"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{commit}-dirty" if dirty else commit


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def results_name(base: str, headers: Sequence[str]) -> str:
    """base, or base plus a slug of the extra request headers so runs don't overwrite it."""
    slug = re.sub(r"[^a-z0-9]+", "-", " ".join(headers).lower()).strip("-")
    return f"{base}__{slug}" if slug else base


def write_results(name: str, data: Mapping[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write bench/results/<name>.json and .md; return both paths."""
    RESULTS_DIR.mkdir(exist_ok=True)
    json_path, md_path = RESULTS_DIR / f"{name}.json", RESULTS_DIR / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path


def _jsonable(value: object) -> object:
    if isinstance(value, WrkResult):
        return {**asdict(value), "errors": value.errors}
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
