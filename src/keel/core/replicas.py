"""Read routing to streaming replicas, with read-your-writes across workers.

Which reads may go to a replica: the reads of a safe-method request (GET, HEAD), both
`ReadPool`'s hot reads and the autocommit ORM session `SessionDep` gives those requests.
Writes, reads inside write requests, `TransactionDep` reads and reads outside requests
(workers, CLI) go to the primary.

Which replica: a healthy one whose replay lag is at most `REPLICA_MAX_LAG_MS`, in turn.
Every worker checks each replica every `REPLICA_CHECK_INTERVAL_MS` (one query) and the
primary's WAL position; the lag is the age of the newest primary position the replica
has replayed. A replica whose WAL replay is paused, that isn't in recovery (promoted), or
that fails a check or a read is out of rotation until a later check passes; a read that
fails on a replica is answered from the primary.

Read-your-writes: a write request that commits gets the primary's WAL position after its
commit (its LSN) as the `Keel-LSN` response header and a `keel_lsn` cookie. A later
request that carries it (cookie, or the header) reads from a replica only once that
replica has replayed past the LSN, otherwise from the primary. The token travels with
the client, so it holds across worker processes and servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any, Final, NoReturn

import asyncpg
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.config import Settings
from keel.core.embedded import EmbeddedPostgres
from keel.core.errors import DISCONNECT_ERRORS
from keel.core.server_checks import describe_url

log = structlog.get_logger(__name__)

LSN_HEADER: Final = "keel-lsn"
LSN_COOKIE: Final = "keel_lsn"
_SAFE_METHODS: Final = frozenset({"GET", "HEAD"})
READ_FAILURE_HOLD_S: Final = 5.0
_CHECK_SQL: Final = """SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(),
    pg_is_in_recovery() AND pg_is_wal_replay_paused()"""


def parse_lsn(text: str | None) -> int | None:
    """`16/B374D848` -> an int; None for anything else."""
    if not text or len(text) > 17:
        return None
    high, sep, low = text.partition("/")
    try:
        return (int(high, 16) << 32) + int(low, 16) if sep else None
    except ValueError:
        return None


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@dataclass(slots=True)
class ReadContext:
    """What the current request allows reads to use; set by `ReadRoutingMiddleware`."""

    primary_only: bool
    min_lsn: int | None = None  # the client's last write: replicas must have replayed it
    written_lsn: int | None = None  # this request's commit, sent back as the token


_context: ContextVar[ReadContext | None] = ContextVar("keel_read_context", default=None)


def current_read_context() -> ReadContext | None:
    return _context.get()


@contextlib.contextmanager
def read_context(context: ReadContext) -> Any:
    """Run reads under `context` (what the middleware does per request; for tools and tests)."""
    token = _context.set(context)
    try:
        yield context
    finally:
        _context.reset(token)


@dataclass(eq=False)
class Replica:
    """One replica's pool and what the last check found."""

    name: str
    dsn: str
    pool: asyncpg.Pool | None = None
    healthy: bool = False
    replay_lsn: int = 0
    lag_ms: float | None = None
    reason: str = "not checked yet"
    held_until: float = 0.0  # after a failed read: out of rotation at least until then
    # Autocommit ORM sessions on this replica, for safe-method requests' `SessionDep`.
    sessions: async_sessionmaker[AsyncSession] | None = None

    def usable(self, max_lag_ms: int, min_lsn: int | None) -> bool:
        if not self.healthy or self.lag_ms is None or self.lag_ms > max_lag_ms:
            return False
        return min_lsn is None or self.replay_lsn >= min_lsn


class ReplicaFailed(Exception):
    """A read failed on a replica in a way the primary can answer instead."""


