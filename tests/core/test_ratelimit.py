"""Rate limits against memory and a real Redis, including Redis dying mid-run."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import RedisError
from structlog.testing import capture_logs

from keel.config import Settings
from keel.core import ratelimit
from keel.core.errors import install_error_handlers
from keel.core.ratelimit import (
    Backend,
    RateLimiter,
    RateLimitResult,
    rate_limit_headers,
    too_many_requests,
)
from tests.processes import free_port

SHARED_REDIS = "redis://127.0.0.1:6379/0"
LIMIT = "3/minute"


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex}"


async def redis_answers(url: str) -> bool:
    client = Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


@pytest.fixture
async def redis_url() -> str:
    if not await redis_answers(SHARED_REDIS):
        pytest.skip("no Redis on 127.0.0.1:6379")
    return SHARED_REDIS


@pytest.fixture
async def key_prefix(redis_url: str) -> AsyncIterator[str]:
    """A prefix of this test's own, and its keys deleted afterwards."""
    prefix = unique("keel-test")
    yield prefix
    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def memory_limiter() -> AsyncIterator[RateLimiter]:
    limiter = RateLimiter(None)
    yield limiter
    await limiter.close()


@pytest.fixture
async def redis_limiter(redis_url: str, key_prefix: str) -> AsyncIterator[RateLimiter]:
    limiter = RateLimiter(redis_url, key_prefix=key_prefix)
    yield limiter
    await limiter.close()


async def hit_until_refused(limiter: RateLimiter, *identifiers: str) -> list[RateLimitResult]:
    return [await limiter.hit(LIMIT, *identifiers) for _ in range(4)]


def assert_three_then_refused(results: list[RateLimitResult]) -> None:
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.remaining for r in results] == [2, 1, 0, 0]
    assert all(r.limit == 3 for r in results)
    assert [r.retry_after for r in results[:3]] == [0, 0, 0]
    refused = results[3]
    assert 1 <= refused.retry_after <= 60
    assert refused.reset_at > time.time()


async def test_memory_limiter_refuses_after_the_limit(memory_limiter: RateLimiter) -> None:
    assert memory_limiter.backend == "memory"
    assert_three_then_refused(await hit_until_refused(memory_limiter, "login", "a@example.com"))


async def test_limits_are_per_identifier(memory_limiter: RateLimiter) -> None:
    await hit_until_refused(memory_limiter, "login", "a@example.com")

    other = await memory_limiter.hit(LIMIT, "login", "b@example.com")

    assert other.allowed
    assert other.remaining == 2


async def test_check_does_not_consume(memory_limiter: RateLimiter) -> None:
    for _ in range(5):
        peek = await memory_limiter.check(LIMIT, "scope", "who")
        assert peek.allowed
        assert peek.remaining == 3
    await hit_until_refused(memory_limiter, "scope", "who")
    blocked = await memory_limiter.check(LIMIT, "scope", "who")
    assert not blocked.allowed
    assert blocked.retry_after >= 1


async def test_reset_forgets_hits(memory_limiter: RateLimiter) -> None:
    await hit_until_refused(memory_limiter, "scope", "who")
    await memory_limiter.reset()
    assert (await memory_limiter.hit(LIMIT, "scope", "who")).allowed


async def test_redis_limiter_refuses_after_the_limit(redis_limiter: RateLimiter) -> None:
    assert redis_limiter.backend == "redis"
    assert_three_then_refused(await hit_until_refused(redis_limiter, "login", "a@example.com"))
    assert redis_limiter.backend == "redis"


async def test_redis_check_does_not_consume(redis_limiter: RateLimiter) -> None:
    assert (await redis_limiter.check(LIMIT, "scope", "who")).remaining == 3
    await redis_limiter.hit(LIMIT, "scope", "who")
    assert (await redis_limiter.check(LIMIT, "scope", "who")).remaining == 2


async def test_two_redis_limiters_share_counts(redis_url: str, key_prefix: str) -> None:
    worker_a = RateLimiter(redis_url, key_prefix=key_prefix)
    worker_b = RateLimiter(redis_url, key_prefix=key_prefix)
    try:
        results = [
            await worker_a.hit(LIMIT, "login", "x"),
            await worker_b.hit(LIMIT, "login", "x"),
            await worker_a.hit(LIMIT, "login", "x"),
            await worker_b.hit(LIMIT, "login", "x"),
        ]
    finally:
        await worker_a.close()
        await worker_b.close()
    assert_three_then_refused(results)


