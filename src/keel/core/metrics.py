"""Prometheus metrics, correct across several worker processes (multiprocess mode).

Multiprocess mode is on when PROMETHEUS_MULTIPROC_DIR is set before this module is
imported; `keel serve --workers N` does that.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response

from keel.core.db import PoolStatus
from keel.core.errors import Unauthorized

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LABELS = ("method", "route", "status")

http_requests = Counter("keel_http_requests", "HTTP requests served.", LABELS)
http_latency = Histogram(
    "keel_http_request_duration_seconds",
    "HTTP request latency, from first byte in to last byte out.",
    LABELS,
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
_pool_gauges = {
    field: Gauge(
        f"keel_db_pool_{field}",
        f"Database connection pool: {field.replace('_', ' ')}.",
        multiprocess_mode="livesum",
    )
    for field in PoolStatus.__dataclass_fields__
}


# Label children cached per (method, route, status): `.labels()` costs µs per call.
_request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """Record one served request under its route template (never the raw path)."""
    key = (method, route, status)
    children = _request_children.get(key)
    if children is None:
        labels = (method, route, str(status))
        children = (http_requests.labels(*labels), http_latency.labels(*labels))
        _request_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def record_pool_status(status: PoolStatus) -> None:
    for field, gauge in _pool_gauges.items():
        gauge.set(getattr(status, field))


def mark_worker_exit() -> None:
    """Drop this process's live gauges from the shared multiprocess files."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def metrics_endpoint(request: Request) -> Response:
    """Serve the Prometheus text format, aggregating all workers when needed."""
    db = getattr(request.app.state, "db", None)
    if db is not None:
        record_pool_status(db.pool_status())
    for hook in getattr(request.app.state, "metrics_hooks", ()):
        hook(request)  # e.g. database figures collected at scrape time (keel.insight.pg)
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def guarded_endpoint(token: str | None, *, required: bool) -> Callable[[Request], Response]:
    """`metrics_endpoint`, open or behind `Authorization: Bearer <token>`.

    With a token, callers must present it (compared in constant time). Without one,
    `required` (production) keeps the endpoint closed: every request gets the 401.
    """
    if token is None and not required:
        return metrics_endpoint
    expected = token.encode() if token is not None else None

    def guarded(request: Request) -> Response:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if (
            expected is None
            or scheme.lower() != "bearer"
            or not hmac.compare_digest(given.strip().encode(), expected)
        ):
            raise Unauthorized("/metrics needs the METRICS_TOKEN bearer token.")
        return metrics_endpoint(request)

    return guarded
