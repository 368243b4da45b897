"""Keel's router and route class: checks that run before the body is read, and read retries.

FastAPI reads and parses a request body before it resolves dependencies, so a
body-taking endpoint would pay for an anonymous caller's upload before saying 401.
`KeelRoute` runs the registered pre-body guards (sign-in, admin) first: a caller who
may not use an operation never costs more than its headers.

Safe-method requests whose database connection dies mid-request are run once more
(the pool has reconnected by then); a second failure is a 503.

Each path is registered once. `RequestContextMiddleware` strips a trailing slash
before routing, so `/posts` and `/posts/` are both served without redirects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from keel.core.errors import is_disconnect
from keel.core.replicas import current_read_context

# The `responses=` mapping of a route: status code -> OpenAPI response object.
Responses = dict[int | str, dict[str, Any]]
type Guard = Callable[[Request], Awaitable[None]]
type Handler = Callable[[Request], Coroutine[Any, Any, Response]]

SAFE_METHODS = frozenset({"GET", "HEAD"})
_PRE_BODY_GUARDS: dict[Any, Guard] = {}

log = structlog.get_logger(__name__)


def guard_before_body(dependency: Any, guard: Guard) -> None:
    """Run `guard(request)` before the body is read on every route that uses `dependency`."""
    _PRE_BODY_GUARDS[dependency] = guard


def _dependency_calls(route: APIRoute) -> list[Any]:
    """Every callable the route depends on, transitively, outermost first."""
    calls: list[Any] = []
    stack = list(reversed(route.dependant.dependencies))
    while stack:
        current = stack.pop()
        if current.call not in calls:
            calls.append(current.call)
        stack.extend(reversed(current.dependencies))
    return calls


class KeelRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        handler: Handler = super().get_route_handler()
        guards: list[Guard] = []
        if self.body_field is not None:
            guards = [_PRE_BODY_GUARDS[c] for c in _dependency_calls(self) if c in _PRE_BODY_GUARDS]
        retry_reads = self.methods is not None and self.methods <= SAFE_METHODS

        async def guarded(request: Request) -> Response:
            for guard in guards:
                await guard(request)
            return await handler(request)

        async def retried(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                if not is_disconnect(exc):
                    raise
                log.info("read_retried", error=type(exc).__name__)
                context = current_read_context()
                if context is not None:  # a replica may have failed it: the primary answers
                    context.primary_only = True
                return await handler(request)

        if retry_reads:
            return retried
        return guarded if guards else handler


class KeelRouter(APIRouter):
    """An APIRouter whose routes are `KeelRoute`s."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("route_class", KeelRoute)
        super().__init__(**kwargs)
