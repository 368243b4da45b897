"""Admin insight: the daily stats report, and EXPLAIN of the app's named queries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from keel.config import Settings
from keel.core.errors import KeelError
from keel.insight import repository
from keel.insight.repository import AnySelect, RawQuery
from keel.insight.schemas import (
    DailyStat,
    DailyStatsReport,
    DailyStatsTotals,
    ExplainReport,
    PlanSummary,
    QueryName,
)
from keel.orgs.permissions import OrgActor
from keel.posts.service import PostFilters, list_query
from keel.search.service import search_statement

RATE_DIGITS = 4
SAMPLE_PAGE = 20
SAMPLE_STATS_DAYS = 30
GATHER_NODES = frozenset({"Gather", "Gather Merge"})


class InvalidDateRange(KeelError):
    status_code, slug, title = 422, "invalid-date-range", "Invalid Date Range"


def active_user_rate(authors: int, users: int) -> float:
    return round(authors / users, RATE_DIGITS) if users else 0.0


def _check_range(start: date, end: date, max_days: int) -> None:
    if end < start:
        raise InvalidDateRange("`end` is before `start`.")
    if end == date.max:
        raise InvalidDateRange(f"`end` must be before {date.max.isoformat()}.")
    days = (end - start).days + 1
    if days > max_days:
        raise InvalidDateRange(
            f"The range covers {days} days; at most {max_days} are allowed (STATS_MAX_DAYS).",
            max_days=max_days,
        )


async def daily_stats(
    session: AsyncSession, start: date, end: date, *, max_days: int, parallel_workers: int
) -> DailyStatsReport:
    _check_range(start, end, max_days)
    rows = await repository.daily_stats(session, start, end, parallel_workers=parallel_workers)
    days = [
        DailyStat(
            day=row.day,
            signups=row.signups,
            posts=row.posts,
            unique_authors=row.unique_authors,
            users=row.users,
            active_user_rate=active_user_rate(row.unique_authors, row.users),
        )
        for row in rows
    ]
    authors = sum(row.first_time_authors for row in rows)  # distinct over the range
    users = rows[-1].users
    totals = DailyStatsTotals(
        signups=sum(row.signups for row in rows),
        posts=sum(row.posts for row in rows),
        unique_authors=authors,
        users=users,
        active_user_rate=active_user_rate(authors, users),
    )
    return DailyStatsReport(start=start, end=end, days=days, totals=totals)


def _sample(
    name: QueryName, actor: OrgActor, settings: Settings, *, q: str, today: date
) -> tuple[AnySelect | RawQuery, int | None]:
    """The named statement with sample parameters, and the report's planner workers."""
    match name:
        case QueryName.post_list:
            # The first page as the posts router asks for it: one extra row means "more".
            return list_query(actor, PostFilters(), limit=SAMPLE_PAGE + 1), None
        case QueryName.post_search:
            config = settings.search_config
            return search_statement(actor, q, config=config, limit=SAMPLE_PAGE, offset=0), None
        case QueryName.daily_stats:
            start = today - timedelta(days=SAMPLE_STATS_DAYS - 1)
            statement = repository.daily_stats_statement(start, today)
            return statement, settings.stats_parallel_workers


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def summarize(plan: dict[str, Any]) -> PlanSummary:
    nodes = list(_nodes(plan["Plan"]))
    indexes = sorted({node["Index Name"] for node in nodes if "Index Name" in node})
    gathers = [node for node in nodes if node["Node Type"] in GATHER_NODES]
    return PlanSummary(
        query_id=plan.get("Query Identifier"),
        top_node_type=plan["Plan"]["Node Type"],
        planning_ms=plan["Planning Time"],
        execution_ms=plan["Execution Time"],
        planner_memory_used_kb=plan["Planning"]["Memory Used"],
        serialized_kb=plan["Serialization"]["Output Volume"],
        serialization_ms=plan["Serialization"]["Time"],
        uses_index=bool(indexes),
        indexes=indexes,
        parallel=bool(gathers),
        workers_launched=sum(node.get("Workers Launched", 0) for node in gathers),
    )


async def explain_query(
    session: AsyncSession, name: QueryName, actor: OrgActor, settings: Settings, *, q: str
) -> ExplainReport:
    """EXPLAIN ANALYZE the named statement as the app builds it for `actor`'s organization."""
    today = datetime.now(UTC).date()
    statement, parallel_workers = _sample(name, actor, settings, q=q, today=today)
    plan = await repository.explain(session, statement, parallel_workers=parallel_workers)
    return ExplainReport(
        query=name,
        sql=repository.render_sql(session, statement),
        summary=summarize(plan),
        plan=plan,
    )
