"""Database insight API: `/api/v1/admin/db/*` (administrators only).

Read-only reports in one bounded transaction each; the only actions are cancel and
terminate of a backend of Keel's own database (audited), the pg_stat_statements reset,
and queueing a snapshot.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query

from keel.core.db import TransactionDep
from keel.core.deps import SIGNED_IN_ERRORS, AdminViewer, ServicesDep
from keel.core.routing import KeelRouter, Responses
from keel.insight.pg import advice, reports, service, snapshots
from keel.insight.pg.schemas import (
    ActivityReport,
    IndexReport,
    IoReport,
    MaintenanceReport,
    Overview,
    QueriesReport,
    QueryHistory,
    QueryOrder,
    ReplicationReport,
    SettingsReport,
    SignalAction,
    SignalResult,
    SpaceReport,
)
from keel.insight.pg.service import InsightConfig

router = KeelRouter(prefix="/admin/db", tags=["database insight"])

ERRORS: Responses = {
    **SIGNED_IN_ERRORS,
    403: {"description": "Administrators only, or the database role lacks a privilege"},
    503: {"description": "Statement timeout, database down, or a server older than 17"},
}
SIGNAL_ERRORS: Responses = {
    **ERRORS,
    404: {"description": "No client backend with that pid in Keel's database"},
    409: {"description": "The pid is the backend serving this request"},
}
Pid = Annotated[int, Path(ge=1, le=2**31 - 1, description="Backend process id.")]


def _config(services: ServicesDep) -> InsightConfig:
    return InsightConfig.from_settings(services.settings)


@router.get("/overview", response_model=Overview, responses=ERRORS, summary="Health checks")
async def overview(session: TransactionDep, _: AdminViewer, services: ServicesDep) -> Any:
    return await service.overview(session, _config(services))


@router.get("/queries", response_model=QueriesReport, responses=ERRORS, summary="Top statements")
async def queries(
    session: TransactionDep,
    _: AdminViewer,
    services: ServicesDep,
    order: QueryOrder = QueryOrder.total_time,
    limit: Annotated[int, Query(ge=1, le=200)] = 25,
) -> Any:
    return await service.queries(session, _config(services), order, limit)


@router.get(
    "/queries/{queryid}/history",
    response_model=QueryHistory,
    responses=ERRORS,
    summary="One statement's calls and mean time per snapshot",
)
async def query_history(
    queryid: Annotated[int, Path(ge=-(2**63), le=2**63 - 1)],
    session: TransactionDep,
    _: AdminViewer,
    services: ServicesDep,
    days: Annotated[int, Query(ge=1, le=3660)] = 7,
) -> Any:
    return await service.query_history(session, _config(services), queryid, days)


@router.post(
    "/queries/reset", status_code=204, responses=ERRORS, summary="Reset pg_stat_statements"
)
async def reset_queries(session: TransactionDep, admin: AdminViewer, services: ServicesDep) -> None:
    await service.reset_query_stats(session, _config(services), admin)


@router.post(
    "/snapshots", status_code=202, responses=ERRORS, summary="Queue a statistics snapshot now"
)
async def request_snapshot(session: TransactionDep, _: AdminViewer) -> dict[str, str]:
    return {"job_id": str(await snapshots.request_snapshot(session))}


@router.get("/activity", response_model=ActivityReport, responses=ERRORS, summary="Live backends")
async def activity(session: TransactionDep, _: AdminViewer, services: ServicesDep) -> Any:
    return await service.activity(session, _config(services))


@router.post(
    "/activity/{pid}/{action}",
    response_model=SignalResult,
    responses=SIGNAL_ERRORS,
    summary="Cancel the query of, or terminate, a backend of Keel's database (audited)",
)
async def signal_backend(
    pid: Pid,
    action: SignalAction,
    session: TransactionDep,
    admin: AdminViewer,
    services: ServicesDep,
) -> Any:
    return await service.signal(session, _config(services), pid, action, admin)


@router.get("/space", response_model=SpaceReport, responses=ERRORS, summary="Sizes and bloat")
async def space(session: TransactionDep, _: AdminViewer, services: ServicesDep) -> Any:
    return await reports.space(session, _config(services))


@router.get("/indexes", response_model=IndexReport, responses=ERRORS, summary="Index advice")
async def indexes(session: TransactionDep, _: AdminViewer, services: ServicesDep) -> Any:
    return await reports.index_report(session, _config(services))


@router.get("/io", response_model=IoReport, responses=ERRORS, summary="pg_stat_io")
async def io(session: TransactionDep, _: AdminViewer, services: ServicesDep) -> Any:
    return await reports.io(session, _config(services))


@router.get(
    "/maintenance", response_model=MaintenanceReport, responses=ERRORS, summary="Vacuum state"
)
async def maintenance(session: TransactionDep, _: AdminViewer, services: ServicesDep) -> Any:
    return await reports.maintenance(session, _config(services))


@router.get(
    "/replication", response_model=ReplicationReport, responses=ERRORS, summary="Slots, replicas"
)
async def replication(session: TransactionDep, _: AdminViewer, services: ServicesDep) -> Any:
    return await reports.replication(session, _config(services))


@router.get("/settings", response_model=SettingsReport, responses=ERRORS, summary="Settings advice")
async def settings_advice(session: TransactionDep, _: AdminViewer, services: ServicesDep) -> Any:
    return await advice.settings_report(session, _config(services), services.settings)
