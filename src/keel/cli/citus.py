"""`keel db citus ...`: distribute Keel's tables on a Citus coordinator, and show how.

Both commands use DATABASE_URL (the coordinator) and exit 1 with a one-line error when
the database has no citus extension.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from keel.cli.common import database_url, fail, load_settings
from keel.cli.insight import table
from keel.core import citus
from keel.core.logging import configure_logging

citus_app = typer.Typer(help="Citus: distribute the tenant-scoped tables, show placement.")
_PLAIN = {"node_id", "port", "colocation_id", "shard_id"}
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


async def _on_coordinator[T](url: str, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await work(conn)
    finally:
        await engine.dispose()


def _run[T](work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    settings = load_settings()
    configure_logging(settings, stream=sys.stderr)  # stdout is for the report
    with database_url(settings) as url:
        try:
            return asyncio.run(_on_coordinator(url, work))
        except citus.CitusUnavailable as exc:
            fail(str(exc))


@citus_app.command("enable")
def enable(as_json: JsonFlag = False) -> None:
    """Reference tables, tables distributed by tenant_id, the queue on the coordinator."""
    report = _run(citus.enable)
    if as_json:
        typer.echo(json.dumps({"done": report.done, "skipped": report.skipped}, indent=2))
        return
    for line in report.done:
        typer.echo(f"done     {line}")
    for line in report.skipped:
        typer.echo(f"already  {line}")
    typer.echo("Restart Keel's processes: role settings apply to new connections.")


def _render(console: Console, found: citus.Status) -> None:
    console.print(found.version)

    def rows(items: list[Any]) -> list[dict[str, Any]]:  # ports and ids without separators
        dumped = [item.model_dump(mode="json") for item in items]
        return [{k: str(v) if k in _PLAIN else v for k, v in row.items()} for row in dumped]

    columns = ["node_id", "role", "host", "port", "active", "should_have_shards"]
    console.print(table("Nodes", rows(found.nodes), columns))
    columns = ["name", "kind", "distribution_column", "colocation_id", "shard_count", "bytes"]
    console.print(table("Tables", rows(found.tables), columns))
    columns = ["table", "host", "port", "shards", "bytes"]
    console.print(table("Shards per node", rows(found.placements), columns))
    columns = ["tenant_id", "slug", "rows", "posts", "documents", "shard_id", "host", "port"]
    console.print(table("Largest tenants and their node", rows(found.tenants), columns))


@citus_app.command("status")
def status(
    as_json: JsonFlag = False,
    top: Annotated[int, typer.Option(min=1, max=1000, help="Tenants to list.")] = 10,
) -> None:
    """Nodes, shards per table and node with sizes, the largest tenants' placement."""

    async def work(conn: AsyncConnection) -> citus.Status:
        return await citus.status(conn, top=top)

    found = _run(work)
    if as_json:
        typer.echo(json.dumps(found.model_dump(mode="json"), indent=2))
    else:
        _render(Console(), found)
