"""`keel db backup [--incremental]`, `keel db backups`, `keel db restore --to DIR`."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import make_url

from keel.cli.common import fail, load_settings
from keel.config import Settings
from keel.core.embedded import PORT, EmbeddedPostgres, EmbeddedPostgresError
from keel.core.embedded.process import run_binary
from keel.core.logging import configure_logging
from keel.replication.backups import BackupError, BackupStore
from keel.replication.restore import pick_backup, restore


@contextmanager
def backup_store(settings: Settings) -> Iterator[tuple[BackupStore, EmbeddedPostgres | None]]:
    """The store in KEEL_DATA_DIR/backups, for the embedded server (kept running meanwhile)
    or for DATABASE_URL (its role needs REPLICATION)."""
    configure_logging(settings, stream=sys.stderr)
    root = Path(settings.data_dir).resolve() / "backups"
    if settings.database_url is not None:
        url = make_url(settings.database_url).set(drivername="postgresql")
        yield BackupStore(root, url.render_as_string(hide_password=False), as_server=False), None
        return
    server = EmbeddedPostgres(settings.data_dir)
    server.ensure_running()
    try:
        conninfo = f"host={server.socket_dir} port={PORT} user=postgres dbname=postgres"
        yield BackupStore(root, conninfo, as_server=True), server
    finally:
        server.release()


def backup_command(
    incremental: Annotated[
        bool, typer.Option(help="Only what changed since the newest backup (PostgreSQL 17+).")
    ] = False,
) -> None:
    """Take a base backup (full, or incremental on the newest), verify it, apply retention."""
    settings = load_settings()
    with backup_store(settings) as (store, _):
        try:
            backup = store.take(incremental=incremental)
            pruned = store.prune(settings.backup_keep_full) if not incremental else []
        except BackupError as exc:
            fail(str(exc))
    typer.echo(
        f"{backup.id}  {backup.kind}  {backup.start_lsn}..{backup.end_lsn}  "
        f"{backup.size_bytes / 1e6:.1f} MB in {backup.duration_s:.1f}s  verified"
    )
    for backup_id in pruned:
        typer.echo(f"pruned {backup_id} (BACKUP_KEEP_FULL={settings.backup_keep_full})")


def backups_command(
    verify: Annotated[bool, typer.Option(help="Run pg_verifybackup on each backup.")] = True,
) -> None:
    """List the backup chains: kind, parent, LSNs, size, duration and verification."""
    settings = load_settings()
    configure_logging(settings, stream=sys.stderr)
    root = Path(settings.data_dir).resolve() / "backups"
    store = BackupStore(root, "", as_server=settings.database_url is None)
    backups = store.backups()
    if not backups:
        typer.echo("no backups; take one with `keel db backup`")
    failed = False
    for backup in backups:
        status = "not checked"
        if verify:
            check = store.verify(backup)
            status = "verified" if check.ok else f"FAILED: {check.message}"
            failed |= not check.ok
        parent = backup.parent or "-"
        typer.echo(
            f"{backup.id:28} {backup.kind:11} parent={parent:28} "
            f"{backup.start_lsn}..{backup.end_lsn} {backup.size_bytes / 1e6:9.1f} MB "
            f"{backup.duration_s:7.1f}s  {status}"
        )
    if failed:
        raise typer.Exit(code=1)


def restore_command(
    to: Annotated[Path, typer.Option("--to", help="New Keel data dir; pgdata goes in it.")],
    backup: Annotated[
        str | None, typer.Option(help="Restore this backup as of its end (no WAL replay).")
    ] = None,
    target_time: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"], help="ISO time."),
    ] = None,
    target_lsn: Annotated[str | None, typer.Option(help="e.g. 0/3000060")] = None,
) -> None:
    """Rebuild a data dir from the backups (+ archived WAL to a time or LSN); start and check it.

    With no option: the newest backup and every archived WAL record after it.
    """
    settings = load_settings()
    if target_time is not None and target_lsn is not None:
        fail("give --target-time or --target-lsn, not both")
    if target_lsn is not None and not _is_lsn(target_lsn):
        fail(f"--target-lsn {target_lsn!r} is not an LSN such as 0/3000060")
    if target_time is not None and target_time.tzinfo is None:
        fail("--target-time needs a time zone, e.g. 2026-01-31T12:00:00+00:00")
    replay = backup is None or target_time is not None or target_lsn is not None
    with backup_store(settings) as (store, server):
        if replay and server is not None:
            _archive_current_wal(server)
        try:
            chosen = pick_backup(
                store, backup_id=backup, target_time=target_time, target_lsn=target_lsn
            )
            result = restore(
                store,
                chosen,
                to.resolve(),
                target_time=target_time,
                target_lsn=target_lsn,
                replay_archive=replay,
            )
        except (BackupError, EmbeddedPostgresError) as exc:
            fail(str(exc))
    typer.echo(
        f"restored {' + '.join(result.chain)} into {result.data_dir} up to {result.target}: "
        f"timeline {result.timeline}, LSN {result.lsn}; combine {result.seconds_combine}s, "
        f"replay {result.seconds_replay}s. Run it with KEEL_DATA_DIR={result.data_dir}"
    )


def _is_lsn(text: str) -> bool:
    high, sep, low = text.partition("/")
    try:
        return bool(sep) and int(high, 16) >= 0 and int(low, 16) >= 0
    except ValueError:
        return False


def _archive_current_wal(server: EmbeddedPostgres, timeout: float = 60) -> None:
    """Close the current WAL segment and wait until it is archived, so recovery can reach now."""
    psql = [*server.psql_argv(), "-XAtqc"]
    switched = "SELECT pg_walfile_name(pg_switch_wal())"
    name = run_binary([*psql, switched], as_server=False, cwd=server.data_dir).strip()
    check = "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver"
    deadline = time.monotonic() + timeout
    while run_binary([*psql, check], as_server=False, cwd=server.data_dir).strip() < name:
        if time.monotonic() > deadline:
            fail(f"WAL segment {name} was not archived within {timeout}s (see the server log)")
        time.sleep(0.1)
