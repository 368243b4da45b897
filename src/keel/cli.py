"""The `keel` command: serve, migrate, and manage the embedded database."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import structlog
import typer
import uvicorn
from pydantic import ValidationError

from keel.bulk.schemas import ImportReport, Kind, OnConflict
from keel.bulk.service import ImportOptions, ImportRejected
from keel.config import Settings, get_settings
from keel.core.db import DatabaseUnsupported, create_database, verify_server
from keel.core.embedded import EmbeddedPostgres
from keel.core.errors import KeelError
from keel.core.logging import configure_logging, uvicorn_log_config
from keel.core.metrics import MULTIPROC_ENV
from keel.core.passwords import PasswordHasher
from keel.migrations import runner
from keel.users.schemas import AdminUserCreate
from keel.users.service import create_user

app = typer.Typer(help="Keel: an API service on FastAPI and PostgreSQL 17+.", no_args_is_help=True)
migrate_app = typer.Typer(help="Apply, revert and write database migrations.")
db_app = typer.Typer(help="Manage the embedded PostgreSQL server.")
app.add_typer(migrate_app, name="migrate")
app.add_typer(db_app, name="db")
users_app = typer.Typer(help="Manage user accounts.")
app.add_typer(users_app, name="users")
import_app = typer.Typer(help="Import users or posts from a CSV, NDJSON or JSON file.")
app.add_typer(import_app, name="import")
embeddings_app = typer.Typer(help="Post embeddings for semantic search.")
app.add_typer(embeddings_app, name="embeddings")
log = structlog.get_logger("keel.cli")


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _settings() -> Settings:
    """The process settings, or a one-line error (no traceback) if the environment is invalid."""
    try:
        return get_settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():  # never the input values: they may hold secrets
            message = err["msg"].removeprefix("Value error, ")
            where = ".".join(str(part) for part in err["loc"]).upper()
            problems.append(f"{where}: {message}" if where else message)
        _fail(f"invalid settings: {'; '.join(problems)}")


async def _verify(settings: Settings, url: str) -> None:
    database = create_database(settings, url)
    try:
        await verify_server(database.engine)
    finally:
        await database.dispose()


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """The checked database URL: DATABASE_URL, or the embedded server (released on exit)."""
    embedded = None
    url = settings.database_url
    if url is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        url = embedded.ensure_running()
    try:
        try:
            asyncio.run(_verify(settings, url))
        except DatabaseUnsupported as exc:
            _fail(str(exc))
        except OSError as exc:
            _fail(f"cannot reach the database: {exc}")
        yield url
    finally:
        if embedded is not None:
            embedded.release()


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
    settings = _settings()
    configure_logging(settings)
    _exit_on_sigterm()
    if reload and workers > 1:
        _fail("--reload and --workers > 1 cannot be combined")
    metrics_dir = None
    try:
        with database_url(settings) as url:
            if settings.auto_migrate if migrate is None else migrate:
                runner.upgrade(url)
            settings.resolved_secret_key()  # once, before any worker forks
            # Workers inherit these: one database, migrations already done.
            os.environ["DATABASE_URL"] = url
            os.environ["KEEL_AUTO_MIGRATE"] = "false"
            if workers > 1:
                metrics_dir = tempfile.mkdtemp(prefix="keel-metrics-")
                os.environ[MULTIPROC_ENV] = metrics_dir
            get_settings.cache_clear()  # a single worker runs in this process: re-read env
            uvicorn.run(
                "keel.app:create_app",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                reload=reload,
                log_config=uvicorn_log_config(),
                access_log=False,
                server_header=False,
                proxy_headers=True,
                timeout_graceful_shutdown=settings.shutdown_grace_seconds,
            )
    except KeyboardInterrupt:
        pass
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


@migrate_app.command("upgrade")
def migrate_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION."""
    settings = _settings()
    configure_logging(settings)
    with database_url(settings) as url:
        runner.upgrade(url, revision)


@migrate_app.command("downgrade")
def migrate_downgrade(revision: Annotated[str, typer.Argument()]) -> None:
    """Revert migrations down to REVISION (`base` reverts all)."""
    settings = _settings()
    configure_logging(settings)
    with database_url(settings) as url:
        runner.downgrade(url, revision)


@migrate_app.command("revision")
def migrate_revision(
    message: Annotated[str, typer.Option("-m", "--message")],
    autogenerate: Annotated[bool, typer.Option(help="Diff the models against the DB.")] = True,
) -> None:
    """Write a new migration file (autogenerated from the models by default)."""
    settings = _settings()
    configure_logging(settings)
    with database_url(settings) as url:
        runner.create_revision(url, message, autogenerate=autogenerate)


def _embedded(settings: Settings) -> EmbeddedPostgres:
    configure_logging(settings, stream=sys.stderr)  # stdout is for the command's output
    if settings.database_url is not None:
        _fail("DATABASE_URL is set: Keel is using an external server, not the embedded one")
    return EmbeddedPostgres(settings.data_dir)


@db_app.command("status")
def db_status() -> None:
    """Show whether the embedded server is initialised and running."""
    status = _embedded(_settings()).status()
    for field in dataclasses.fields(status):
        typer.echo(f"{field.name:12} {getattr(status, field.name)}")


@db_app.command("url")
def db_url() -> None:
    """Print the libpq URL of the running embedded server."""
    embedded = _embedded(_settings())
    if not embedded.status().running:
        _fail("the embedded server is not running; start it with `keel serve`")
    typer.echo(embedded.libpq_url())


