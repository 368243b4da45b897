"""The `keel` command: serve, migrate, manage the embedded database and accounts.

The data commands (seed, import, worker, embeddings) live in `keel.cli.data`."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Annotated, Any

import structlog
import typer
import uvicorn
from pydantic import ValidationError
from uvicorn.supervisors.multiprocess import Multiprocess

from keel.cli import check, citus, data, insight, replicas
from keel.cli.common import database_url, fail, load_settings
from keel.config import Settings, get_settings
from keel.core.db import create_database
from keel.core.embedded import EmbeddedInUse, EmbeddedPostgres
from keel.core.errors import KeelError
from keel.core.logging import configure_logging, uvicorn_log_config
from keel.core.metrics import MULTIPROC_ENV
from keel.core.passwords import PasswordHasher
from keel.core.protocol import HeaderLimitedProtocol
from keel.migrations import runner
from keel.users.schemas import AdminUserCreate
from keel.users.service import create_user

app = typer.Typer(help="Keel: an API service on FastAPI and PostgreSQL 17+.", no_args_is_help=True)
migrate_app = typer.Typer(help="Apply, revert and write database migrations.")
db_app = typer.Typer(help="Manage the embedded PostgreSQL server.")
app.add_typer(migrate_app, name="migrate")
app.add_typer(db_app, name="db")
db_app.add_typer(insight.insight_app, name="insight")
db_app.add_typer(citus.citus_app, name="citus")
users_app = typer.Typer(help="Manage user accounts.")
app.add_typer(users_app, name="users")
log = structlog.get_logger("keel.cli")


APP_FACTORY = "keel.app:create_app"


class _RefusingMultiprocess(Multiprocess):
    """uvicorn's worker supervisor, except that the port refuses connections once stopping.

    Each worker closes its copy of the listening socket when told to stop, but the parent's
    copy kept the port open until the last worker exited: new connections sat unaccepted in
    the backlog for the whole drain and were then reset. Closing it first refuses them.
    """

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


def _exit_on_sigterm() -> None:
    # Turn SIGTERM into a clean exit (status 0, as with --workers N and as systemd
    # expects) that still runs the `finally` blocks stopping the embedded server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development).")] = False,
    migrate: Annotated[
        bool | None,
        typer.Option(help="Apply migrations first (default: the KEEL_AUTO_MIGRATE setting)."),
    ] = None,
) -> None:
    """Serve the API (embedded PostgreSQL unless DATABASE_URL is set)."""
    settings = load_settings()
    configure_logging(settings)
    _exit_on_sigterm()
    if reload and workers > 1:
        fail("--reload and --workers > 1 cannot be combined")
    metrics_dir = None
    try:
        with database_url(settings, supervise=True) as url:
            if settings.auto_migrate if migrate is None else migrate:
                runner.upgrade(url)
            settings.resolved_secret_key()  # once, before any worker forks
            # Workers inherit these: one database, migrations already done.
            os.environ["DATABASE_URL"] = url
            os.environ["KEEL_AUTO_MIGRATE"] = "false"
            replicas.export_replica_urls(settings)
            if workers > 1:
                metrics_dir = tempfile.mkdtemp(prefix="keel-metrics-")
                os.environ[MULTIPROC_ENV] = metrics_dir
            get_settings.cache_clear()  # a single worker runs in this process: re-read env
            options: dict[str, Any] = {
                "factory": True,
                "host": host,
                "port": port,
                "workers": workers,
                "reload": reload,
                "http": HeaderLimitedProtocol,  # httptools, with MAX_HEADER_BYTES/COUNT
                "log_config": uvicorn_log_config(),
                "access_log": False,
                "server_header": False,
                "proxy_headers": True,
                "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
            }
            if workers > 1:
                config = uvicorn.Config(APP_FACTORY, **options)
                _RefusingMultiprocess(config, sockets=[config.bind_socket()]).run()
            else:
                uvicorn.run(APP_FACTORY, **options)
    except KeyboardInterrupt:
        pass
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


@migrate_app.command("upgrade")
def migrate_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION."""
    settings = load_settings()
    configure_logging(settings)
    with database_url(settings) as url:
        runner.upgrade(url, revision)


