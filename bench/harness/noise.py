"""Noise on a shared box: whose CPU is whose during a run, waiting for quiet, other benchmarks.

The box has 2 cores and other people's test suites run on it. Every measurement splits the
CPU used meanwhile into the server under test, PostgreSQL (postmaster and backends), the
client side (this process and its children: wrk, psql, pgbench, child processes) and
"other": the machine's busy time (/proc/stat) minus those three. Only "other" is noise.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.harness.base import say

NOISY_OTHER_CPU_PCT = 10.0
# Processes that are a benchmark: `python -m bench ...` (not `bench.something`, which are
# our own children) and the old `bench/<script>.py` layout.
_BENCH_PROCESS = r"-m bench( |$)|bench/[a-z_]+\.py"


@dataclass(frozen=True)
class ProcCpu:
    ppid: int
    own: float  # CPU seconds of the process itself
    reaped: float  # CPU seconds of its children that it has waited for


def process_table() -> dict[int, ProcCpu]:
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, ProcCpu] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        own, reaped = int(f[11]) + int(f[12]), int(f[13]) + int(f[14])
        out[int(stat.parent.name)] = ProcCpu(int(f[1]), own / tick, reaped / tick)
    return out


def busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (0.0 without /proc)."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return 0.0
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def own_family() -> set[int]:
    """This process, its chain of ancestors (not pid 1) and its own descendants.

    Not the ancestors' other descendants: through pid 1 that would be every process on the
    box, and nothing would ever count as noise.
    """
    parents = {pid: p.ppid for pid, p in process_table().items()}
    family = {os.getpid()}
    pid = os.getpid()
    while parents.get(pid, 0) > 1:
        pid = parents[pid]
        family.add(pid)
    mine = {os.getpid()}
    while kids := {p for p, pp in parents.items() if pp in mine and p not in mine}:
        mine |= kids
    return family | mine


@dataclass(frozen=True)
class CpuSplit:
    """CPU used during a block, in % of one core."""

    server_pct: float
    postgres_pct: float
    client_pct: float
    other_pct: float


@contextlib.contextmanager
def cpu_split(
    server_pids: Collection[int] = (), postmaster: int | None = None
) -> Iterator[Callable[[], CpuSplit]]:
    """Split the CPU used during the block; the callable gives the split once it has run.

    `server_pids` are the servers under test (their CPU is the measured cost), `postmaster`
    the PostgreSQL server (it and its children). Our own family is the client side.
    """
    t0, busy0, before = time.monotonic(), busy_seconds(), process_table()
    result: list[CpuSplit] = []
    yield lambda: result[0] if result else CpuSplit(0.0, 0.0, 0.0, 0.0)
    wall = time.monotonic() - t0
    if postmaster is not None:
        # A backend whose client just left may still be exiting: once the postmaster has
        # reaped it, its CPU is in the postmaster's children time; mid-way it is nobody's.
        time.sleep(0.25)
    after, busy1 = process_table(), busy_seconds()
    window = time.monotonic() - t0
    own = own_family() - set(server_pids)
    used = {"server": 0.0, "postgres": 0.0, "client": 0.0}
    for pid, now in after.items():
        was = before.get(pid, ProcCpu(0, 0.0, 0.0))
        delta = now.own - was.own + now.reaped - was.reaped
        if pid in server_pids:
            used["server"] += delta
        elif postmaster is not None and postmaster in (pid, now.ppid):
            used["postgres"] += delta
        elif pid in own:
            used["client"] += delta
    if wall <= 0:
        result.append(CpuSplit(0.0, 0.0, 0.0, 0.0))
        return
    pct = {k: max(0.0, v / wall * 100) for k, v in used.items()}
    other = max(0.0, (busy1 - busy0 - sum(used.values())) / window * 100)
    result.append(CpuSplit(pct["server"], pct["postgres"], pct["client"], other))


def wait_for_quiet(max_wait: float, threshold_pct: float = NOISY_OTHER_CPU_PCT) -> float:
    """Wait (up to max_wait s) until the machine is idle for a second; the last busy %."""
    deadline = time.monotonic() + max_wait
    while True:
        before, t0 = busy_seconds(), time.monotonic()
        time.sleep(1.0)
        busy = (busy_seconds() - before) / (time.monotonic() - t0) * 100
        if busy < threshold_pct or time.monotonic() >= deadline:
            return busy
        say(f"machine busy ({busy:.0f}% of a core in use); waiting to start")
        time.sleep(4.0)


def other_benchmarks() -> list[str]:
    """`pgrep -a` lines of benchmarks and wrk processes that are not ours."""
    lines: list[str] = []
    for argv in (["pgrep", "-af", _BENCH_PROCESS], ["pgrep", "-a", "wrk"]):
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        lines += [line for line in out.splitlines() if line.strip()]
    family = own_family()
    return sorted({line for line in lines if int(line.split(maxsplit=1)[0]) not in family})


def settle(quiet_wait: float, other_wait: float) -> list[str]:
    """Before a measurement: no other benchmark (up to other_wait s), then an idle machine.

    Returns the other benchmarks still running when it gave up waiting (usually none).
    """
    deadline = time.monotonic() + other_wait
    while (others := other_benchmarks()) and time.monotonic() < deadline:
        say(f"other benchmark running, waiting: {others[0][:120]}")
        time.sleep(10.0)
    if others:
        say(f"still running after {other_wait:.0f}s, going ahead: {others}")
    wait_for_quiet(quiet_wait)
    return others


def noise_warning(worst_other_pct: float) -> str:
    """A Markdown warning if other processes took noticeable CPU during the runs, else ""."""
    if worst_other_pct < NOISY_OTHER_CPU_PCT:
        return ""
    return (
        f"**Warning: other processes used up to {worst_other_pct:.0f}% of a core during the "
        "runs, so the figures may be skewed: check that the per-round numbers agree, or re-run "
        "on a quiet machine.**"
    )
