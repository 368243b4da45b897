"""Keel's app with pieces of its middleware stack taken out (`bench.apps.stack:NAME`).

`no_middleware` is Keel with no middleware at all; the `full_without_*` / `full_no_*`
factories take one piece out of the production stack, so the middleware scenarios can price
each piece. Each uvicorn process calls one factory, so patching module globals here affects
only that server. `VARIANTS` lists them for `bench.harness.load.Variant` users.
"""

from __future__ import annotations

from typing import Any, cast

from fastapi import FastAPI
from starlette.middleware.gzip import GZipMiddleware

import keel.core.metrics
import keel.core.middleware as mw
from bench.harness.load import Variant
from keel.app import build_middleware, create_app
from keel.config import get_settings


def no_middleware() -> FastAPI:
    """Keel with no middleware at all: the baseline for the middleware-overhead benchmark."""
    return create_app(middleware=False)


# Keel wraps Starlette's GZipMiddleware in its own class (since e39c957); match either.
_GZIP: tuple[type, ...] = tuple(
    cls
    for cls in (GZipMiddleware, getattr(mw, "GZipWhenAcceptedMiddleware", None))
    if isinstance(cls, type)
)


def _full_without(*classes: type) -> FastAPI:
    """The production stack minus the middlewares of the given classes (at least one)."""
    app = create_app(middleware=False)
    stack = build_middleware(get_settings())
    kept = [m for m in stack if m.cls not in cast(tuple[object, ...], classes)]
    if len(kept) == len(stack):
        names = ", ".join(c.__name__ for c in classes)
        raise RuntimeError(
            f"none of {names} is in the middleware stack: update bench/apps/stack.py"
        )
    app.user_middleware = kept
    return app


class _NullLogger:
    def info(self, *_: Any, **__: Any) -> None:
        return None


def _no_observe(method: str, route: str, status: int, seconds: float) -> None:
    return None


def full_without_request_context() -> FastAPI:
    return _full_without(mw.RequestContextMiddleware)


def full_without_security_headers() -> FastAPI:
    return _full_without(mw.SecurityHeadersMiddleware)


def full_without_body_limit() -> FastAPI:
    return _full_without(mw.BodySizeLimitMiddleware)


def full_without_gzip() -> FastAPI:
    return _full_without(*_GZIP)


def full_no_access_log() -> FastAPI:
    """Full stack, but RequestContextMiddleware's access-log line is dropped."""
    mw.access_log = _NullLogger()
    return create_app()


def full_no_metrics() -> FastAPI:
    """Full stack, but RequestContextMiddleware records no Prometheus metrics."""
    keel.core.metrics.observe_request = _no_observe
    return create_app()


def full_no_log_no_metrics() -> FastAPI:
    """Full stack with neither access log nor metrics: the pure ASGI wrapping cost."""
    mw.access_log = _NullLogger()
    keel.core.metrics.observe_request = _no_observe
    return create_app()


def _variant(name: str, *, request_id: bool = True) -> Variant:
    return Variant(name, f"bench.apps.stack:{name}", has_request_id=request_id)


FULL = Variant("full", "keel.app:create_app", has_request_id=True)
NO_MIDDLEWARE = _variant("no_middleware", request_id=False)
# The full stack, then each piece taken out in turn.
VARIANTS = (
    FULL,
    NO_MIDDLEWARE,
    _variant("full_without_request_context", request_id=False),
    _variant("full_without_security_headers"),
    _variant("full_without_body_limit"),
    _variant("full_without_gzip"),
    _variant("full_no_access_log"),
    _variant("full_no_metrics"),
    _variant("full_no_log_no_metrics"),
)
