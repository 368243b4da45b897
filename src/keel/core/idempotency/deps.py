"""The `Idempotency-Key` dependency and the route class that replays and stores answers."""

from __future__ import annotations

import hashlib
from typing import Annotated, Final
from uuid import UUID

from fastapi import Depends, Header, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.db import SessionDep
from keel.core.deps import ServicesDep, ViewerDep
from keel.core.errors import Conflict, KeelError
from keel.core.idempotency import repository
from keel.core.idempotency.repository import StoredResponse
from keel.core.routing import Handler, KeelRoute, Responses

HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
KEY_PATTERN: Final = r"^[\x21-\x7e]{1,255}$"  # visible ASCII, like a header token
# What a replay repeats besides status and body; per-request headers (ids, limits) are not.
KEPT_HEADERS: Final = ("content-type", "location", "content-location", "etag", "last-modified")
IN_PROGRESS_RETRY_AFTER_SECONDS: Final = 1
_STATE: Final = "idempotency"

IDEMPOTENCY_ERRORS: Responses = {
    409: {"description": "A request with this Idempotency-Key is still running; see Retry-After"},
    422: {"description": "This Idempotency-Key was used for a different request"},
}


class IdempotencyKeyReused(KeelError):
    status_code, slug, title = 422, "idempotency-key-reused", "Idempotency Key Reused"


class IdempotencyKeyInUse(Conflict):
    slug, title = "idempotency-key-in-use", "Idempotency Key In Use"


class _Replay(Exception):  # noqa: N818 - control flow, caught by IdempotentRoute
    def __init__(self, response: Response) -> None:
        self.response = response


class Idempotency:
    """The request's Idempotency-Key (or None), checked once, then its answer stored."""

    def __init__(
        self,
        request: Request,
        session: AsyncSession,
        user_id: UUID,
        key: str | None,
        ttl_seconds: int,
    ) -> None:
        self.request, self.session, self.key = request, session, key
        self.user_id = user_id
        self.ttl_seconds = ttl_seconds
        self.fingerprint: bytes | None = None

    async def check(self, body_sha256: bytes) -> None:
        """Before the work: replay a stored answer, refuse a reused key, or go ahead.

        Going ahead holds the key (a transaction-scoped lock) until the request commits.
        """
        if self.key is None:
            return
        request = self.request
        fingerprint = hashlib.sha256(
            b"\0".join(
                [
                    request.method.encode(),
                    request.url.path.encode(),
                    request.url.query.encode(),
                    body_sha256,
                ]
            )
        ).digest()
        if not await repository.try_lock(self.session, self.user_id, self.key):
            raise IdempotencyKeyInUse(
                f"A request with this {HEADER} is still running; retry shortly.",
                headers={"Retry-After": str(IN_PROGRESS_RETRY_AFTER_SECONDS)},
            )
        stored = await repository.find(self.session, self.user_id, self.key)
        if stored is not None:
            if stored.fingerprint != fingerprint:
                raise IdempotencyKeyReused(
                    f"This {HEADER} was used for a different request; use a new key."
                )
            headers = {**stored.headers, REPLAYED_HEADER: "true"}
            raise _Replay(Response(stored.body, stored.status_code, headers=headers))
        self.fingerprint = fingerprint
        setattr(request.state, _STATE, self)

    async def keep(self, response: Response) -> None:
        """Store a successful answer with the work it reports (before the commit)."""
        if self.key is None or self.fingerprint is None or not 200 <= response.status_code < 300:
            return
        headers = {
            name: response.headers[name] for name in KEPT_HEADERS if name in response.headers
        }
        body = bytes(response.body)
        stored = StoredResponse(self.fingerprint, response.status_code, headers, body)
        await repository.store(self.session, self.user_id, self.key, stored, self.ttl_seconds)


KeyHeader = Annotated[
    str | None,
    Header(
        alias=HEADER,
        pattern=KEY_PATTERN,
        description="Your unique key for this request (1-255 visible ASCII characters): a "
        "retry with the same key and body gets the first answer instead of a duplicate.",
    ),
]


async def deferred_idempotency(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    services: ServicesDep,
    key: KeyHeader = None,
) -> Idempotency:
    """For streamed bodies: the endpoint calls `check()` once it has read the body."""
    ttl = services.settings.idempotency_key_hours * 3600
    return Idempotency(request, session, viewer.user_id, key, ttl)


async def idempotency(
    request: Request, idempotency: Annotated[Idempotency, Depends(deferred_idempotency)]
) -> Idempotency:
    """For JSON bodies (already read by FastAPI): checked before the endpoint runs."""
    if idempotency.key is not None:
        await idempotency.check(hashlib.sha256(await request.body()).digest())
    return idempotency


IdempotencyDep = Annotated[Idempotency, Depends(idempotency)]
DeferredIdempotencyDep = Annotated[Idempotency, Depends(deferred_idempotency)]


class IdempotentRoute(KeelRoute):
    """A KeelRoute that answers replays and stores first answers for keyed requests."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def idempotent(request: Request) -> Response:
            try:
                response = await handler(request)
            except _Replay as replay:
                return replay.response
            keyed: Idempotency | None = getattr(request.state, _STATE, None)
            if keyed is not None:
                await keyed.keep(response)
            return response

        return idempotent
