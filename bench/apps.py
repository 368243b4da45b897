"""ASGI app factories for benchmarks, run by uvicorn as `--factory bench.apps:NAME`.

Besides the baseline `bare_app`, the `full_without_*` / `full_no_*` factories take one piece
out of the production stack, so bench/middleware_breakdown.py can price each piece. Each
uvicorn process calls one factory, so patching module globals here affects only that server.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.middleware.gzip import GZipMiddleware

import keel.core.metrics
import keel.core.middleware as mw
from keel.app import build_middleware, create_app
from keel.config import get_settings


def bare_app() -> FastAPI:
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
    kept = [m for m in stack if m.cls not in classes]
    if len(kept) == len(stack):
        names = ", ".join(c.__name__ for c in classes)
        raise RuntimeError(f"none of {names} is in the middleware stack: update bench/apps.py")
    app.user_middleware = kept
    return app


class _NullLogger:
    def info(self, *_: Any, **__: Any) -> None:
        return None


def _no_observe(*_: Any) -> None:
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
