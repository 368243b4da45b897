"""The rungs of the request-path ladder (`bench.apps.ladder:<rung>`), one uvicorn factory each.

Every rung serves `GET /orgs/{org_id}/posts/{id}` with the bare app's statement and JSON
(`bench.apps.bare`) and adds one layer of Keel on top of the rung before:

1. `bare` is `bench.apps.bare:create_app` itself;
2. `middleware`: + Keel's production middleware stack (request id, access log, metrics,
   security headers, trusted hosts, body cap, gzip), as `create_app` builds it;
3. `viewer`: + the bearer token (verified, cached) and the `Viewer` (cached,
   NOTIFY-invalidated), through Keel's own `ViewerDep`;
4. `limiter`: + the API-wide rate limit (`enforce_api_rate_limit`: one Redis round trip);
5. full Keel is `keel.app:create_app` (`/api/v1/orgs/{org_id}/posts/{id}`): its router, the real
   repository and service, visibility rules, the 404 path, OpenAPI models.

Settings come from the environment, as for Keel.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from uuid import UUID

from fastapi import Depends, FastAPI, HTTPException, Request, Response

from bench.apps import bare
from keel.app import build_middleware
from keel.auth.service import load_viewer
from keel.config import get_settings
from keel.core.db import create_database
from keel.core.deps import Services, ViewerDep, enforce_api_rate_limit
from keel.core.embedded import EmbeddedPostgres
from keel.core.errors import install_error_handlers
from keel.search.embeddings import embedder_for


def middleware() -> FastAPI:
    app = bare.create_app()
    app.user_middleware = build_middleware(get_settings())
    install_error_handlers(app)
    return app


def _with_services(app: FastAPI) -> FastAPI:
    """Run Keel's services (database, read pool, listener, caches, limiter) beside the bare pool."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        settings = get_settings()
        url = settings.database_url or EmbeddedPostgres(settings.data_dir).url
        db = create_database(settings, url)
        await db.open()
        application.state.settings, application.state.db = settings, db
        application.state.services = Services.build(
            settings,
            db,
            redis=None,
            embedder=embedder_for(settings),
            load_viewer=load_viewer,
        )
        try:
            async with inner(application):
                yield
        finally:
            await application.state.services.ratelimiter.close()
            await db.dispose()

    app.router.lifespan_context = lifespan
    return app


def _rung(*, limited: bool) -> FastAPI:
    app = FastAPI(lifespan=bare.lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    dependencies = [Depends(enforce_api_rate_limit)] if limited else []

    @app.get("/health")
    async def health() -> Response:
        return bare.json_reply({"status": "ok"})

    @app.get("/orgs/{org_id}/posts/{post_id}", dependencies=dependencies)
    async def post_by_id(
        org_id: UUID, post_id: UUID, viewer: ViewerDep, request: Request
    ) -> Response:
        row = await request.app.state.pool.fetchrow(bare.POST_BY_ID, org_id, post_id)
        if row is None:
            raise HTTPException(404)
        return bare.json_reply(bare.post_json(row))

    app.user_middleware = build_middleware(get_settings())
    install_error_handlers(app)
    return _with_services(app)


def viewer() -> FastAPI:
    return _rung(limited=False)


def limiter() -> FastAPI:
    return _rung(limited=True)
