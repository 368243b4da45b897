"""Health endpoints: liveness, startup (migrations done) and readiness (dependencies up)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from keel.config import Settings
from keel.core.errors import problem_response, problem_type
from keel.health import checks

router = APIRouter(prefix="/health", tags=["health"])


@router.get("", summary="Liveness: the process is serving requests")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/startup",
    summary="Startup: migrations are applied",
    responses={503: {"description": "Migrations are not at head yet"}},
)
async def startup(request: Request) -> Any:
    state = request.app.state
    if getattr(state, "migrated", False):
        return {"status": "ok", "revision": state.migrated_revision}
    try:
        done, current, head = await checks.migrations_at_head(state.db)
    except Exception as exc:
        return problem_response(
            503, detail=f"Cannot read the migration state: {type(exc).__name__}."
        )
    if not done:
        return problem_response(
            503,
            detail="Migrations are not at head.",
            type_=problem_type("migrations-pending"),
            current=current,
            head=head,
        )
    state.migrated, state.migrated_revision = True, current
    return {"status": "ok", "revision": current}


# Checks whose failure slows or weakens the service but doesn't stop it: while Redis is
# down the rate limiter counts in memory, so pulling every instance would be worse.
DEGRADABLE = frozenset({"redis"})


@router.get(
    "/ready",
    summary="Readiness: database and disk; Redis (if configured) can only degrade it",
    responses={503: {"description": "A dependency is failing; see `checks`"}},
)
async def ready(request: Request) -> Any:
    settings: Settings = request.app.state.settings
    timeout = settings.ready_timeout_seconds
    probes = {"database": checks.check_database(request.app.state.db, timeout)}
    if request.app.state.redis is not None:
        probes["redis"] = checks.check_redis(request.app.state.redis, timeout)
    results = dict(zip(probes, await asyncio.gather(*probes.values()), strict=True))
    results["disk"] = checks.check_disk(settings.data_dir, settings.min_free_disk_mb)
    body = {
        name: result.as_dict(critical=name not in DEGRADABLE) for name, result in results.items()
    }
    if all(result.ok for name, result in results.items() if name not in DEGRADABLE):
        degraded = not all(result.ok for result in results.values())
        return JSONResponse({"status": "degraded" if degraded else "ok", "checks": body})
    return problem_response(
        503,
        detail="A dependency is not ready; see `checks`.",
        type_=problem_type("not-ready"),
        checks=body,
    )
