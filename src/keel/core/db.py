"""The async database layer: the write engine, the read pool, per-request sessions, server checks.

Writes and reads take different paths:
- **Writes** (POST, PUT, PATCH, DELETE) get a SQLAlchemy `AsyncSession` in one transaction,
  committed once before the response is sent and rolled back on any error.
- **Reads** (GET, HEAD) get a session in autocommit: no `BEGIN`/`COMMIT`, so each
  statement is one round trip. Hot reads skip the ORM altogether and run one prepared
  statement on `ReadPool`, a plain asyncpg pool.
Safe-method reads (`ReadPool` and `SessionDep`'s autocommit session) may be served by a
streaming replica (`keel.core.replicas`); everything else uses the primary.
No pool pings before use: a dead connection is found when it is used; reads are
retried once across the reconnect, and anything that can't reach the database is a
503 with Retry-After (`keel.core.errors.DatabaseUnavailable`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final
from uuid import uuid4

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import event, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool

from keel.config import Settings
from keel.core.errors import DISCONNECT_ERRORS, DatabaseUnavailable, is_disconnect
from keel.core.replicas import Replica, ReplicaFailed, ReplicaSet, current_read_context
from keel.core.viewer import SESSION_INFO_KEY, InvalidationListener, ViewerCache

SAFE_METHODS: Final = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class PoolStatus:
    size: int
    checked_out: int
    checked_in: int
    overflow: int


async def _keep_session_state(connection: asyncpg.Connection) -> None:
    """Pool reset hook: nothing to reset, since reads never change session state.

    asyncpg's default reset sends `RESET ALL; UNLISTEN *; ...`: a round trip per release.
    """


class ReadPool:
    """One asyncpg pool for hot reads: prepared statements, autocommit, no pings, no resets.

    Statements are prepared once per connection (asyncpg's statement cache) and run
    with Bind/Execute/Sync: one round trip. A statement that fails because the
    connection died is retried once on a fresh connection; if that fails too, or no
    connection comes within the pool timeout, the caller gets `DatabaseUnavailable`.
    """

    def __init__(
        self,
        dsn: str,
        *,
        size: int,
        acquire_timeout: float,
        connect_timeout: float,
        server_settings: Mapping[str, str],
        statement_cache_size: int = 100,
    ) -> None:
        self._dsn = dsn
        self._statement_cache_size = statement_cache_size  # 0 behind PgBouncer
        self._size = size
        self._acquire_timeout = acquire_timeout
        self._connect_timeout = connect_timeout
        self._server_settings = dict(server_settings)
        self._pool: asyncpg.Pool | None = None
        self.replicas: ReplicaSet | None = None  # set by create_database when configured

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=0,
            max_size=self._size,
            reset=_keep_session_state,
            timeout=self._connect_timeout,
            statement_cache_size=self._statement_cache_size,
            server_settings=self._server_settings,
        )

    async def close(self) -> None:
        if self.replicas is not None:
            await self.replicas.close()
        if self._pool is not None:
            await self._pool.close()

    async def primary_lsn(self) -> int:
        """The primary's current WAL write position (for read-your-writes and lag)."""
        lsn: int = await self._run_primary("fetchval", "SELECT pg_current_wal_lsn()", ())
        return lsn  # asyncpg decodes pg_lsn to an int

    async def expire(self) -> None:
        """Replace every idle connection on its next use (after a server restart)."""
        if self._pool is not None:
            await self._pool.expire_connections()

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._run("fetch", query, args)
        return rows

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._run("fetchrow", query, args)
        return row

    async def _run(self, method: str, query: str, args: Sequence[Any]) -> Any:
        if self.replicas is not None:
            replica = self.replicas.choose(current_read_context())
            if replica is not None:
                try:
                    return await self.replicas.run(replica, method, query, args)
                except ReplicaFailed:
                    pass  # answered by the primary below
        return await self._run_primary(method, query, args)

    async def _run_primary(self, method: str, query: str, args: Sequence[Any]) -> Any:
        pool = self._pool
        if pool is None:
            raise RuntimeError("ReadPool.open() was not awaited")
        for attempt in (1, 2):
            try:
                async with pool.acquire(timeout=self._acquire_timeout) as connection:
                    return await getattr(connection, method)(query, *args)
            except (*DISCONNECT_ERRORS, asyncpg.InterfaceError) as exc:
                if isinstance(exc, asyncpg.InterfaceError) and "closed" not in str(exc):
                    raise  # misuse, not a lost connection
                # The server may have restarted: every idle connection is stale too.
                await self.expire()
                if attempt == 2:
                    raise DatabaseUnavailable() from exc
        raise AssertionError("unreachable")


@dataclass(slots=True)
class Database:
    """The process's write engine, its two session factories, and the read pool."""

    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    read_sessionmaker: async_sessionmaker[AsyncSession]
    reads: ReadPool
    viewers: ViewerCache
    listener: InvalidationListener

    def pool_status(self) -> PoolStatus:
        pool = self.engine.pool
        if not isinstance(pool, AsyncAdaptedQueuePool):
            raise TypeError(f"unexpected pool class {type(pool).__name__}")
        return PoolStatus(
            size=pool.size(),
            checked_out=pool.checkedout(),
            checked_in=pool.checkedin(),
            overflow=max(pool.overflow(), 0),
        )

    async def open(self) -> None:
        """Ready the read pool and start listening for viewer invalidations (servers only)."""
        await self.reads.open()
        if self.reads.replicas is not None:
            await self.reads.replicas.open(self.reads.primary_lsn)
        await self.listener.start()

    async def drop_idle_connections(self) -> None:
        """Both pools start afresh: called when the listener loses the server."""
        await self.reads.expire()
        await self.engine.dispose(close=False)

    async def dispose(self) -> None:
        await self.listener.stop()
        await self.reads.close()
        await self.engine.dispose()


def asyncpg_dsn(url: str) -> str:
    """The libpq-style URL asyncpg takes, from a SQLAlchemy URL.

    `?ssl=` (what SQLAlchemy's asyncpg dialect reads) becomes `?sslmode=` (what asyncpg's
    DSN parser reads; it would send an unknown `ssl` to the server as a setting).
    """
    parsed = make_url(url).set(drivername="postgresql")
    if "ssl" in parsed.query:
        query = dict(parsed.query)
        query["sslmode"] = query.pop("ssl")
        parsed = parsed.set(query=query)
    return parsed.render_as_string(hide_password=False)


def pgbouncer_connect_args() -> dict[str, Any]:
    """asyncpg arguments for PgBouncer's transaction pooling (before 1.21's statement support).

    No statement cache: a named statement prepared on one server connection is unknown to
    the next one PgBouncer hands out. asyncpg then parses each query unnamed, in the same
    Sync as its execution, so one server sees both. SQLAlchemy's `prepare()` names get a
    unique suffix so two clients never collide on one server.
    """
    return {
        "statement_cache_size": 0,
        "prepared_statement_name_func": lambda: f"__keel_{uuid4().hex}__",
    }


def create_database(
    settings: Settings, url: str, replica_urls: Mapping[str, str] | None = None
) -> Database:
    """Build the engine and read pool: explicit pool sizes, JIT off, an application_name.

    `replica_urls` (name -> URL): streaming replicas that safe-method reads may use.
    """
    server_settings = {"application_name": settings.app_name.lower()}
    connect_args: dict[str, Any] = {"timeout": settings.db_connect_timeout}
    engine_url = url
    if settings.db_pgbouncer:  # PgBouncer refuses other startup parameters
        connect_args |= pgbouncer_connect_args()
        engine_url = (
            make_url(url)
            .update_query_dict({"prepared_statement_cache_size": "0"})
            .render_as_string(hide_password=False)
        )
    else:
        server_settings["jit"] = "off"
        if settings.db_statement_timeout_ms:
            server_settings["statement_timeout"] = str(settings.db_statement_timeout_ms)
    connect_args["server_settings"] = server_settings
    engine = _engine(engine_url, settings, connect_args)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    viewers = ViewerCache(
        max_entries=settings.viewer_cache_size, ttl_seconds=settings.viewer_cache_ttl_seconds
    )
    info = {SESSION_INFO_KEY: viewers}
    dsn = asyncpg_dsn(url)
    database = Database(
        engine=engine,
        sessionmaker=async_sessionmaker(
            engine, class_=AsyncSession, expire_on_commit=False, info=info
        ),
        read_sessionmaker=async_sessionmaker(
            autocommit, class_=AsyncSession, expire_on_commit=False, info=info
        ),
        viewers=viewers,
        listener=InvalidationListener(
            asyncpg_dsn(settings.database_direct_url) if settings.database_direct_url else dsn,
            viewers,
            connect_timeout=settings.db_connect_timeout,
        ),
        reads=ReadPool(
            dsn,
            size=settings.db_read_pool_size,
            acquire_timeout=settings.db_pool_timeout,
            connect_timeout=settings.db_connect_timeout,
            server_settings=server_settings,
            statement_cache_size=0 if settings.db_pgbouncer else 100,
        ),
    )
    if replica_urls:
        database.reads.replicas = ReplicaSet(
            {name: asyncpg_dsn(replica) for name, replica in replica_urls.items()},
            max_lag_ms=settings.replica_max_lag_ms,
            check_interval=settings.replica_check_interval_ms / 1000,
            read_timeout=settings.replica_read_timeout_ms / 1000,
            pool_options={
                "max_size": settings.db_read_pool_size,
                "reset": _keep_session_state,
                "timeout": settings.db_connect_timeout,
                "server_settings": server_settings,
            },
        )
        for replica, replica_url in zip(
            database.reads.replicas.replicas, replica_urls.values(), strict=True
        ):
            replica_engine = _engine(
                replica_url, settings, connect_args, isolation_level="AUTOCOMMIT"
            )
            event.listen(
                replica_engine.sync_engine,
                "handle_error",
                _on_replica_error(database.reads.replicas, replica),
            )
            replica.sessions = async_sessionmaker(
                replica_engine, class_=AsyncSession, expire_on_commit=False, info=info
            )
    database.listener.on_lost = database.drop_idle_connections
    return database


def _engine(
    url: str, settings: Settings, connect_args: dict[str, Any], **options: Any
) -> AsyncEngine:
    return create_async_engine(
        url,
        poolclass=AsyncAdaptedQueuePool,
        pool_size=settings.db_pool_size,
        max_overflow=0,
        pool_timeout=settings.db_pool_timeout,
        pool_pre_ping=False,  # a dead connection is found on use; see the module docstring
        pool_recycle=settings.db_pool_recycle,
        hide_parameters=True,  # errors must never carry values such as password hashes
        connect_args=connect_args,
        **options,
    )


def _on_replica_error(replicas: ReplicaSet, replica: Replica) -> Callable[[ExceptionContext], None]:
    """Take a replica out of rotation the moment an ORM read loses it, so the request's
    one retry (`KeelRoute`) reads the primary."""

    def handle(context: ExceptionContext) -> None:
        if context.is_disconnect or is_disconnect(context.original_exception):
            replicas.session_failed(replica, context.original_exception)

    return handle


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request: committed once on success, rolled back on any error.

    Safe-method requests get the autocommit session: their statements run without
    `BEGIN`/`COMMIT`, and the commit below is a no-op.
    """
    database: Database = request.app.state.db
    if request.method in SAFE_METHODS:
        replicas = database.reads.replicas
        replica = replicas.choose(current_read_context()) if replicas is not None else None
        if replicas is None or replica is None or replica.sessions is None:
            async with database.read_sessionmaker() as session:
                yield session
            return
        async with replica.sessions() as session:  # a lost replica: see _on_replica_error
            yield session
        return
    async for session in _transaction(database):
        yield session


async def get_transaction(request: Request) -> AsyncIterator[AsyncSession]:
    """A session in one transaction whatever the method: for reads that need `SET LOCAL`
    (planner settings for one report, HNSW scan settings) or one snapshot."""
    async for session in _transaction(request.app.state.db):
        yield session


async def _transaction(database: Database) -> AsyncIterator[AsyncSession]:
    async with database.sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()
    context = current_read_context()
    if database.reads.replicas is not None and context is not None:
        # The client's read-your-writes token: replicas must replay past this commit.
        context.written_lsn = await database.reads.primary_lsn()


# scope="function": the commit finishes before the response is sent, so a failed
# commit becomes an error response instead of a lost write behind a 2xx.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
TransactionDep = Annotated[AsyncSession, Depends(get_transaction, scope="function")]


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under `session`, inside its transaction (for COPY)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    if not driver.is_in_transaction():
        # SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its first statement;
        # without one, raw statements would each commit on their own.
        await connection.execute(text("SELECT 1"))
    return driver