@dataclass
class ReplicaSet:
    """The replicas one worker reads from, and the task that checks them."""

    dsns: Mapping[str, str]
    max_lag_ms: int
    check_interval: float
    pool_options: dict[str, Any]
    read_timeout: float = 1.0
    primary_lsn: Callable[[], Awaitable[int]] | None = None
    replicas: list[Replica] = field(init=False)
    _turn: itertools.count[int] = field(init=False, default_factory=itertools.count)
    _samples: deque[tuple[float, int]] = field(init=False)
    _task: asyncio.Task[None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.replicas = [Replica(name, dsn) for name, dsn in self.dsns.items()]
        self._samples = deque(maxlen=max(50, int(60 / self.check_interval)))

    async def open(self, primary_lsn: Callable[[], Awaitable[int]]) -> None:
        self.primary_lsn = primary_lsn
        for replica in self.replicas:
            replica.pool = await asyncpg.create_pool(replica.dsn, min_size=0, **self.pool_options)
        await self.check()
        self._task = asyncio.create_task(self._watch(), name="keel-replica-checks")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for replica in self.replicas:
            if replica.pool is not None:
                await replica.pool.close()
            if replica.sessions is not None:
                engine = replica.sessions.kw["bind"]
                await engine.dispose()

    def choose(self, context: ReadContext | None) -> Replica | None:
        """A replica for this read, or None: read from the primary."""
        if context is None or context.primary_only:
            return None
        usable = [r for r in self.replicas if r.usable(self.max_lag_ms, context.min_lsn)]
        if not usable:
            return None
        return usable[next(self._turn) % len(usable)]

    async def run(self, replica: Replica, method: str, query: str, args: Any) -> Any:
        pool = replica.pool
        if pool is None:
            raise ReplicaFailed("replica pools are not open")
        try:
            async with pool.acquire(timeout=self.pool_options["timeout"]) as connection:
                # A read stuck behind replay (a replayed AccessExclusiveLock can hold the
                # standby's queries for max_standby_streaming_delay) is cut short.
                return await getattr(connection, method)(query, *args, timeout=self.read_timeout)
        except asyncpg.SerializationError as exc:  # 40001: cancelled by a recovery conflict
            raise ReplicaFailed from exc
        except asyncpg.PostgresError as exc:
            if not isinstance(exc, DISCONNECT_ERRORS):
                raise  # the query's own error: the primary would answer the same
            await self._lost(replica, pool, exc)
        except Exception as exc:  # noqa: BLE001 - a connection lost mid-read, in whatever
            # form asyncpg reports it (InterfaceError, InternalClientError, OSError, ...)
            await self._lost(replica, pool, exc)
        raise AssertionError("unreachable")

    def session_failed(self, replica: Replica, exc: BaseException) -> None:
        """An ORM read lost its replica connection: out of rotation, so the retry
        (`KeelRoute` retries a safe-method request once) reads the primary."""
        self.take_out(replica, f"read failed: {type(exc).__name__}", hold=READ_FAILURE_HOLD_S)

    async def _lost(self, replica: Replica, pool: asyncpg.Pool, exc: Exception) -> NoReturn:
        # Held out for a while even if checks pass: they don't touch the tables reads do.
        self.take_out(replica, f"read failed: {type(exc).__name__}", hold=READ_FAILURE_HOLD_S)
        await pool.expire_connections()
        raise ReplicaFailed from exc

    def take_out(self, replica: Replica, reason: str, *, hold: float = 0.0) -> None:
        replica.held_until = max(replica.held_until, time.monotonic() + hold)
        if replica.healthy:
            log.warning("replica.out_of_rotation", replica=replica.name, reason=reason)
        replica.healthy, replica.reason = False, reason

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                await self.check()
            except Exception:  # the next tick tries again; reads meanwhile use the primary
                log.exception("replica.check_failed")

    async def check(self) -> None:
        """One look at the primary's WAL position and each replica's replay."""
        if self.primary_lsn is None:
            raise RuntimeError("ReplicaSet.open() was not awaited")
        try:
            self._samples.append((time.monotonic(), await self.primary_lsn()))
        except (*DISCONNECT_ERRORS, OSError, asyncpg.InterfaceError):
            pass  # lag is measured against the last position seen
        await asyncio.gather(*(self._check_one(replica) for replica in self.replicas))

    async def _check_one(self, replica: Replica) -> None:
        if replica.pool is None:
            return
        try:
            async with replica.pool.acquire(timeout=self.check_interval * 5) as connection:
                row = await connection.fetchrow(_CHECK_SQL, timeout=self.check_interval * 5)
                if row is None:  # the query always returns one row
                    raise asyncpg.InterfaceError("no row")
        except Exception as exc:  # noqa: BLE001 - any failed check takes it out of rotation
            self.take_out(replica, f"check failed: {type(exc).__name__}")
            with contextlib.suppress(Exception):
                await replica.pool.expire_connections()
            return
        in_recovery, replay, paused = row
        if not in_recovery:
            self.take_out(replica, "not a standby (promoted?)")
            return
        if paused:
            self.take_out(replica, "WAL replay paused")
            return
        if time.monotonic() < replica.held_until:
            return  # a read failed on it recently
        replica.replay_lsn = replay or 0  # asyncpg decodes pg_lsn to an int
        replica.lag_ms = self._lag_ms(replica.replay_lsn)
        if not replica.healthy:
            log.info("replica.in_rotation", replica=replica.name, lag_ms=replica.lag_ms)
        replica.healthy, replica.reason = True, "ok"

    def _lag_ms(self, replayed: int) -> float | None:
        """Age of the newest primary position the replica has replayed (0: caught up)."""
        if not self._samples:
            return None
        if replayed >= self._samples[-1][1]:
            return 0.0
        now = time.monotonic()
        for seen_at, position in reversed(self._samples):
            if position <= replayed:
                return (now - seen_at) * 1000
        return (now - self._samples[0][0]) * 1000


class ReadRoutingMiddleware:
    """Pure ASGI: a `ReadContext` per HTTP request, and the LSN token out after writes."""

    def __init__(self, app: ASGIApp, *, token_seconds: int) -> None:
        self.app = app
        self.token_seconds = token_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_replicas(scope):
            await self.app(scope, receive, send)  # nothing to route: no work per request
            return
        if scope["method"] not in _SAFE_METHODS:
            context = ReadContext(primary_only=True)
        else:
            context = ReadContext(primary_only=False, min_lsn=_token_from(scope))
        token = _context.set(context)
        try:
            await self.app(scope, receive, self._sender(send, context, scope))
        finally:
            _context.reset(token)

    def _sender(self, send: Send, context: ReadContext, scope: Scope) -> Send:
        async def sender(message: Message) -> None:
            if message["type"] == "http.response.start" and context.written_lsn is not None:
                lsn = format_lsn(context.written_lsn)
                secure = "; Secure" if scope.get("scheme") == "https" else ""
                cookie = (
                    f"{LSN_COOKIE}={lsn}; Max-Age={self.token_seconds}; Path=/; "
                    f"HttpOnly; SameSite=Lax{secure}"
                )
                headers = [
                    *message.get("headers", []),
                    (LSN_HEADER.encode(), lsn.encode()),
                    (b"set-cookie", cookie.encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        return sender


def replica_urls(settings: Settings, embedded: EmbeddedPostgres | None) -> dict[str, str]:
    """Name -> URL of the replicas to read from: `DATABASE_REPLICA_URLS`, and the embedded
    server's own replicas (`keel db replica add`)."""
    urls = {describe_url(url): url for url in settings.database_replica_urls}
    if embedded is not None:
        urls |= {replica.data_dir.name: replica.url for replica in embedded.replicas()}
    return urls


def _has_replicas(scope: Scope) -> bool:
    database = getattr(scope["app"].state, "db", None)  # set by the lifespan
    return database is not None and database.reads.replicas is not None


def _token_from(scope: Scope) -> int | None:
    header, cookie = None, None
    for name, value in scope["headers"]:
        if name == b"keel-lsn":
            header = value.decode("latin-1")
        elif name == b"cookie" and b"keel_lsn" in value:
            jar: SimpleCookie = SimpleCookie()
            with contextlib.suppress(Exception):
                jar.load(value.decode("latin-1"))
            if LSN_COOKIE in jar:
                cookie = jar[LSN_COOKIE].value
    lsns = [lsn for lsn in (parse_lsn(header), parse_lsn(cookie)) if lsn is not None]
    return max(lsns) if lsns else None
