"""`keel db publication|subscription create|drop|list` and `keel db replication`."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import asyncpg
import typer

from keel.cli.common import database_url, fail, load_settings
from keel.core.db import asyncpg_dsn
from keel.core.logging import configure_logging
from keel.replication import service

publication_app = typer.Typer(help="Logical replication: what this database publishes.")
subscription_app = typer.Typer(help="Logical replication: subscriptions to other servers.")

Name = Annotated[str, typer.Argument(help="Letters, digits and _, starting with a letter.")]


def _on_database[T](work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    settings = load_settings()
    configure_logging(settings, stream=sys.stderr)

    async def run(url: str) -> T:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            return await work(conn)
        finally:
            await conn.close()

    with database_url(settings) as url:
        try:
            return asyncio.run(run(url))
        except service.InvalidName as exc:
            fail(str(exc))
        except asyncpg.PostgresError as exc:
            fail(f"{type(exc).__name__}: {exc}")


def _csv(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


@publication_app.command("create")
def publication_create(
    name: Name,
    schema: Annotated[list[str], typer.Option(help="Publish every table of a schema.")] = [],  # noqa: B006
    table: Annotated[list[str], typer.Option(help="Publish a table (schema.table).")] = [],  # noqa: B006
    columns: Annotated[str | None, typer.Option(help="Column list (one table): a,b,c")] = None,
    where: Annotated[
        str | None, typer.Option(help="Row filter (one table), an SQL expression.")
    ] = None,
) -> None:
    """Create a publication: `--schema app`, or `--table app.posts [--columns] [--where]`."""
    _on_database(
        lambda conn: service.create_publication(
            conn, name, schemas=schema, tables=table, columns=_csv(columns), row_filter=where
        )
    )
    typer.echo(f"created publication {name}")


@publication_app.command("drop")
def publication_drop(name: Name) -> None:
    """Drop a publication."""
    _on_database(lambda conn: service.drop_publication(conn, name))
    typer.echo(f"dropped publication {name}")


@publication_app.command("list")
def publication_list() -> None:
    """List publications with their schemas, tables, column lists and row filters."""
    for pub in _on_database(service.list_publications):
        typer.echo(json.dumps(pub, default=str))


@subscription_app.command("create")
def subscription_create(
    name: Name,
    connection: Annotated[str, typer.Option(help="libpq conninfo of the publisher.")],
    publication: Annotated[list[str], typer.Option(help="Publication(s) to subscribe to.")],
    failover: Annotated[
        bool, typer.Option(help="Failover slot: synced to the publisher's standbys (17+).")
    ] = True,
    copy_data: Annotated[bool, typer.Option(help="Copy the existing rows first.")] = True,
) -> None:
    """Subscribe this database to publications on another server."""
    _on_database(
        lambda conn: service.create_subscription(
            conn,
            name,
            conninfo=connection,
            publications=publication,
            failover=failover,
            copy_data=copy_data,
        )
    )
    typer.echo(f"created subscription {name}")


@subscription_app.command("drop")
def subscription_drop(name: Name) -> None:
    """Drop a subscription (and its slot on the publisher)."""
    _on_database(lambda conn: service.drop_subscription(conn, name))
    typer.echo(f"dropped subscription {name}")


@subscription_app.command("list")
def subscription_list() -> None:
    """List subscriptions: state, positions and error counts."""
    for sub in _on_database(service.list_subscriptions):
        typer.echo(json.dumps(sub, default=str))


def replication_command(
    as_json: Annotated[bool, typer.Option("--json", help="The whole report as JSON.")] = False,
) -> None:
    """Slots, standby lag, subscriptions and problems, as the admin API reports them."""
    report: dict[str, Any] = _on_database(service.replication_status)
    if as_json:
        typer.echo(json.dumps(report, default=str, indent=2))
        return
    server = report["server"]
    role = "standby" if server["in_recovery"] else "primary"
    typer.echo(f"server: {role} at {server['lsn']}")
    for slot in report["slots"]:
        typer.echo(
            f"slot {slot['slot_name']:24} {slot['slot_type']:8} active={slot['active']!s:5} "
            f"wal_status={slot['wal_status']} retained={slot['retained_bytes']} B "
            f"inactive_since={slot['inactive_since']} failover={slot['failover']}"
        )
    for sb in report["standbys"]:
        typer.echo(
            f"standby {sb['application_name']:20} {sb['state']} lag bytes "
            f"write={sb['write_lag_bytes']} flush={sb['flush_lag_bytes']} "
            f"replay={sb['replay_lag_bytes']}; ms write={sb['write_lag_ms']} "
            f"flush={sb['flush_lag_ms']} replay={sb['replay_lag_ms']}"
        )
    for sub in report["subscriptions"]:
        typer.echo(
            f"subscription {sub['subname']:20} enabled={sub['enabled']} pid={sub['pid']} "
            f"received={sub['received_lsn']} stats={json.dumps(sub['stats'], default=str)}"
        )
    for problem in report["problems"]:
        typer.secho(f"problem: {problem}", fg=typer.colors.YELLOW)
