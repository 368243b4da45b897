"""Paths, cores, the error type and small helpers every part of the harness uses."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
API = "/api/v1"

# On the 2-core box: the server under test on one core, the load generator on the other.
SERVER_CPU, CLIENT_CPU = 0, 1


class BenchError(RuntimeError):
    """A benchmark could not run or a server misbehaved; the message says why."""


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def say(message: str) -> None:
    """Progress for the person running the benchmark (stderr: stdout carries the report)."""
    print(message, file=sys.stderr, flush=True)


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """n, p50/p95/p99, min, max and mean of samples; inclusive quantiles (p99 of 50 ~ max)."""
    if len(samples) < 2:
        only = float(samples[0]) if samples else 0.0
        keys = ("p50", "p95", "p99", "min", "max", "mean")
        return {"n": float(len(samples)), **dict.fromkeys(keys, only)}
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
