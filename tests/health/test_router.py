"""Liveness, startup and readiness, each failing for real when its dependency does."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from httpx import AsyncClient

from keel.migrations.runner import head_revision
from tests.conftest import (
    MakeDatabase,
    asyncpg_dsn,
    make_settings,
    redis_test_url,
    running,
    url_for_database,
)

REDIS_URL = redis_test_url()
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"


async def test_liveness(client: AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_startup_reports_migrations_at_head(client: AsyncClient) -> None:
    response = await client.get("/health/startup")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "revision": head_revision()}


async def test_startup_is_503_until_migrated(make_database: MakeDatabase, tmp_path: Path) -> None:
    url = await make_database(migrated=False)
    async with running(make_settings(url, tmp_path)) as http:
        response = await http.get("/health/startup")
    assert response.status_code == 503
    body = response.json()
    assert body["type"] == "urn:keel:problem:migrations-pending"
    assert body["current"] is None
    assert body["head"] == head_revision()


async def test_ready_checks_database_and_disk(client: AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert set(checks) == {"database", "disk"}
    assert checks["database"]["status"] == "ok"
    assert checks["disk"]["status"] == "ok"


async def test_ready_checks_redis_when_configured(database_url: str, tmp_path: Path) -> None:
    async with running(make_settings(database_url, tmp_path, redis_url=REDIS_URL)) as http:
        response = await http.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["checks"]["redis"]["status"] == "ok"


async def test_ready_is_degraded_not_failed_while_redis_is_down(
    database_url: str, tmp_path: Path
) -> None:
    # Nothing listens on the port: the limiter counts in memory and the API keeps serving.
    settings = make_settings(database_url, tmp_path, redis_url=DEAD_REDIS_URL)
    async with running(settings) as http:
        response = await http.get("/health/ready")
        api = await http.get("/api/v1/users/me")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["redis"]["status"] == "degraded"
    assert body["checks"]["redis"]["detail"]
    assert body["checks"]["database"]["status"] == "ok"
    assert api.status_code == 401  # rate-limited and answered, not a 5xx


async def test_ready_fails_when_the_database_is_gone(
    make_database: MakeDatabase, database_url: str, tmp_path: Path
) -> None:
    url = await make_database(migrated=True)
    async with running(make_settings(url, tmp_path)) as http:
        assert (await http.get("/health/ready")).status_code == 200
        admin = await asyncpg.connect(asyncpg_dsn(url_for_database(database_url, "postgres")))
        try:
            name = url.rsplit("/", 1)[1].split("?")[0]
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        response = await http.get("/health/ready")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["status"] == "fail"
    assert checks["database"]["detail"]


async def test_ready_fails_when_disk_is_short(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, min_free_disk_mb=10**9)
    async with running(settings) as http:
        response = await http.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["disk"]["status"] == "fail"
