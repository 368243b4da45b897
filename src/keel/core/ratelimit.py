"""Rate limits: one Redis round trip per request, shared by all workers; memory otherwise.

Strategy: **moving window**. Each hit is a timestamp, and a request is allowed
while fewer than N hits fall in the last window. Unlike a fixed window it has
no boundary burst (a fixed "5/15 minutes" lets 10 attempts through around a
window edge), and refused hits do not extend the lockout, so a client that backs
off as told by `Retry-After` gets in.

In Redis a window is a sorted set of hit times, and one Lua script (`WINDOW_SCRIPT`)
drops expired hits, counts, records the hit when allowed and returns the window's
state: one round trip answers both "may it pass?" and the RateLimit headers. The
script reads the clock from Redis (`TIME`), so every worker and host shares one clock.

Redis going away at run time: limiting neither fails open nor turns into 500s.
The first storage error logs `ratelimit.redis_unavailable` once, and the
limiter switches to a per-process in-memory window (the `limits` library), so
every worker still enforces the limit on its own (degraded: the effective limit
is N per worker). After `redis_retry_seconds` one request probes Redis again;
when it answers, `ratelimit.redis_restored` is logged and Redis is used again.
Redis calls have 0.5 s connect/read timeouts and a single immediate retry (to
get past a stale pooled connection after a Redis restart), so a dead Redis never
stalls a request for long.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Final, Literal

import limits
import structlog
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from keel.core.errors import TooManyRequests

if TYPE_CHECKING:
    from keel.config import Settings

Backend = Literal["redis", "memory"]

# reset() deletes by prefix, so rate limits get a namespace of their own under "keel:".
KEY_PREFIX: Final = "keel:ratelimit"
REDIS_TIMEOUT_SECONDS: Final = 0.5

# KEYS[1]: the window. ARGV: limit, window in ms, 1 to count a hit (0 to peek), a unique id.
# Returns {allowed (0/1), hits in the window, ms when the oldest hit leaves it}.
WINDOW_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
local allowed = 0
if used < limit then
  allowed = 1
  if ARGV[3] == '1' then
    redis.call('ZADD', KEYS[1], now, now .. ':' .. ARGV[4])
    redis.call('PEXPIRE', KEYS[1], window)
    used = used + 1
  end
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local reset = now + window
if oldest[2] then reset = tonumber(oldest[2]) + window end
return {allowed, used, reset}
"""

# OSError covers the builtin ConnectionError and TimeoutError that can escape the client.
_STORAGE_ERRORS: Final = (RedisError, StorageError, OSError)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    """The outcome of one hit or check against a limit."""

    allowed: bool
    limit: int
    remaining: int
    reset_at: float  # epoch seconds when the oldest hit leaves the window
    retry_after: int  # seconds; >= 1 when not allowed, else 0


@lru_cache(maxsize=256)
def parse_limit(limit: str) -> limits.RateLimitItem:
    """Parse a `limits` string ("5/15 minutes", "600 per minute"); cached."""
    return limits.parse(limit)


