"""Readiness and startup checks: each returns a small, JSON-ready result."""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import text

from keel.core.db import Database
from keel.migrations.runner import database_revision, head_revision


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    latency_ms: float
    detail: str | None = None

    def as_dict(self, *, critical: bool = True) -> dict[str, Any]:
        """JSON-ready; a failing check that doesn't stop service reads "degraded"."""
        result = asdict(self)
        result["status"] = "ok" if self.ok else "fail" if critical else "degraded"
        del result["ok"]
        return {key: value for key, value in result.items() if value is not None}


async def _timed(probe: Any, limit_s: float) -> CheckResult:
    start = time.perf_counter()
    try:
        async with asyncio.timeout(limit_s):
            await probe
    except TimeoutError:
        return CheckResult(False, _ms(start), f"no answer within {limit_s:g}s")
    except Exception as exc:  # any failure is a failed check, reported by type only
        return CheckResult(False, _ms(start), type(exc).__name__)
    return CheckResult(True, _ms(start))


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


async def _select_one(db: Database) -> None:
    async with db.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def check_database(db: Database, limit_s: float) -> CheckResult:
    return await _timed(_select_one(db), limit_s)


async def check_redis(redis: Redis, limit_s: float) -> CheckResult:
    return await _timed(redis.ping(), limit_s)


def check_disk(path: Path, min_free_mb: int) -> CheckResult:
    start = time.perf_counter()
    target = path if path.exists() else Path.cwd()
    free_mb = shutil.disk_usage(target).free // (1024 * 1024)
    detail = f"{free_mb} MB free, {min_free_mb} MB required"
    return CheckResult(free_mb >= min_free_mb, _ms(start), detail)


async def migrations_at_head(db: Database) -> tuple[bool, str | None, str | None]:
    """Whether the database is at the newest migration: (done, current, head)."""
    async with db.engine.connect() as conn:
        current = await conn.run_sync(database_revision)
    head = head_revision()
    return current == head, current, head
