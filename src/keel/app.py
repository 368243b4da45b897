"""`create_app()`: the FastAPI application, its middleware stack and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from importlib.metadata import version

import structlog
from fastapi import APIRouter, Depends, FastAPI
from redis.asyncio import Redis
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from keel.auth.router import account_router
from keel.auth.router import router as auth_router
from keel.auth.service import load_viewer
from keel.bulk.router import router as bulk_router
from keel.config import Settings, get_settings
from keel.core import metrics, tracing
from keel.core.db import Database, create_database
from keel.core.deps import Services, enforce_api_rate_limit
from keel.core.docs import install_offline_docs
from keel.core.embedded import EmbeddedPostgres
from keel.core.errors import install_error_handlers
from keel.core.logging import configure_logging
from keel.core.middleware import (
    BodySizeLimitMiddleware,
    GZipWhenAcceptedMiddleware,
    JsonDepthLimitMiddleware,
    RequestContextMiddleware,
    SecurityHeadersMiddleware,
    TrustedHostMiddleware,
)
from keel.core.openapi import install_problem_openapi
from keel.core.replicas import ReadRoutingMiddleware, replica_urls
from keel.core.server_checks import verify_server
from keel.core.uploads import BodyReadTimeoutMiddleware, HeavyOperations
from keel.documents.router import router as documents_router
from keel.health.router import router as health_router
from keel.insight.pg import snapshots as insight_snapshots
from keel.insight.pg.metrics import DbMetrics
from keel.insight.pg.router import router as insight_db_router
from keel.insight.router import router as insight_router
from keel.insight.web.router import router as dashboard_router
from keel.insight.web.router import static as dashboard_static
from keel.jobs.router import router as jobs_router
from keel.migrations import runner
from keel.orgs.router import router as orgs_router
from keel.posts.router import router as posts_router
from keel.replication.router import router as replication_router
from keel.search.embeddings import embedder_for, worker_for
from keel.search.router import router as search_router
from keel.users.router import router as users_router
from keel.users.service import ensure_first_superuser

log = structlog.get_logger(__name__)
API_PREFIX = "/api/v1"
POOL_METRICS_INTERVAL_S = 5.0


def build_middleware(settings: Settings) -> list[Middleware]:
    """The stack, outermost first. Request context is outermost so every reply has an id."""
    stack = [
        Middleware(RequestContextMiddleware),
        Middleware(SecurityHeadersMiddleware, force_hsts=settings.hsts),
    ]
    if settings.is_production:
        stack.append(Middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts))
    if settings.cors_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_credentials=settings.cors_allow_credentials,  # never with "*"
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                expose_headers=["X-Request-ID", "X-Process-Time"],
            )
        )
    bulk_caps = {
        f"{API_PREFIX}/admin/import/json": settings.import_json_max_bytes,  # parsed whole
        f"{API_PREFIX}/admin/import": settings.import_max_bytes,  # streamed
        f"{API_PREFIX}/documents/bulk": settings.documents_bulk_max_bytes,  # streamed
    }
    stack.append(Middleware(BodyReadTimeoutMiddleware, timeout=settings.body_read_timeout_seconds))
    stack.append(
        Middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes, overrides=bulk_caps)
    )
    stack.append(Middleware(JsonDepthLimitMiddleware, max_depth=settings.max_json_depth))
    stack.append(Middleware(GZipWhenAcceptedMiddleware, minimum_size=1000))
    return stack


def api_router() -> APIRouter:
    """Every domain's router, mounted under /api/v1, behind the API-wide rate limit."""
    router = APIRouter(prefix=API_PREFIX, dependencies=[Depends(enforce_api_rate_limit)])
    # Routes match in order: the hot reads' routers come first.
    router.include_router(posts_router)
    router.include_router(users_router)
    router.include_router(auth_router)
    router.include_router(account_router)
    router.include_router(search_router)
    router.include_router(documents_router)
    router.include_router(insight_router)
    router.include_router(insight_db_router)
    router.include_router(bulk_router)
    router.include_router(jobs_router)
    router.include_router(replication_router)
    router.include_router(orgs_router)
    return router