class RateLimiter:
    """Moving-window rate limiter over Redis, falling back to memory when Redis fails."""

    def __init__(
        self,
        redis_url: str | None,
        *,
        enabled: bool = True,
        redis_retry_seconds: float = 30.0,
        key_prefix: str = KEY_PREFIX,
    ) -> None:
        if redis_retry_seconds < 0:
            raise ValueError("redis_retry_seconds must not be negative")
        self._enabled = enabled
        self._retry_seconds = redis_retry_seconds
        self._memory = MemoryStorage()
        self._memory_strategy = MovingWindowRateLimiter(self._memory)
        self._key_prefix = key_prefix
        self._pool: ConnectionPool | None = None
        self._redis: Redis | None = None
        self._window: AsyncScript | None = None
        if redis_url:
            self._pool = ConnectionPool.from_url(
                redis_url,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), 1),
            )
            self._redis = Redis(connection_pool=self._pool)
            self._window = self._redis.register_script(WINDOW_SCRIPT)
        self._degraded_since: float | None = None
        self._next_probe = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        """Build the limiter from `REDIS_URL` and `RATE_LIMIT_ENABLED`."""
        return cls(settings.redis_url, enabled=settings.rate_limit_enabled)

    @property
    def backend(self) -> Backend:
        """The storage hits currently go to."""
        return "redis" if self._redis is not None and self._degraded_since is None else "memory"

    @property
    def enabled(self) -> bool:
        return self._enabled

    async def hit(self, limit: str, *identifiers: str) -> RateLimitResult:
        """Count one request against `limit` for `identifiers` and say whether it may pass.

        Name the scope in the first identifier (`"login", email`): the same limit
        string with the same identifiers shares one counter.
        """
        return await self._consult(limit, identifiers, count=True)

    async def check(self, limit: str, *identifiers: str) -> RateLimitResult:
        """Like `hit`, without counting: would a request pass now?"""
        return await self._consult(limit, identifiers, count=False)

    async def clear(self, limit: str, *identifiers: str) -> None:
        """Forget the hits counted against `limit` for `identifiers` (e.g. after a success)."""
        item = parse_limit(limit)
        await self._memory_strategy.clear(item, *identifiers)
        if self._redis is not None and self._may_use_redis():
            try:
                await self._redis.delete(self._redis_key(item, identifiers))
            except _STORAGE_ERRORS as exc:
                self._mark_redis_down(exc)
            else:
                self._mark_redis_up()

    async def reset(self) -> None:
        """Forget every hit under this limiter's key prefix (for tests)."""
        await self._memory.reset()
        if self._redis is not None:
            keys = [key async for key in self._redis.scan_iter(f"{self._key_prefix}:*")]
            if keys:
                await self._redis.delete(*keys)

    async def close(self) -> None:
        """Release Redis connections."""
        if self._pool is not None:
            await self._pool.aclose()

    async def _consult(
        self, limit: str, identifiers: tuple[str, ...], *, count: bool
    ) -> RateLimitResult:
        item = parse_limit(limit)
        if not self._enabled:
            return _unlimited(item)
        if self._window is not None and self._may_use_redis():
            try:
                allowed, used, reset_ms = await self._window(
                    keys=[self._redis_key(item, identifiers)],
                    args=[item.amount, item.get_expiry() * 1000, int(count), os.urandom(6).hex()],
                )
            except _STORAGE_ERRORS as exc:
                self._mark_redis_down(exc)
            else:
                self._mark_redis_up()
                return _result(item, bool(allowed), item.amount - int(used), int(reset_ms) / 1000)
        strategy = self._memory_strategy
        if count:
            allowed = await strategy.hit(item, *identifiers)
        else:
            allowed = await strategy.test(item, *identifiers)
        stats = await strategy.get_window_stats(item, *identifiers)
        return _result(item, allowed, stats.remaining, stats.reset_time)

    def _redis_key(self, item: limits.RateLimitItem, identifiers: tuple[str, ...]) -> str:
        return f"{self._key_prefix}:{item.key_for(*identifiers)}"

    def _may_use_redis(self) -> bool:
        if self._degraded_since is None:
            return True
        now = time.monotonic()
        if now < self._next_probe:
            return False
        # Claim the probe so concurrent requests stay on memory instead of piling onto Redis.
        self._next_probe = now + self._retry_seconds
        return True

    def _mark_redis_down(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._next_probe = now + self._retry_seconds
        if self._degraded_since is None:
            self._degraded_since = now
            log.warning(
                "ratelimit.redis_unavailable",
                error=type(exc).__name__,
                message=str(exc),
                retry_seconds=self._retry_seconds,
            )

    def _mark_redis_up(self) -> None:
        if self._degraded_since is not None:
            log.info(
                "ratelimit.redis_restored",
                degraded_seconds=round(time.monotonic() - self._degraded_since, 1),
            )
            self._degraded_since = None


def too_many_requests(result: RateLimitResult) -> TooManyRequests:
    """The 429 to raise for a refused hit, with `Retry-After` and RateLimit headers."""
    retry_after = max(1, result.retry_after)
    return TooManyRequests(
        f"Too many requests; retry in {retry_after} seconds.",
        headers={"Retry-After": str(retry_after), **rate_limit_headers(result)},
        limit=result.limit,
        retry_after=retry_after,
    )


def rate_limit_headers(result: RateLimitResult) -> dict[str, str]:
    """RateLimit-Limit/-Remaining/-Reset (IETF httpapi draft); Reset is in seconds."""
    return {
        "RateLimit-Limit": str(result.limit),
        "RateLimit-Remaining": str(result.remaining),
        "RateLimit-Reset": str(max(0, math.ceil(result.reset_at - time.time()))),
    }


def _result(
    item: limits.RateLimitItem, allowed: bool, remaining: int, reset_at: float
) -> RateLimitResult:
    retry_after = 0 if allowed else max(1, math.ceil(reset_at - time.time()))
    return RateLimitResult(
        allowed=allowed,
        limit=item.amount,
        remaining=max(0, remaining),
        reset_at=reset_at,
        retry_after=retry_after,
    )


def _unlimited(item: limits.RateLimitItem) -> RateLimitResult:
    return RateLimitResult(
        allowed=True, limit=item.amount, remaining=item.amount, reset_at=time.time(), retry_after=0
    )
