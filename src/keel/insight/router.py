"""Admin insight: `/api/v1/admin/stats/daily` and `/api/v1/admin/explain/{query_name}`."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import Query, Request

from keel.core.db import TransactionDep
from keel.core.deps import SIGNED_IN_ERRORS, AdminViewer, ServicesDep
from keel.core.routing import KeelRouter, Responses
from keel.insight import service
from keel.insight.schemas import DailyStatsReport, ExplainReport, IsoDate, QueryName
from keel.orgs.deps import resolve_actor

router = KeelRouter(prefix="/admin", tags=["admin"])

MAX_QUERY = 1000
ADMIN_ERRORS: Responses = {**SIGNED_IN_ERRORS, 403: {"description": "Administrators only"}}
BAD_RANGE: Responses = {
    422: {
        "description": "Dates not as YYYY-MM-DD, `end` before `start`, or a range longer "
        "than STATS_MAX_DAYS"
    }
}
BAD_QUERY: Responses = {422: {"description": "Unknown query name, or an invalid `q`"}}


@router.get(
    "/stats/daily",
    response_model=DailyStatsReport,
    responses={**ADMIN_ERRORS, **BAD_RANGE},
    summary="Signups, posts and active authors per UTC day (admins)",
)
async def daily_stats(
    session: TransactionDep,
    _: AdminViewer,
    services: ServicesDep,
    start: Annotated[IsoDate, Query(description="First UTC day, YYYY-MM-DD.")],
    end: Annotated[IsoDate, Query(description="Last UTC day (included), YYYY-MM-DD.")],
) -> Any:
    return await service.daily_stats(
        session,
        start,
        end,
        max_days=services.settings.stats_max_days,
        parallel_workers=services.settings.stats_parallel_workers,
    )


@router.get(
    "/explain/{query_name}",
    response_model=ExplainReport,
    responses={**ADMIN_ERRORS, **BAD_QUERY},
    summary="EXPLAIN ANALYZE one of the app's own queries in one organization (admins)",
)
async def explain_query(
    request: Request,
    query_name: QueryName,
    session: TransactionDep,
    admin: AdminViewer,
    services: ServicesDep,
    q: Annotated[
        str,
        Query(
            max_length=MAX_QUERY,
            pattern=r"^[^\x00]*[^\s\x00][^\x00]*$",
            description="Search terms for `post_search`, as `/search/posts` takes them.",
        ),
    ] = "postgres",
    org_id: Annotated[
        UUID | None,
        Query(description="The organization whose data the query reads (default: yours)."),
    ] = None,
) -> Any:
    # Every sampled query is tenant-scoped, as the app runs it: explain it in one tenant.
    actor = resolve_actor(request, admin, admin.user_id if org_id is None else org_id)
    return await service.explain_query(session, query_name, actor, services.settings, q=q)
