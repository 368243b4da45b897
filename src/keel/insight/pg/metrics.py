"""Database figures for /metrics, collected when Prometheus scrapes.

Scrape-time, not a background loop: no scraper, no queries. One round trip under a short
statement_timeout and an overall deadline, cached for a few seconds so scrapes arriving
together (or every worker scraped at once) cost one query. Whatever goes wrong, the
scrape still answers: `keel_db_insight_up` drops to 0 and the last figures stay.
Gauges use the `mostrecent` multiprocess mode: every worker measures the same database.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import anyio.from_thread
import structlog
from prometheus_client import Gauge
from starlette.requests import Request

from keel.config import Settings
from keel.core.db import Database
from keel.insight.pg import repository, sql

log = structlog.get_logger(__name__)


def _gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
    return Gauge(f"keel_db_{name}", doc, labels, multiprocess_mode="mostrecent")


CONNECTIONS = _gauge("connections", "Client connections to Keel's database, by state.", ("state",))
LONGEST_TRANSACTION = _gauge(
    "longest_transaction_seconds", "Age of the oldest open transaction (other than this one)."
)
BLOCKED = _gauge("blocked_backends", "Backends waiting on another's lock.")
XID_AGE = _gauge("xid_age", "Transaction-ID age of the database (wraparound at 2^31).")
MXID_AGE = _gauge("mxid_age", "Multixact-ID age of the database.")
DEADLOCKS = _gauge("deadlocks", "Deadlocks detected since the statistics reset (cumulative).")
TEMP_BYTES = _gauge("temp_bytes", "Bytes written to temporary files since the reset.")
CACHE_HIT = _gauge("cache_hit_ratio", "Shared-buffer hit ratio since the statistics reset.")
REPLICA_LAG_SECONDS = _gauge(
    "replication_lag_seconds", "Replay lag of each streaming replica.", ("replica",)
)
REPLICA_LAG_BYTES = _gauge(
    "replication_lag_bytes", "WAL not yet replayed by each streaming replica.", ("replica",)
)
UP = _gauge("insight_up", "1 if the last collection of these figures succeeded.")
COLLECT_SECONDS = _gauge("insight_collect_seconds", "Time the last collection took.")


class DbMetrics:
    """Collects the figures at most once per `cache_seconds`, within `timeout_ms`."""

    def __init__(self, settings: Settings) -> None:
        self.cache_seconds = settings.insight_metrics_cache_seconds
        self.timeout_ms = settings.insight_metrics_timeout_ms
        self.collected_at = float("-inf")
        self.lock = asyncio.Lock()
        self.lock_loop: asyncio.AbstractEventLoop | None = None
        self.pending: set[asyncio.Future[None]] = set()

    def _lock(self) -> asyncio.Lock:
        # One per event loop: an app may be served by several loops in turn (tests).
        loop = asyncio.get_running_loop()
        if self.lock_loop is not loop:
            self.lock, self.lock_loop = asyncio.Lock(), loop
        return self.lock

    async def refresh(self, database: Database | None) -> None:
        if database is None or time.monotonic() - self.collected_at < self.cache_seconds:
            return
        async with self._lock():
            if time.monotonic() - self.collected_at < self.cache_seconds:
                return  # another scrape collected while this one waited
            started = time.perf_counter()
            try:
                figures = await asyncio.wait_for(
                    self._collect(database), timeout=self.timeout_ms / 1000
                )
                publish(figures)
            except Exception as exc:  # never fail the scrape
                UP.set(0)
                log.warning("insight.metrics_failed", error=type(exc).__name__)
            else:
                UP.set(1)
            finally:
                # Failures are cached too: a down database is not asked again every scrape.
                self.collected_at = time.monotonic()
                COLLECT_SECONDS.set(time.perf_counter() - started)

    async def _collect(self, database: Database) -> dict[str, Any]:
        async with database.sessionmaker() as session, session.begin():
            await repository.guard(session, timeout_ms=self.timeout_ms)
            return await repository.one(session, sql.METRICS)

    def hook(self, request: Request) -> None:
        """For the /metrics endpoint: refresh on the event loop before the text is made.

        The endpoint runs in a worker thread (it is sync), which waits for the refresh. Were
        it ever called on the loop itself, it can't wait: the refresh then serves the next
        scrape.
        """
        database = getattr(request.app.state, "db", None)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            anyio.from_thread.run(self.refresh, database)
            return
        task = asyncio.ensure_future(self.refresh(database))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)


def _decoded(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def publish(figures: dict[str, Any]) -> None:
    CONNECTIONS.clear()
    for state, count in _decoded(figures["connections"]).items():
        CONNECTIONS.labels(state).set(count)
    LONGEST_TRANSACTION.set(figures["longest_transaction_seconds"])
    BLOCKED.set(figures["blocked"])
    XID_AGE.set(figures["xid_age"])
    MXID_AGE.set(figures["mxid_age"])
    DEADLOCKS.set(figures["deadlocks"])
    TEMP_BYTES.set(figures["temp_bytes"])
    total = figures["blocks_hit"] + figures["blocks_read"]
    CACHE_HIT.set(figures["blocks_hit"] / total if total else 1.0)
    REPLICA_LAG_SECONDS.clear()
    REPLICA_LAG_BYTES.clear()
    for replica in _decoded(figures["replicas"]):
        REPLICA_LAG_SECONDS.labels(replica["name"]).set(float(replica["seconds"]))
        REPLICA_LAG_BYTES.labels(replica["name"]).set(float(replica["bytes"]))