async def test_two_memory_limiters_do_not_share_counts() -> None:
    worker_a, worker_b = RateLimiter(None), RateLimiter(None)
    for _ in range(3):
        await worker_a.hit(LIMIT, "login", "x")

    assert not (await worker_a.hit(LIMIT, "login", "x")).allowed
    assert (await worker_b.hit(LIMIT, "login", "x")).remaining == 2


async def test_keys_carry_the_keel_prefix_by_default(redis_url: str) -> None:
    identifier = unique("prefix-check")
    limiter = RateLimiter(redis_url)
    client = Redis.from_url(redis_url)
    try:
        await limiter.hit(LIMIT, "scope", identifier)
        keys = [key async for key in client.scan_iter(match=f"*{identifier}*")]
        assert keys
        assert all(key.startswith(b"keel:ratelimit:") for key in keys)
    finally:
        keys = [key async for key in client.scan_iter(match=f"keel:*{identifier}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await limiter.close()


async def test_reset_clears_only_this_prefix(redis_url: str, key_prefix: str) -> None:
    limiter = RateLimiter(redis_url, key_prefix=key_prefix)
    bystander = RateLimiter(redis_url, key_prefix=key_prefix + "-bystander")
    try:
        await hit_until_refused(limiter, "scope", "who")
        await bystander.hit(LIMIT, "scope", "who")
        await limiter.reset()
        assert (await limiter.hit(LIMIT, "scope", "who")).remaining == 2
        assert (await bystander.check(LIMIT, "scope", "who")).remaining == 2
    finally:
        await bystander.reset()
        await bystander.close()
        await limiter.close()


async def test_disabled_limiter_always_allows() -> None:
    # A dead Redis URL too: a disabled limiter must not even try to reach it.
    dead_redis = "redis://127.0.0.1:1/0"
    for limiter in (RateLimiter(None, enabled=False), RateLimiter(dead_redis, enabled=False)):
        results = [await limiter.hit("1/hour", "login", "x") for _ in range(20)]
        assert all(r.allowed and r.remaining == 1 and r.retry_after == 0 for r in results)
        assert (await limiter.check("1/hour", "login", "x")).allowed
        await limiter.close()


def test_from_settings_follows_redis_url_and_enabled() -> None:
    with_redis = RateLimiter.from_settings(
        Settings(_env_file=None, environment="testing", redis_url=SHARED_REDIS)
    )
    without = RateLimiter.from_settings(
        Settings(_env_file=None, environment="testing", redis_url=None, rate_limit_enabled=False)
    )
    assert with_redis.backend == "redis"
    assert without.backend == "memory"
    assert not without.enabled


async def test_bad_limit_strings_are_rejected(memory_limiter: RateLimiter) -> None:
    with pytest.raises(ValueError, match="couldn't parse"):
        await memory_limiter.hit("five per fortnight", "x")


def test_too_many_requests_is_a_429_with_retry_after() -> None:
    refused = RateLimitResult(
        allowed=False, limit=5, remaining=0, reset_at=time.time() + 42, retry_after=42
    )

    error = too_many_requests(refused)

    assert error.status_code == 429
    assert error.headers is not None
    assert error.headers["Retry-After"] == "42"
    assert error.headers["RateLimit-Limit"] == "5"
    assert error.headers["RateLimit-Remaining"] == "0"
    assert error.extensions == {"limit": 5, "retry_after": 42}


async def test_too_many_requests_renders_as_problem_json(memory_limiter: RateLimiter) -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/login")
    async def login() -> dict[str, str]:
        result = await memory_limiter.hit("1/minute", "login", "client")
        if not result.allowed:
            raise too_many_requests(result)
        return {"status": "ok"}

    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        first = await client.post("/login")
        second = await client.post("/login")

    assert first.status_code == 200
    assert second.status_code == 429
    assert second.headers["content-type"] == "application/problem+json"
    assert int(second.headers["retry-after"]) >= 1
    body = second.json()
    assert body["status"] == 429
    assert body["limit"] == 1
    assert body["retry_after"] == int(second.headers["retry-after"])


def test_rate_limit_headers_for_an_allowed_request() -> None:
    allowed = RateLimitResult(
        allowed=True, limit=600, remaining=599, reset_at=time.time() + 59.2, retry_after=0
    )
    headers = rate_limit_headers(allowed)
    assert headers["RateLimit-Limit"] == "600"
    assert headers["RateLimit-Remaining"] == "599"
    assert 59 <= int(headers["RateLimit-Reset"]) <= 60


# --- Redis dying mid-run ------------------------------------------------------------


class PrivateRedis:
    """A throwaway redis-server this test may kill and restart."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary, self.port = binary, port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            self.binary,
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not await redis_answers(self.url):
            if time.monotonic() > deadline or self.process.returncode is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            await asyncio.sleep(0.05)

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self.process = None


@pytest.fixture
async def private_redis() -> AsyncIterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(binary, free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


async def test_redis_dying_mid_run_falls_back_to_memory_and_recovers(
    private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    with capture_logs() as logs:
        # A fresh logger, so an earlier cached structlog configuration can't bypass capture.
        monkeypatch.setattr(ratelimit, "log", structlog.get_logger(ratelimit.__name__))
        limiter = RateLimiter(private_redis.url, redis_retry_seconds=0.2)
        try:
            await _run_outage(limiter, private_redis)
        finally:
            await limiter.close()

    events = [entry["event"] for entry in logs]
    assert events.count("ratelimit.redis_unavailable") == 1
    assert events.count("ratelimit.redis_restored") == 1
    warning = next(e for e in logs if e["event"] == "ratelimit.redis_unavailable")
    assert warning["log_level"] == "warning"


def backend_of(limiter: RateLimiter) -> Backend:
    # A call, not the property, so mypy doesn't narrow it across the outage.
    return limiter.backend


async def _run_outage(limiter: RateLimiter, server: PrivateRedis) -> None:
    assert (await limiter.hit(LIMIT, "login", "victim")).remaining == 2
    assert backend_of(limiter) == "redis"

    await server.kill()

    # Memory fallback: no exception, and the limit still bites.
    during = [await limiter.hit(LIMIT, "login", "victim") for _ in range(4)]
    assert backend_of(limiter) == "memory"
    assert [r.allowed for r in during] == [True, True, True, False]
    assert during[-1].retry_after >= 1

    # Further failed probes while Redis stays down log nothing new.
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:
        assert not (await limiter.hit(LIMIT, "login", "victim")).allowed
        await asyncio.sleep(0.05)
    assert backend_of(limiter) == "memory"

    await server.start()
    probe = unique("after-restart")
    deadline = time.monotonic() + 10
    while backend_of(limiter) != "redis":
        assert time.monotonic() < deadline, "limiter never went back to Redis"
        await limiter.hit(LIMIT, "probe", probe)
        await asyncio.sleep(0.05)

    # Hits land in the restarted Redis again.
    await limiter.hit(LIMIT, "login", "after")
    client = Redis.from_url(server.url)
    try:
        assert [key async for key in client.scan_iter(match="keel:*after*")]
    finally:
        await client.aclose()


async def test_a_hit_is_one_redis_round_trip(
    private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Count and window state come back from one script call: one request to Redis."""
    sent: list[object] = []
    original = Connection.send_packed_command

    async def counting(self: Connection, command: Any, check_health: bool = True) -> None:
        sent.append(command)
        await original(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", counting)
    limiter = RateLimiter(private_redis.url)
    try:
        await limiter.hit("5/minute", "probe", "warm-up")  # connects, loads the script once
        sent.clear()
        result = await limiter.hit("5/minute", "probe", "k")
        assert len(sent) == 1
        assert (result.allowed, result.remaining, result.limit) == (True, 4, 5)
        for _ in range(4):
            await limiter.hit("5/minute", "probe", "k")
        refused = await limiter.hit("5/minute", "probe", "k")
        assert not refused.allowed
        assert refused.remaining == 0
        assert 1 <= refused.retry_after <= 60
        assert len(sent) == 6
    finally:
        await limiter.close()
