"""`keel db replica add|list|promote|remove`: streaming replicas of the embedded server.

`register()` also adds the backup and logical-replication commands to `keel db`.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from keel.cli import backups, logical
from keel.cli.common import fail, load_settings
from keel.config import Settings
from keel.core.embedded import EmbeddedInUse, EmbeddedPostgres, EmbeddedPostgresError, standby
from keel.core.logging import configure_logging

replica_app = typer.Typer(help="Streaming replicas of the embedded server (read routing).")

NameArg = Annotated[str, typer.Argument(help="Replica name: lower-case letters, digits, _.")]


def embedded_primary(settings: Settings) -> EmbeddedPostgres:
    configure_logging(settings, stream=sys.stderr)
    if settings.database_url is not None:
        fail(
            "DATABASE_URL is set: replicas of an external server are made with its own tools;"
            " list them in DATABASE_REPLICA_URLS"
        )
    return EmbeddedPostgres(settings.data_dir)


def export_replica_urls(settings: Settings) -> None:
    """Hand the embedded replicas to `keel serve`'s workers (they get DATABASE_URL too)."""
    if settings.database_url is None:
        urls = [r.url for r in EmbeddedPostgres(settings.data_dir).replicas()]
        if urls:
            os.environ["DATABASE_REPLICA_URLS"] = ",".join([*settings.database_replica_urls, *urls])


@replica_app.command("add")
def replica_add(name: NameArg) -> None:
    """Make a standby with pg_basebackup -R and a replication slot, and start it."""
    primary = embedded_primary(load_settings())
    primary.ensure_running()
    try:
        replica = standby.add_replica(primary, name)
    except EmbeddedPostgresError as exc:
        fail(str(exc))
    finally:
        primary.release()
    typer.echo(f"added replica {name}: {replica.libpq_url()}")
    typer.echo("it starts and stops with the primary; `keel serve` reads from it")


@replica_app.command("list")
def replica_list() -> None:
    """List the replicas: running, in recovery, slot and URL."""
    primary = embedded_primary(load_settings())
    try:
        infos = standby.list_replicas(primary)
    except EmbeddedPostgresError as exc:
        fail(str(exc))
    if not infos:
        typer.echo("no replicas; add one with `keel db replica add NAME`")
    for info in infos:
        state = "running" if info.running else "stopped"
        role = {True: "standby", False: "NOT A STANDBY", None: "-"}[info.in_recovery]
        typer.echo(f"{info.name:16} {state:8} {role:14} slot={info.slot} {info.url}")


@replica_app.command("promote")
def replica_promote(name: NameArg) -> None:
    """Switch over: the replica becomes the primary, the old primary its standby (pg_rewind).

    Stop `keel serve` first; the next start serves from the promoted cluster.
    """
    primary = embedded_primary(load_settings())
    try:
        standby.promote_replica(primary, name)
    except EmbeddedInUse as exc:
        fail(f"the primary is in use by keel process(es) {exc.users}: stop them first")
    except EmbeddedPostgresError as exc:
        fail(str(exc))
    typer.echo(f"promoted {name}; the old primary is now replica {name}")


@replica_app.command("remove")
def replica_remove(name: NameArg) -> None:
    """Stop the replica, delete its directory and drop its slot."""
    primary = embedded_primary(load_settings())
    primary.ensure_running()
    try:
        standby.remove_replica(primary, name)
    except EmbeddedPostgresError as exc:
        fail(str(exc))
    finally:
        primary.release()
    typer.echo(f"removed replica {name}")


def register(db_app: typer.Typer) -> None:
    """Add the replica, backup and replication commands under `keel db`."""
    db_app.add_typer(replica_app, name="replica")
    db_app.command("backup")(backups.backup_command)
    db_app.command("backups")(backups.backups_command)
    db_app.command("restore")(backups.restore_command)
    db_app.add_typer(logical.publication_app, name="publication")
    db_app.add_typer(logical.subscription_app, name="subscription")
    db_app.command("replication")(logical.replication_command)