async def _start_services(
    app: FastAPI, settings: Settings, db: Database, redis: Redis | None
) -> Services:
    """The per-process services, on `app.state.services`; the first superuser if configured."""
    await db.open()
    services = app.state.services = Services.build(
        settings, db, redis=redis, embedder=embedder_for(settings), load_viewer=load_viewer
    )
    async with db.sessionmaker() as session:
        if await ensure_first_superuser(session, settings, services.passwords):
            await session.commit()
    return services


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    embedded: EmbeddedPostgres | None = None
    url = settings.database_url
    if url is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        url = await asyncio.to_thread(embedded.ensure_running)
    db = create_database(settings, url, replica_urls(settings, embedded))
    tracing.instrument_database(db.engine)
    redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
    pool_task: asyncio.Task[None] | None = None
    worker_task: asyncio.Task[None] | None = None
    worker_stop = asyncio.Event()
    try:
        server_version = await verify_server(db.engine)
        if settings.auto_migrate:
            await asyncio.to_thread(runner.upgrade, url)
        app.state.db, app.state.redis = db, redis
        services = await _start_services(app, settings, db, redis)
        pool_task = asyncio.create_task(_publish_pool_metrics(app))
        if settings.worker_enabled:
            worker = worker_for(settings, db, services.embedder)
            worker.handlers.update(insight_snapshots.handlers(settings))
            async with db.sessionmaker() as session, session.begin():
                await insight_snapshots.ensure_scheduled(session, settings)
            worker_task = asyncio.create_task(worker.run(worker_stop))
        log.info("startup", environment=settings.environment, postgres=server_version)
        yield
    finally:
        if worker_task is not None:
            # Prompt: a job mid-computation is dropped, and every claim not finished goes
            # back to the queue now, not when its lease runs out.
            worker_stop.set()
            await worker_task
        if pool_task is not None:
            pool_task.cancel()
        if getattr(app.state, "services", None) is not None:
            await app.state.services.ratelimiter.close()
        if redis is not None:
            await redis.aclose()
        await db.dispose()
        metrics.mark_worker_exit()
        if embedded is not None:
            await asyncio.to_thread(embedded.release)
        log.info("shutdown")


async def _publish_pool_metrics(app: FastAPI) -> None:
    while True:
        metrics.record_pool_status(app.state.db.pool_status())
        await asyncio.sleep(POOL_METRICS_INTERVAL_S)


def create_app(settings: Settings | None = None, *, middleware: bool = True) -> FastAPI:
    """Build the app. `middleware=False` exists for the middleware-overhead benchmark."""
    settings = settings or get_settings()
    configure_logging(settings)
    tracing.configure()  # only with OTEL_EXPORTER_OTLP_ENDPOINT set
    app = FastAPI(
        title=settings.app_name,
        version=version("keel"),
        summary="Accounts, posts, search and database insight on PostgreSQL 17+.",
        lifespan=lifespan,
        docs_url=None,  # served offline by install_offline_docs, below
        redoc_url=None,
        openapi_url="/openapi.json" if settings.serves_docs else None,
        redirect_slashes=False,
        middleware=build_middleware(settings) if middleware else None,
    )
    if middleware:
        app.add_middleware(
            ReadRoutingMiddleware, token_seconds=settings.replica_read_your_writes_seconds
        )
    app.state.settings = settings
    app.state.redis = None
    app.state.heavy_operations = HeavyOperations(
        per_user=settings.heavy_operations_per_user,
        per_process=settings.heavy_operations_per_process,
    )
    install_error_handlers(app)
    tracing.instrument_app(app)
    install_problem_openapi(app)
    if settings.serves_docs:
        install_offline_docs(app, "/openapi.json")
    app.include_router(api_router())  # first: the API's hot routes match soonest
    app.include_router(health_router)
    app.mount("/admin/db/static", dashboard_static, name="dashboard-static")
    app.include_router(dashboard_router)
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    endpoint = metrics.guarded_endpoint(token, required=settings.is_production)
    app.add_route("/metrics", endpoint, include_in_schema=False)
    app.state.metrics_hooks = [DbMetrics(settings).hook] if settings.insight_metrics_enabled else []
    return app
