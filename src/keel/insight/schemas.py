"""Response shapes for admin insight, and the names of the queries EXPLAIN may run."""

from __future__ import annotations

import re
from datetime import date
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_date_only(value: object) -> object:
    # Pydantic would also read a Unix timestamp or a date-time; the schema says `date`.
    if isinstance(value, str) and not _ISO_DATE.fullmatch(value):
        raise ValueError("expected a date as YYYY-MM-DD")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date_only)]


class QueryName(StrEnum):
    """The app's own statements that EXPLAIN may run; nothing else is accepted."""

    post_list = "post_list"
    post_search = "post_search"
    daily_stats = "daily_stats"


class DailyStat(BaseModel):
    day: date = Field(description="A UTC calendar day.")
    signups: int = Field(description="Accounts created that day.")
    posts: int = Field(description="Posts created that day, drafts included.")
    unique_authors: int = Field(description="Distinct authors of those posts.")
    users: int = Field(description="Accounts that existed at the end of the day.")
    active_user_rate: float = Field(description="unique_authors / users (0 when no users).")


class DailyStatsTotals(BaseModel):
    signups: int
    posts: int
    unique_authors: int = Field(description="Distinct authors over the whole range.")
    users: int = Field(description="Accounts that existed at the end of the range.")
    active_user_rate: float = Field(description="unique_authors / users over the range.")


class DailyStatsReport(BaseModel):
    start: date
    end: date
    days: list[DailyStat] = Field(description="Every day in [start, end], oldest first.")
    totals: DailyStatsTotals


class PlanSummary(BaseModel):
    query_id: int | None = Field(
        description="`queryid` in pg_stat_statements (null if query ids are off)."
    )
    top_node_type: str
    planning_ms: float
    execution_ms: float
    planner_memory_used_kb: int = Field(description="Memory the planner used (MEMORY).")
    serialized_kb: int = Field(description="Output volume of the result (SERIALIZE).")
    serialization_ms: float
    uses_index: bool
    indexes: list[str] = Field(description="Indexes the plan reads, by name.")
    parallel: bool = Field(description="The plan has a Gather or Gather Merge node.")
    workers_launched: int


class ExplainReport(BaseModel):
    query: QueryName
    sql: str = Field(description="The statement as sent, with $n placeholders.")
    summary: PlanSummary
    plan: dict[str, Any] = Field(
        description="EXPLAIN (ANALYZE, VERBOSE, BUFFERS, MEMORY, SERIALIZE, SETTINGS, "
        "FORMAT JSON) output."
    )
