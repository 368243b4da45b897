"""`keel db insight ...`: the database insight reports as tables, or JSON with --json.

Every report exits 2 when an overview check is critical (the overview runs with each),
so `keel db insight overview` can run from cron or a monitoring agent.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from keel.cli.common import database_url, fail, load_settings
from keel.config import Settings
from keel.core.db import create_database
from keel.core.errors import KeelError
from keel.core.logging import configure_logging
from keel.insight.pg import advice, reports, service
from keel.insight.pg.schemas import Overview, QueryOrder, Status
from keel.insight.pg.service import InsightConfig

insight_app = typer.Typer(help="Database insight: health checks and reports (admins' console).")
EXIT_CRITICAL = 2
Report = Callable[[AsyncSession, InsightConfig, Settings], Awaitable[BaseModel]]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
STATUS_STYLE = {Status.ok: "green", Status.warning: "yellow", Status.critical: "bold red"}


async def _collect(settings: Settings, url: str, report: Report) -> tuple[BaseModel, Overview]:
    database = create_database(settings, url)
    config = InsightConfig.from_settings(settings)
    try:
        async with database.sessionmaker() as session, session.begin():
            found = await report(session, config, settings)
        if isinstance(found, Overview):
            return found, found
        async with database.sessionmaker() as session, session.begin():
            health = await service.overview(session, config)
        return found, health
    finally:
        await database.dispose()


def _run(report: Report, as_json: bool, render: Callable[[Console, Any], None]) -> None:
    settings = load_settings()
    configure_logging(settings, stream=sys.stderr)  # stdout is for the report
    with database_url(settings) as url:
        try:
            found, health = asyncio.run(_collect(settings, url, report))
        except KeelError as exc:
            fail(str(exc))
    if as_json:
        typer.echo(json.dumps(found.model_dump(mode="json"), indent=2))
    else:
        render(Console(), found)
    if health.status is Status.critical:
        raise typer.Exit(EXIT_CRITICAL)


def table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> Table:
    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*(_cell(row.get(column)) for column in columns))
    return grid


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    text = "" if value is None else str(value)
    return " ".join(text.split())[:80]


def _overview(console: Console, found: Overview) -> None:
    grid = Table(title=f"{found.database} on PostgreSQL {found.server_version}")
    for column in ("check", "status", "value", "threshold", "advice"):
        grid.add_column(column)
    for item in found.checks:
        value = "" if item.value is None else f"{item.value:g} {item.unit}"
        style = STATUS_STYLE[item.status]
        grid.add_row(item.title, f"[{style}]{item.status}[/]", value, item.threshold, item.advice)
    console.print(grid)


async def _overview_report(s: AsyncSession, c: InsightConfig, _: Settings) -> BaseModel:
    return await service.overview(s, c)


@insight_app.command("overview")
def overview(as_json: JsonFlag = False) -> None:
    """Health checks; exit status 2 if any is critical."""
    _run(_overview_report, as_json, _overview)


@insight_app.command("queries")
def queries(
    as_json: JsonFlag = False,
    order: Annotated[QueryOrder, typer.Option(help="Sort by.")] = QueryOrder.total_time,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
) -> None:
    """Top statements from pg_stat_statements."""

    async def report(s: AsyncSession, c: InsightConfig, _: Settings) -> BaseModel:
        return await service.queries(s, c, order, limit)

    columns = ["queryid", "calls", "total_ms", "mean_ms", "rows", "hit_ratio", "query"]
    _run(report, as_json, lambda con, r: con.print(table("Queries", r.queries, columns)))


@insight_app.command("activity")
def activity(as_json: JsonFlag = False) -> None:
    """Client backends of Keel's database, and who blocks whom."""

    async def report(s: AsyncSession, c: InsightConfig, _: Settings) -> BaseModel:
        return await service.activity(s, c)

    columns = ["pid", "state", "wait_event", "query_seconds", "blocked_by", "query"]
    _run(report, as_json, lambda con, r: con.print(table("Activity", r.backends, columns)))


def _space(console: Console, found: Any) -> None:
    console.print(f"database: {found.database_bytes:,} bytes")
    cols = ["table", "total_bytes", "table_bytes", "index_bytes", "toast_bytes", "estimated_rows"]
    console.print(table("Tables", found.tables, cols))
    bloat = ["table", "bytes", "bloat_bytes", "dead_tuple_percent"]
    console.print(table(f"Table bloat ({found.bloat_method})", found.table_bloat, bloat))


@insight_app.command("space")
def space(as_json: JsonFlag = False) -> None:
    """Database, table and index sizes; bloat."""

    async def report(s: AsyncSession, c: InsightConfig, _: Settings) -> BaseModel:
        return await reports.space(s, c)

    _run(report, as_json, _space)


def _indexes(console: Console, found: Any) -> None:
    for name in ("invalid", "duplicate", "redundant", "unused"):
        rows = getattr(found, name)
        console.print(table(f"{name.capitalize()} indexes", rows, ["index", "table", "bytes"]))
    cols = ["table", "seq_scans", "rows_read", "index_scans", "rows_per_scan"]
    console.print(table("Missing-index candidates", found.missing_candidates, cols))


@insight_app.command("indexes")
def indexes(as_json: JsonFlag = False) -> None:
    """Invalid, duplicate, redundant and unused indexes; missing-index candidates."""

    async def report(s: AsyncSession, c: InsightConfig, _: Settings) -> BaseModel:
        return await reports.index_report(s, c)

    _run(report, as_json, _indexes)


@insight_app.command("io")
def io(as_json: JsonFlag = False) -> None:
    """pg_stat_io by backend type, object and context."""

    async def report(s: AsyncSession, c: InsightConfig, _: Settings) -> BaseModel:
        return await reports.io(s, c)

    cols = ["backend_type", "object", "context", "reads", "read_bytes", "writes", "hits"]
    _run(report, as_json, lambda con, r: con.print(table("I/O", r.rows, cols)))


@insight_app.command("settings")
def settings_advice(as_json: JsonFlag = False) -> None:
    """Main settings against recommendations for this machine."""

    async def report(s: AsyncSession, c: InsightConfig, settings: Settings) -> BaseModel:
        return await advice.settings_report(s, c, settings)

    def render(console: Console, found: Any) -> None:
        console.print(f"RAM {found.memory_bytes:,} bytes, {found.cpus} CPUs")
        rows = [a.model_dump() for a in found.settings]
        cols = ["name", "current", "recommended", "status", "why"]
        console.print(table("Settings", rows, cols))

    _run(report, as_json, render)
