"""Data commands: `keel seed`, `keel import`, `keel worker`, `keel embeddings`."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer

from keel.bulk.schemas import ImportReport, Kind, OnConflict
from keel.bulk.service import ImportOptions, ImportRejected
from keel.cli.common import database_url, fail, load_settings
from keel.config import Settings
from keel.core import tracing
from keel.core.db import create_database
from keel.core.errors import KeelError
from keel.core.logging import configure_logging
from keel.core.passwords import PasswordHasher
from keel.migrations import runner

import_app = typer.Typer(help="Import users or posts from a CSV, NDJSON or JSON file.")
embeddings_app = typer.Typer(help="Post embeddings for semantic search.")


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
    tenants: Annotated[
        int, typer.Option(min=0, help="Users whose personal organizations get --posts-per-tenant.")
    ] = 0,
    posts_per_tenant: Annotated[
        int, typer.Option(min=0, help="Posts in each of the --tenants organizations.")
    ] = 0,
) -> None:
    """Fill the database with realistic fake users and posts, fast (for demos and benchmarks).

    Every seeded user signs in with the password `seeded-password`. Posts belong to their
    author's personal organization. `--tenants N --posts-per-tenant M` instead makes N users
    whose personal organizations hold M posts each. --reset deletes only what seeding made,
    along with anything the seeded users own.
    """
    from keel import seed as seeding  # Faker and rich load only for this command

    settings = load_settings()
    configure_logging(settings)
    if not (users or posts or tenants or reset):
        fail("nothing to do: pass --users, --posts, --tenants and/or --reset")
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
                        tenants=tenants,
                        posts_per_tenant=posts_per_tenant,
                        progress=progress,
                    )
                )
        except seeding.SeedError as exc:
            fail(str(exc))
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


def _import(
    kind: Kind, path: Path, on_conflict: OnConflict, atomic: bool, organization: str | None = None
) -> None:
    from keel.bulk import console  # rich tables load only for this command

    settings = load_settings()
    configure_logging(settings)
    with database_url(settings) as url:
        if settings.auto_migrate:
            runner.upgrade(url)
        try:
            report = console.import_with_progress(
                settings, url, kind, path, ImportOptions(on_conflict, atomic), organization
            )
        except ImportRejected as exc:
            console.print_report(ImportReport.model_validate(exc.extensions["report"]))
            raise typer.Exit(code=1) from None
        except KeelError as exc:
            fail(str(exc))
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
    org: Annotated[
        str, typer.Option(help="The organization (id or slug, e.g. ~alice) the posts land in.")
    ],
    on_conflict: ConflictOption = OnConflict.ERROR,
    atomic: AtomicOption = True,
) -> None:
    """Import posts into an organization; each names its author (a member of it) by
    author_id, author_username or author_email.

    Exits 1 if any row was rejected (with --atomic, the default, nothing was imported then).
    """
    _import(Kind.POSTS, path, on_conflict, atomic, org)


async def _work(settings: Settings, url: str, *, drain: bool) -> int:
    from keel.insight.pg import snapshots as insight_snapshots
    from keel.search.embeddings import embedder_for, worker_for

    database = create_database(settings, url)
    worker = worker_for(settings, database, embedder_for(settings))
    worker.handlers.update(insight_snapshots.handlers(settings))
    try:
        if drain:
            return await worker.drain()
        async with database.sessionmaker() as session, session.begin():
            await insight_snapshots.ensure_scheduled(session, settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await worker.run(stop)
        return worker.processed
    finally:
        await database.dispose()


def worker_command(
    drain: Annotated[
        bool, typer.Option(help="Run the jobs due now, then exit (instead of running on).")
    ] = False,
) -> None:
    """Run background jobs (post embeddings) until SIGINT/SIGTERM.

    `keel serve` already runs a worker in each API process unless WORKER_ENABLED=false;
    run this to do the work elsewhere. Any number of workers may run at once.
    """
    settings = load_settings()
    configure_logging(settings)
    tracing.configure()  # job spans, with OTEL_EXPORTER_OTLP_ENDPOINT set
    with database_url(settings, supervise=not drain) as url:
        done = asyncio.run(_work(settings, url, drain=drain))
    typer.echo(f"jobs done: {done}")


@embeddings_app.command("backfill")
def embeddings_backfill(
    batch: Annotated[int, typer.Option(min=1, max=1024, help="Posts per model batch.")] = 64,
    queue: Annotated[
        bool,
        typer.Option(
            help="Queue embed_posts jobs (per organization) for the workers instead of "
            "embedding here."
        ),
    ] = False,
) -> None:
    """Embed every post that has no embedding yet, organization by organization."""
    from keel.search import backfill

    settings = load_settings()
    configure_logging(settings)
    with database_url(settings) as url:
        if settings.auto_migrate:
            runner.upgrade(url)
        if queue:
            jobs = asyncio.run(backfill.queue(settings, url))
            typer.echo(f"queued {jobs} embed_posts jobs")
            return
        done = backfill.run_with_progress(settings, url, batch=batch)
    typer.echo(f"embedded {done} posts")
