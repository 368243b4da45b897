"""API-wide rate limits through the app, in memory and shared through the real Redis."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import make_settings, redis_test_url, running
from tests.users.factory import signed_in

REDIS_URL = redis_test_url()
PUBLIC = "/api/v1/auth/verify/request"  # anonymous, cheap, and answers 202 either way


async def _hit_public(http: AsyncClient) -> int:
    response = await http.post(PUBLIC, json={"email": "someone@example.com"})
    return response.status_code


async def test_anonymous_requests_are_limited_per_ip(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, rate_limit_anonymous="3/minute")
    async with running(settings) as http:
        statuses = [await _hit_public(http) for _ in range(4)]
        limited = await http.post(PUBLIC, json={"email": "someone@example.com"})
    assert statuses == [202, 202, 202, 429]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["type"] == "urn:keel:problem:rate-limited"


async def test_successful_responses_carry_rate_limit_headers(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, auth = await signed_in(app, db_session, client)
    response = await client.get("/api/v1/users/me", headers=auth)
    assert response.headers["ratelimit-limit"] == "600"
    assert int(response.headers["ratelimit-remaining"]) < 600


@pytest.fixture
async def redis_db() -> Redis:
    redis = Redis.from_url(REDIS_URL)
    await redis.flushdb()
    return redis


async def test_workers_share_limits_through_redis(
    database_url: str, tmp_path: Path, redis_db: Redis
) -> None:
    # Two apps stand in for two worker processes; Redis is the only thing they share.
    settings = make_settings(
        database_url, tmp_path, rate_limit_anonymous="3/minute", redis_url=REDIS_URL
    )
    async with running(settings) as first, running(settings) as second:
        statuses = [await _hit_public(first), await _hit_public(second), await _hit_public(first)]
        statuses.append(await _hit_public(second))
    assert statuses == [202, 202, 202, 429]
    keys = await redis_db.keys("keel:ratelimit:*")
    assert keys
    await redis_db.flushdb()
    await redis_db.aclose()


async def test_memory_limits_are_per_process(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, rate_limit_anonymous="2/minute")
    async with running(settings) as first, running(settings) as second:
        statuses = [await _hit_public(first) for _ in range(2)]
        statuses += [await _hit_public(second) for _ in range(2)]
    assert statuses == [202, 202, 202, 202]


async def test_login_limit_counts_per_ip_across_accounts(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, rate_limit_login_ip="5/15 minutes")
    async with running(settings) as http:
        statuses = []
        for _ in range(6):
            response = await http.post(
                "/api/v1/auth/login",
                data={"username": f"ghost-{uuid.uuid4().hex[:8]}", "password": "whatever1"},
            )
            statuses.append(response.status_code)
    assert statuses == [401] * 5 + [429]
