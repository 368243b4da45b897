"""Open-loop load: requests at a constant arrival rate, latency from the intended send time.

wrk is closed-loop: each connection sends its next request only when the previous answer
is in, so when the server stalls the load stalls with it, and the requests that *should*
have been sent meanwhile are never measured (coordinated omission). Here the schedule is
fixed in advance: request i is due at t0 + i / rate, whatever happened before. Arrivals are
dealt round-robin to `connections` keep-alive HTTP/1.1 connections (request i goes to
connection i mod N), as wrk2 does. A request that is due while its connection is still
busy goes out late, and its latency still counts from when it was due: the wait is part of
what a client would have seen.

Latency = reply complete - min(due, sent): a request sent up to EARLY_S before it is due
(the event loop's timers have millisecond resolution) is timed from when it was sent.
The generator's own lag (sent - due) is reported too: if it is large while the server is
idle, the generator was the bottleneck, not the server.

Runs in its own process pinned to the client core (`run_child`, target `...:generate`),
with uvloop and the garbage collector off during the run.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

EARLY_S = 0.001
WINDOW_S = 10.0
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass
class Tally:
    """What happened to the requests; latencies in seconds, in arrival order per kind."""

    latency: array[float] = field(default_factory=lambda: array("d"))
    service: array[float] = field(default_factory=lambda: array("d"))
    lag: array[float] = field(default_factory=lambda: array("d"))
    due: array[float] = field(default_factory=lambda: array("d"))  # of each answered request
    status: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_due: array[float] = field(default_factory=lambda: array("d"))


class _Connection:
    """One keep-alive HTTP/1.1 connection; reconnects after an error."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is not None and self.writer is not None:
            return self.reader, self.writer
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout
        )
        self.reader, self.writer = reader, writer
        return reader, writer

    async def request(self, raw: bytes) -> int:
        """Send one request, read the whole reply; its status."""
        reader, writer = await self.connect()
        writer.write(raw)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout)
        status = int(head[9:12])
        length = _content_length(head)
        if length:
            await asyncio.wait_for(reader.readexactly(length), self.timeout)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _content_length(head: bytes) -> int:
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        if b"\r\ntransfer-encoding:" in lower:
            raise ValueError("chunked replies are not supported")
        return 0
    end = lower.find(b"\r\n", at + 2)
    return int(lower[at + 17 : end])


async def _run_connection(
    index: int,
    conn: _Connection,
    spec: Mapping[str, Any],
    requests: Sequence[bytes],
    t0: float,
    tally: Tally,
) -> None:
    rate, count, n = float(spec["rate"]), int(spec["count"]), int(spec["connections"])
    deadline = t0 + count / rate + float(spec["drain"])
    try:
        for i in range(index, count, n):
            due = t0 + i / rate
            wait = due - time.perf_counter() - EARLY_S
            if wait > 0:
                await asyncio.sleep(wait)
            sent = time.perf_counter()
            if sent > deadline:  # still queued behind a stalled connection: never sent
                tally.errors["unsent"] += 1
                tally.error_due.append(due - t0)
                continue
            try:
                status = await conn.request(requests[i % len(requests)])
            except TimeoutError:
                tally.errors["timeout"] += 1
                tally.error_due.append(due - t0)
                conn.close()
                continue
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                tally.errors["connection"] += 1
                tally.error_due.append(due - t0)
                conn.close()
                continue
            done = time.perf_counter()
            tally.status[status] += 1
            tally.latency.append(done - min(due, sent))
            tally.service.append(done - sent)
            tally.lag.append(max(0.0, sent - due))
            tally.due.append(due - t0)
    finally:
        conn.close()


def _pcts(values: Sequence[float]) -> dict[str, float]:
    """Percentiles (ms) of seconds; nearest-rank on the sorted values."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {
        f"p{p:g}": ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] * 1e3
        for p in PERCENTILES
    }
    out["max"] = ordered[-1] * 1e3
    out["mean"] = sum(ordered) / len(ordered) * 1e3
    return out


def _windows(tally: Tally, duration: float) -> list[dict[str, Any]]:
    """Per WINDOW_S of the schedule: requests due then, their p50/p99 latency, errors."""
    slots = max(1, int(-(-duration // WINDOW_S)))
    per: list[list[float]] = [[] for _ in range(slots)]
    for due, latency in zip(tally.due, tally.latency, strict=True):
        per[min(slots - 1, int(due // WINDOW_S))].append(latency)
    errors = [0] * slots
    for due in tally.error_due:
        errors[min(slots - 1, int(due // WINDOW_S))] += 1
    out = []
    for k, latencies in enumerate(per):
        p = _pcts(latencies)
        out.append(
            {
                "start_s": k * WINDOW_S,
                "answered": len(latencies),
                "errors": errors[k],
                "p50_ms": p.get("p50", 0.0),
                "p99_ms": p.get("p99", 0.0),
                "max_ms": p.get("max", 0.0),
            }
        )
    return out


def build_requests(
    host: str, port: int, paths: Sequence[str], headers: Mapping[str, str], count: int, seed: int
) -> list[bytes]:
    """`count` raw GET requests, paths in a reproducible random order."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    raw = [f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode() for p in paths]
    rng = random.Random(seed)  # noqa: S311 - a load pattern, not a secret
    return [raw[rng.randrange(len(raw))] for _ in range(min(count, 100_000))]


async def _run(spec: Mapping[str, Any]) -> tuple[Tally, float, float]:
    count = int(spec["count"])
    requests = build_requests(
        spec["host"], int(spec["port"]), spec["paths"], spec["headers"], count, int(spec["seed"])
    )
    tally = Tally()
    conns = [
        _Connection(spec["host"], int(spec["port"]), float(spec["timeout"]))
        for _ in range(int(spec["connections"]))
    ]
    await asyncio.gather(*(conn.connect() for conn in conns))  # connected before t0
    t0 = time.perf_counter() + 0.1  # every connection task is ready before the first is due
    c0 = time.process_time()
    tasks = [
        asyncio.create_task(_run_connection(i, conn, spec, requests, t0, tally))
        for i, conn in enumerate(conns)
    ]
    await asyncio.gather(*tasks)
    return tally, time.perf_counter() - t0, time.process_time() - c0


def generate(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Run the open-loop load described by spec; the results (JSON-able).

    spec: host, port, paths, headers, rate (req/s), duration (s), connections, timeout (s
    per request), drain (s after the schedule ends for late requests), seed.
    """
    import uvloop

    duration = float(spec["duration"])
    count = max(1, round(float(spec["rate"]) * duration))
    gc.disable()
    try:
        tally, wall, cpu = uvloop.run(_run({**spec, "count": count}))
    finally:
        gc.enable()
    answered = sum(tally.status.values())
    non_2xx = sum(n for s, n in tally.status.items() if not 200 <= s < 300)
    server_errors = sum(n for s, n in tally.status.items() if s >= 500)
    return {
        "scheduled": count,
        "answered": answered,
        "rate": float(spec["rate"]),
        "achieved_rate": answered / duration,
        "wall_s": wall,
        "status": {str(k): v for k, v in sorted(tally.status.items())},
        "errors": dict(tally.errors),
        "error_count": sum(tally.errors.values()) + non_2xx,
        "non_2xx": non_2xx,
        "status_5xx": server_errors,
        "latency_ms": _pcts(tally.latency),
        "service_ms": _pcts(tally.service),
        "send_lag_ms": _pcts(tally.lag),
        "generator_cpu_pct": cpu / wall * 100 if wall > 0 else 0.0,
        "windows": _windows(tally, duration),
    }