@db_app.command("psql", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def db_psql(ctx: typer.Context) -> None:
    """Open psql on the embedded server; extra arguments go to psql."""
    embedded = _embedded(_settings())
    embedded.ensure_running()
    try:
        argv = [*embedded.psql_argv(), *ctx.args]
        # argv is our own psql binary plus the caller's own psql arguments.
        raise typer.Exit(subprocess.run(argv, check=False).returncode)  # noqa: S603
    finally:
        embedded.release()


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded server, whoever started it."""
    _embedded(_settings()).stop()
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
    settings = _settings()
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
        _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    with database_url(settings) as url:
        try:
            user_id = asyncio.run(_create_superuser(settings, url, data))
        except KeelError as exc:
            _fail(str(exc))
    typer.echo(f"created superuser {username} ({user_id})")


@app.command("seed")
def seed_command(
    users: Annotated[int, typer.Option(min=0, help="Users to add.")] = 0,
    posts: Annotated[
        int, typer.Option(min=0, help="Posts to add, by the new users (else existing ones).")
    ] = 0,
    reset: Annotated[bool, typer.Option(help="First delete the seeded users and posts.")] = False,
    seed: Annotated[
        int | None, typer.Option(help="Random seed, to repeat a run's names and text.")
    ] = None,
    published_ratio: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of posts that are published.")
    ] = 0.8,
) -> None:
    """Fill the database with realistic fake users and posts, fast (for demos and benchmarks).

    Every seeded user signs in with the password `seeded-password`. --reset deletes only
    what seeding made, along with anything the seeded users own.
    """
    from keel import seed as seeding  # Faker and rich load only for this command

    settings = _settings()
    configure_logging(settings)
    if not (users or posts or reset):
        _fail("nothing to do: pass --users, --posts and/or --reset")
    with database_url(settings) as url:
        if settings.auto_migrate:
            runner.upgrade(url)
        try:
            with seeding.rich_progress() as progress:
                report = asyncio.run(
                    seeding.seed(
                        url,
                        passwords=PasswordHasher.from_settings(settings),
                        users=users,
                        posts=posts,
                        reset=reset,
                        seed=seed,
                        published_ratio=published_ratio,
                        progress=progress,
                    )
                )
        except seeding.SeedError as exc:
            _fail(str(exc))
    typer.echo(report.summary())


FileArgument = Annotated[
    Path,
    typer.Argument(
        exists=True, dir_okay=False, readable=True, help="A .csv, .ndjson/.jsonl or .json file."
    ),
]
ConflictOption = Annotated[
    OnConflict, typer.Option(help="What to do with a row that matches a stored one.")
]
AtomicOption = Annotated[
    bool, typer.Option(help="Import nothing if any row is rejected (--no-atomic: the valid rows).")
]


def _import(kind: Kind, path: Path, on_conflict: OnConflict, atomic: bool) -> None:
    from keel.bulk import console  # rich tables load only for this command

    settings = _settings()
    configure_logging(settings)
    with database_url(settings) as url:
        if settings.auto_migrate:
            runner.upgrade(url)
        try:
            report = console.import_with_progress(
                settings, url, kind, path, ImportOptions(on_conflict, atomic)
            )
        except ImportRejected as exc:
            console.print_report(ImportReport.model_validate(exc.extensions["report"]))
            raise typer.Exit(code=1) from None
        except KeelError as exc:
            _fail(str(exc))
    console.print_report(report)
    if report.rejected_count:
        raise typer.Exit(code=1)


@import_app.command("users")
def import_users(
    path: FileArgument,
    on_conflict: ConflictOption = OnConflict.ERROR,
    atomic: AtomicOption = True,
) -> None:
    """Import accounts; plain passwords are hashed with argon2id on every core.

    Exits 1 if any row was rejected (with --atomic, the default, nothing was imported then).
    """
    _import(Kind.USERS, path, on_conflict, atomic)


@import_app.command("posts")
def import_posts(
    path: FileArgument,
    on_conflict: ConflictOption = OnConflict.ERROR,
    atomic: AtomicOption = True,
) -> None:
    """Import posts; each names its author by author_id, author_username or author_email.

    Exits 1 if any row was rejected (with --atomic, the default, nothing was imported then).
    """
    _import(Kind.POSTS, path, on_conflict, atomic)


async def _work(settings: Settings, url: str, *, drain: bool) -> int:
    from keel.search.embeddings import embedder_for, worker_for

    database = create_database(settings, url)
    worker = worker_for(settings, database, embedder_for(settings))
    try:
        if drain:
            return await worker.drain()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await worker.run(stop)
        return worker.processed
    finally:
        await database.dispose()


@app.command("worker")
def worker_command(
    drain: Annotated[
        bool, typer.Option(help="Run the jobs due now, then exit (instead of running on).")
    ] = False,
) -> None:
    """Run background jobs (post embeddings) until SIGINT/SIGTERM.

    `keel serve` already runs a worker in each API process unless WORKER_ENABLED=false;
    run this to do the work elsewhere. Any number of workers may run at once.
    """
    settings = _settings()
    configure_logging(settings)
    with database_url(settings) as url:
        done = asyncio.run(_work(settings, url, drain=drain))
    typer.echo(f"jobs done: {done}")


@embeddings_app.command("backfill")
def embeddings_backfill(
    batch: Annotated[int, typer.Option(min=1, max=1024, help="Posts per model batch.")] = 64,
) -> None:
    """Embed every post that has no embedding yet, with a progress bar."""
    from keel.search import backfill

    settings = _settings()
    configure_logging(settings)
    with database_url(settings) as url:
        if settings.auto_migrate:
            runner.upgrade(url)
        done = backfill.run_with_progress(settings, url, batch=batch)
    typer.echo(f"embedded {done} posts")


def main() -> None:
    app()
