"""SQL for admin insight: the daily activity report, and EXPLAIN of a statement."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Date,
    Select,
    cast,
    func,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable
from sqlmodel import col

from keel.core.db import driver_connection
from keel.posts.models import Post
from keel.users.models import User

# A SQL constant, not a bound parameter: GROUP BY must repeat the select list's day
# expression exactly, and two parameters ($1, $2) would not count as the same.
_UTC: ColumnElement[str] = literal_column("'UTC'")
# VERBOSE adds the Query Identifier: the key of the statement in pg_stat_statements.
EXPLAIN_OPTIONS = "ANALYZE, VERBOSE, BUFFERS, MEMORY, SERIALIZE, SETTINGS, FORMAT JSON"
AnySelect = Select[*tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class DailyRow:
    day: date
    signups: int
    posts: int
    unique_authors: int
    first_time_authors: int  # authors whose first post in the range is on this day
    users: int  # accounts that existed at the end of the day


def utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _utc_day(column: Any) -> ColumnElement[date]:
    return cast(func.timezone(_UTC, column), Date)


def daily_stats_statement(start: date, end: date) -> Select[date, int, int, int, int, int]:
    """One row per UTC day in [start, end], zeros included, from one statement.

    Nothing in it rules out a parallel plan: the aggregates over the big tables are
    `count(*)` and `sum()`, and distinct authors come from a two-level GROUP BY (day,
    author) then count, never COUNT(DISTINCT), which can't be aggregated in parallel.
    Whether workers pay off is the planner's call, from table sizes and costs.
    """
    lower, upper = utc_midnight(start), utc_midnight(end + timedelta(days=1))
    offsets = func.generate_series(0, (end - start).days).table_valued("n").render_derived()
    days = select((literal(start, Date) + offsets.c.n).label("day")).cte("days")

    user_day = _utc_day(col(User.created_at))
    signups = (
        select(user_day.label("day"), func.count().label("signups"))
        .where(col(User.created_at) >= lower, col(User.created_at) < upper)
        .group_by(user_day)
        .cte("signups")
    )
    users_before = select(func.count()).where(col(User.created_at) < lower).scalar_subquery()

    post_day = _utc_day(col(Post.created_at))
    author = col(Post.author_id)
    author_days = (
        select(
            post_day.label("day"),
            func.count().label("posts"),
            # Numbered per author across the range: 1 marks their first day in it, so
            # summing these gives the range's distinct authors from the same scan.
            func.row_number().over(partition_by=author, order_by=post_day).label("nth_day"),
        )
        .where(col(Post.created_at) >= lower, col(Post.created_at) < upper)
        .group_by(post_day, author)
        .cte("author_days")
    )
    daily_posts = (
        select(
            author_days.c.day,
            func.sum(author_days.c.posts).label("posts"),
            func.count().label("unique_authors"),
            func.count().filter(author_days.c.nth_day == 1).label("first_time_authors"),
        )
        .group_by(author_days.c.day)
        .cte("daily_posts")
    )

    new_users = func.coalesce(signups.c.signups, 0)
    users = users_before + func.sum(new_users).over(order_by=days.c.day)
    return (
        select(
            days.c.day,
            new_users.label("signups"),
            cast(func.coalesce(daily_posts.c.posts, 0), BigInteger).label("posts"),
            func.coalesce(daily_posts.c.unique_authors, 0).label("unique_authors"),
            func.coalesce(daily_posts.c.first_time_authors, 0).label("first_time_authors"),
            cast(users, BigInteger).label("users"),
        )
        .select_from(days)
        .outerjoin(signups, signups.c.day == days.c.day)
        .outerjoin(daily_posts, daily_posts.c.day == days.c.day)
        .order_by(days.c.day)
    )


async def use_report_planner(session: AsyncSession, *, parallel_workers: int) -> None:
    """Let the report use more parallel workers, for this transaction only.

    `set_config(..., true)` is `SET LOCAL` with a bound value: it ends with the
    request's transaction, so a pooled connection never carries it to the next user.
    """
    await session.execute(
        select(func.set_config("max_parallel_workers_per_gather", str(parallel_workers), True))
    )


async def daily_stats(
    session: AsyncSession, start: date, end: date, *, parallel_workers: int
) -> list[DailyRow]:
    await use_report_planner(session, parallel_workers=parallel_workers)
    rows = await session.execute(daily_stats_statement(start, end))
    return [DailyRow(*row) for row in rows]


class Explain(Executable, ClauseElement):
    """`EXPLAIN (...) <statement>`, with the statement's own bound parameters.

    The session's dialect renders it like any statement, so the values travel as
    parameters ($1, $2 ...) exactly as when the app runs it, never as literals.
    """

    inherit_cache = False

    def __init__(self, statement: AnySelect) -> None:
        self.statement = statement


@compiles(Explain, "postgresql")
def _compile_explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return f"EXPLAIN ({EXPLAIN_OPTIONS}) {compiler.process(element.statement, **kw)}"


def render_sql(session: AsyncSession, statement: AnySelect | RawQuery) -> str:
    """The SQL text the session's dialect sends for `statement`, placeholders unfilled."""
    if isinstance(statement, tuple):
        return statement[0]
    return str(statement.compile(dialect=session.get_bind().dialect))


# A statement the read path sends to the driver as is: SQL with $n placeholders, and values.
RawQuery = tuple[str, list[Any]]


async def explain(
    session: AsyncSession,
    statement: AnySelect | RawQuery,
    *,
    parallel_workers: int | None = None,
) -> dict[str, Any]:
    """EXPLAIN ANALYZE `statement` in a read-only savepoint that is always rolled back.

    ANALYZE really runs the statement; the named queries only read, and the
    read-only savepoint makes sure nothing else could slip through. Raw statements
    (the read path's prepared SQL) run on the session's driver connection, inside the
    same savepoint, with their values bound as when the app runs them.
    """
    savepoint = await session.begin_nested()
    try:
        await session.execute(text("SET LOCAL transaction_read_only = on"))
        if parallel_workers is not None:
            await use_report_planner(session, parallel_workers=parallel_workers)
        if isinstance(statement, tuple):
            sql, args = statement
            driver = await driver_connection(session)
            output = await driver.fetchval(f"EXPLAIN ({EXPLAIN_OPTIONS}) {sql}", *args)
        else:
            output = (await session.execute(Explain(statement))).scalar_one()
    finally:
        await savepoint.rollback()
    document = json.loads(output) if isinstance(output, str) else output
    plan: dict[str, Any] = document[0]
    return plan