@migrate_app.command("downgrade")
def migrate_downgrade(revision: Annotated[str, typer.Argument()]) -> None:
    """Revert migrations down to REVISION (`base` reverts all)."""
    settings = load_settings()
    configure_logging(settings)
    with database_url(settings) as url:
        runner.downgrade(url, revision)


@migrate_app.command("revision")
def migrate_revision(
    message: Annotated[str, typer.Option("-m", "--message")],
    autogenerate: Annotated[bool, typer.Option(help="Diff the models against the DB.")] = True,
) -> None:
    """Write a new migration file (autogenerated from the models by default)."""
    settings = load_settings()
    configure_logging(settings)
    with database_url(settings) as url:
        runner.create_revision(url, message, autogenerate=autogenerate)


def _embedded(settings: Settings) -> EmbeddedPostgres:
    configure_logging(settings, stream=sys.stderr)  # stdout is for the command's output
    if settings.database_url is not None:
        fail("DATABASE_URL is set: Keel is using an external server, not the embedded one")
    return EmbeddedPostgres(settings.data_dir)


@db_app.command("status")
def db_status() -> None:
    """Show whether the embedded server is initialised and running."""
    status = _embedded(load_settings()).status()
    for field in dataclasses.fields(status):
        typer.echo(f"{field.name:12} {getattr(status, field.name)}")


@db_app.command("url")
def db_url() -> None:
    """Print the libpq URL of the running embedded server."""
    embedded = _embedded(load_settings())
    if not embedded.status().running:
        fail("the embedded server is not running; start it with `keel serve`")
    typer.echo(embedded.libpq_url())


@db_app.command("psql", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def db_psql(ctx: typer.Context) -> None:
    """Open psql on the embedded server; extra arguments go to psql."""
    embedded = _embedded(load_settings())
    embedded.ensure_running()
    try:
        argv = [*embedded.psql_argv(), *ctx.args]
        # argv is our own psql binary plus the caller's own psql arguments.
        raise typer.Exit(subprocess.run(argv, check=False).returncode)  # noqa: S603
    finally:
        embedded.release()


@db_app.command("stop")
def db_stop(
    force: Annotated[
        bool, typer.Option(help="Stop it even while `keel serve` or another command uses it.")
    ] = False,
) -> None:
    """Stop the embedded server; refused while other keel processes use it, unless --force.

    With --force, running servers answer 503 and don't restart it; the next keel command
    that needs the database (serve, migrate, psql, seed, import, ...) starts it again.
    """
    try:
        _embedded(load_settings()).stop(force=force)
    except EmbeddedInUse as exc:
        fail(
            f"the embedded server is in use by keel process(es) {', '.join(map(str, exc.users))}."
            " Stop them first (Ctrl-C or SIGTERM stops the server with them), or run"
            " `keel db stop --force`: they then answer 503 until a keel command starts it again."
        )
    typer.echo("stopped")


async def _create_superuser(settings: Settings, url: str, data: AdminUserCreate) -> str:
    database = create_database(settings, url)
    try:
        async with database.sessionmaker() as session:
            user = await create_user(session, PasswordHasher.from_settings(settings), data)
            await session.commit()
            return str(user.id)
    finally:
        await database.dispose()


@users_app.command("create-superuser")
def users_create_superuser(
    email: Annotated[str, typer.Option(prompt=True)],
    username: Annotated[str, typer.Option(prompt=True)],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
    full_name: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Create an administrator (prompts for anything not given as a flag)."""
    settings = load_settings()
    configure_logging(settings)
    try:
        data = AdminUserCreate(
            email=email,
            username=username,
            password=password,
            full_name=full_name,
            is_superuser=True,
            is_verified=True,
        )
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    with database_url(settings) as url:
        try:
            user_id = asyncio.run(_create_superuser(settings, url, data))
        except KeelError as exc:
            fail(str(exc))
    typer.echo(f"created superuser {username} ({user_id})")


# The data commands, after the ones above in `keel --help`.
app.command("seed")(data.seed_command)
app.add_typer(data.import_app, name="import")
app.command("worker")(data.worker_command)
app.add_typer(data.embeddings_app, name="embeddings")
app.command("check")(check.check_command)
replicas.register(db_app)


def main() -> None:
    app()
