"""Uploads that can't starve the service: body read timeout, spooling, heavy-operation slots.

A slow client must cost the server a socket and a buffer, never a database connection:
- `BodyReadTimeoutMiddleware` answers 408 when a body stalls for BODY_READ_TIMEOUT_SECONDS;
- `spool` reads a whole upload into memory (the first SPOOL_MEMORY_BYTES) and then a
  temporary file, before any database work starts;
- `release_connection` ends the read-only transaction that authentication may have
  opened, so no pooled connection waits on the client;
- `HeavyOperations` caps the heavy operations (bulk loads, imports) running at once,
  per user and per process, which bounds what spooled bodies and JSON_TABLE documents
  cost in memory and disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO, Any
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.core.errors import KeelError, ServiceUnavailable, TooManyRequests, problem_response

log = structlog.get_logger(__name__)

# What an upload endpoint may answer besides its own results (OpenAPI `responses=`).
UPLOAD_LIMITS: dict[int | str, dict[str, Any]] = {
    408: {"description": "The body stopped arriving for BODY_READ_TIMEOUT_SECONDS"},
    429: {"description": "Too many requests, or HEAVY_OPERATIONS_PER_USER of yours running"},
    503: {"description": "HEAVY_OPERATIONS_PER_PROCESS running here; see Retry-After"},
}
SPOOL_MEMORY_BYTES = 1024 * 1024  # an upload's first MiB stays in memory, the rest on disk
SPOOL_CHUNK_BYTES = 256 * 1024  # read back in pieces of this size
HEAVY_RETRY_AFTER_SECONDS = 5


class HeavyOperationsBusy(ServiceUnavailable):
    """Every heavy-operation slot of this process is taken."""

    slug, title = "uploads-busy", "Uploads Busy"


class TooManyHeavyOperations(TooManyRequests):
    """The caller already runs as many heavy operations as it may at once."""

    slug, title = "too-many-uploads", "Too Many Concurrent Uploads"


class BodyTooSlow(KeelError):
    status_code, slug, title = 408, "request-timeout", "Request Timeout"


class BodyReadTimeoutMiddleware:
    """408 when a request body stops arriving for `timeout` seconds.

    The answer goes out from here, at once, with `Connection: close` (the rest of the body
    will never be read); the endpoint then sees the client as gone and unwinds, and
    whatever it would have answered is dropped.
    """

    def __init__(self, app: ASGIApp, *, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = timed_out = started = False

        async def timed_receive() -> Message:
            nonlocal body_done, timed_out
            if body_done or timed_out:
                return await receive() if not timed_out else {"type": "http.disconnect"}
            try:
                async with asyncio.timeout(self.timeout):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                log.info("body_read_timeout", path=scope["path"], seconds=self.timeout)
                if not started:
                    await _answer_408(scope, send, self.timeout)
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if timed_out:
                return  # the client already has its 408
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not timed_out:
                raise
            log.info("body_read_timeout.unwound", path=scope["path"])


async def _answer_408(scope: Scope, send: Send, seconds: float) -> None:
    error = BodyTooSlow(f"No part of the request body arrived for {seconds:g} seconds.")
    response = problem_response(
        error.status_code,
        title=error.title,
        detail=error.detail,
        type_=f"urn:keel:problem:{error.slug}",
        instance=scope["path"],
        headers={"Connection": "close"},
    )

    async def no_body() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, no_body, send)


async def release_connection(session: AsyncSession) -> None:
    """End the session's read-only transaction (e.g. authentication's), freeing its connection.

    The session stays usable: its next statement checks a connection out again. Call it
    before waiting on the client; only for sessions that have written nothing yet.
    """
    # Inside a savepoint the connection belongs to an outer transaction: nothing to give back.
    if session.in_transaction() and not session.in_nested_transaction():
        if session.new or session.dirty or session.deleted:
            raise RuntimeError("release_connection() on a session with pending writes")
        await session.commit()


@dataclass
class SpooledBody:
    """An upload, read completely: its size, its sha256, and its bytes to read again."""

    size: int = 0
    _digest: Any = field(default_factory=hashlib.sha256)
    _memory: list[bytes] = field(default_factory=list)
    _in_memory: int = 0
    _file: IO[bytes] | None = None

    @property
    def sha256(self) -> bytes:
        digest: bytes = self._digest.digest()
        return digest

    async def _add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._digest.update(chunk)
        self._memory.append(chunk)
        self._in_memory += len(chunk)
        if self._in_memory > SPOOL_MEMORY_BYTES:
            await self._spill()

    async def _spill(self) -> None:
        data, self._memory, self._in_memory = b"".join(self._memory), [], 0
        if self._file is None:
            self._file = await asyncio.to_thread(_temporary_file)
        await asyncio.to_thread(self._file.write, data)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body again, from the start, in pieces."""
        if self._file is not None:
            if self._memory:
                await self._spill()
            await asyncio.to_thread(self._file.seek, 0)
            while piece := await asyncio.to_thread(self._file.read, SPOOL_CHUNK_BYTES):
                yield piece
            return
        for piece in self._memory:
            yield piece

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._memory = []


def _temporary_file() -> IO[bytes]:
    return tempfile.TemporaryFile(prefix="keel-upload-")  # noqa: SIM115 - closed by close()


@contextlib.asynccontextmanager
async def spool(chunks: AsyncIterator[bytes]) -> AsyncIterator[SpooledBody]:
    """Read an upload to its end (within the caps the middleware enforces), then yield it."""
    body = SpooledBody()
    try:
        async for chunk in chunks:
            if chunk:
                await body._add(chunk)  # noqa: SLF001 - the spool fills its own body
        yield body
    finally:
        body.close()


class HeavyOperations:
    """Slots for heavy operations: HEAVY_OPERATIONS_PER_USER per caller and
    HEAVY_OPERATIONS_PER_PROCESS in this process. Nobody waits for a slot: over a limit
    is an immediate 429 (the caller's own) or 503 (the process's), with Retry-After."""

    def __init__(self, *, per_user: int, per_process: int) -> None:
        self.per_user = per_user
        self.per_process = per_process
        self._running: Counter[UUID] = Counter()
        self._total = 0

    @contextlib.contextmanager
    def slot(self, user_id: UUID) -> Any:
        # No await between the checks and the counts: the event loop can't interleave.
        retry = {"Retry-After": str(HEAVY_RETRY_AFTER_SECONDS)}
        if self._running[user_id] >= self.per_user:
            raise TooManyHeavyOperations(
                f"You already run {self.per_user} uploads or imports; wait for one to finish.",
                headers=retry,
                limit=self.per_user,
            )
        if self._total >= self.per_process:
            raise HeavyOperationsBusy(
                "The server is busy with other uploads and imports; retry shortly.",
                headers=retry,
            )
        self._running[user_id] += 1
        self._total += 1
        try:
            yield
        finally:
            self._total -= 1
            self._running[user_id] -= 1
            if not self._running[user_id]:
                del self._running[user_id]


def heavy_operations(request: Request) -> HeavyOperations:
    """The process's heavy-operation slots (made by `create_app`)."""
    slots: HeavyOperations = request.app.state.heavy_operations
    return slots
