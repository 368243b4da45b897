"""Response shapes of `/api/v1/admin/db/*` (the dashboard and the CLI render the same)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

Rows = list[dict[str, Any]]


class Status(StrEnum):
    ok = "ok"
    warning = "warning"
    critical = "critical"

    @property
    def rank(self) -> int:
        return ("ok", "warning", "critical").index(self.value)


def worst(statuses: list[Status]) -> Status:
    return max(statuses, key=lambda status: status.rank, default=Status.ok)


class Check(BaseModel):
    name: str = Field(description="Stable identifier, e.g. `cache_hit_ratio`.")
    title: str
    status: Status
    value: float | None = Field(description="What was measured (null: nothing to measure).")
    unit: str = Field(description="Unit of `value` and of the thresholds.")
    threshold: str = Field(description="The thresholds applied, in words.")
    advice: str = Field(description="One sentence on what to do.")
    details: Rows = Field(default_factory=list, description="The offending objects, if any.")


class Overview(BaseModel):
    database: str
    server_version: str
    status: Status = Field(description="The worst status of all checks.")
    checks: list[Check]
    generated_at: datetime


class QueryOrder(StrEnum):
    total_time = "total_time"
    mean_time = "mean_time"
    calls = "calls"


class QueriesReport(BaseModel):
    available: bool = Field(description="pg_stat_statements is installed in this database.")
    order: QueryOrder
    queries: Rows = Field(description="`queryid` is text: 64 bits don't fit a JSON number.")
    snapshots: int = Field(description="History snapshots stored.")
    latest_snapshot: datetime | None


class HistoryPoint(BaseModel):
    captured_at: datetime
    calls: int = Field(description="Calls since the previous snapshot.")
    mean_ms: float | None = Field(description="Mean time of those calls (null: no calls).")
    total_calls: int = Field(description="Cumulative calls at this snapshot.")


class QueryHistory(BaseModel):
    queryid: str = Field(description="As text: a 64-bit id loses digits as a JSON number.")
    query: str | None
    points: list[HistoryPoint]


class ActivityReport(BaseModel):
    own_pid: int = Field(description="The backend serving this request (never signalled).")
    connections_by_state: Rows
    backends: Rows = Field(description="Client backends of this database, oldest first.")
    blocking_tree: Rows = Field(
        description="Roots: backends blocking others, each with `blocked` children."
    )


class SignalAction(StrEnum):
    cancel = "cancel"
    terminate = "terminate"


class SignalResult(BaseModel):
    pid: int
    action: SignalAction
    signalled: bool = Field(description="PostgreSQL accepted the signal.")


class SpaceReport(BaseModel):
    database_bytes: int
    tables: Rows
    indexes: Rows
    bloat_method: str = Field(description="`pgstattuple_approx` or `estimate`.")
    table_bloat: Rows
    index_bloat: Rows
    growth: Rows = Field(description="Per relation ('' = database): sizes over time.")


class IndexReport(BaseModel):
    stats_since: datetime | None = Field(description="Scan counts are counted since then.")
    invalid: Rows
    duplicate: Rows
    redundant: Rows
    unused: Rows
    missing_candidates: Rows


class IoReport(BaseModel):
    server_version_num: int
    rows: Rows


class MaintenanceReport(BaseModel):
    xid_age: int
    mxid_age: int
    freeze_max_age: int
    tables: Rows
    running_vacuums: Rows


class Advice(BaseModel):
    name: str
    current: str
    recommended: str
    status: Status
    why: str


class SettingsReport(BaseModel):
    memory_bytes: int
    cpus: int
    connections_needed: int = Field(description="Connections one Keel process opens at most.")
    settings: list[Advice]


class ReplicationReport(BaseModel):
    in_recovery: bool
    slots: Rows
    replicas: Rows
