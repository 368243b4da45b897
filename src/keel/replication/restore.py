"""`keel db restore --to DIR`: a data directory rebuilt from a backup chain, then checked.

The chain (a full backup and its incrementals) is verified link by link, combined with
`pg_combinebackup` into `DIR/pgdata` (a Keel data dir: `KEEL_DATA_DIR=DIR keel serve`
runs it), and replayed:
- to a backup's own end (`--backup ID`, no target): no archived WAL is needed;
- to `--target-time` / `--target-lsn`, or to the end of the archive (no option at all):
  recovery fetches WAL from the archive (`restore_command`) and stops at the target.
The restored server is started, must leave recovery, answers a query, and is stopped.
"""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog

from keel.core.embedded import EmbeddedPostgres, EmbeddedPostgresError, bin_path
from keel.core.embedded.process import run_binary
from keel.replication.backups import Backup, BackupError, BackupStore, lsn_int

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RestoreResult:
    data_dir: Path
    chain: list[str]
    target: str
    timeline: str
    lsn: str
    seconds_combine: float
    seconds_replay: float


def pick_backup(
    store: BackupStore,
    *,
    backup_id: str | None,
    target_time: datetime | None,
    target_lsn: str | None,
) -> Backup:
    """The backup to restore: the one named, or the newest that ends before the target."""
    if backup_id is not None:
        return store.get(backup_id)
    candidates = store.backups()
    if target_time is not None:
        candidates = [b for b in candidates if datetime.fromisoformat(b.finished_at) < target_time]
    if target_lsn is not None:
        candidates = [b for b in candidates if lsn_int(b.end_lsn) <= lsn_int(target_lsn)]
    if not candidates:
        raise BackupError("no backup ends before that target: nothing to restore from")
    return candidates[-1]


def restore(
    store: BackupStore,
    backup: Backup,
    to: Path,
    *,
    target_time: datetime | None = None,
    target_lsn: str | None = None,
    replay_archive: bool = True,
    timeout: float = 600,
) -> RestoreResult:
    """Combine the chain of `backup` into `to/pgdata`, recover, start, check, stop."""
    chain = store.chain(backup)
    for link in chain:
        check = store.verify(link)
        if not check.ok:
            raise BackupError(
                f"backup {link.id} failed verification, not restoring: {check.message}"
            )
    server = EmbeddedPostgres(to)
    if server.pgdata.exists() and any(server.pgdata.iterdir()):
        raise BackupError(f"{server.pgdata} is not empty")
    server.prepare_dirs()
    clock = time.monotonic()
    argv = [str(bin_path("pg_combinebackup")), "-o", str(server.pgdata)]
    argv += [str(store.root / link.id) for link in chain]
    try:
        run_binary(argv, as_server=store.as_server, cwd=to, timeout=6 * 3600)
    except EmbeddedPostgresError as exc:
        raise BackupError(str(exc)) from exc
    combined = time.monotonic() - clock
    target = _recovery_settings(
        server, store, target_time=target_time, target_lsn=target_lsn, archive=replay_archive
    )
    clock = time.monotonic()
    try:
        server.ensure_running()
        try:
            _wait_out_of_recovery(server, timeout)
            state = _sql(
                server, "SELECT timeline_id, pg_current_wal_lsn() FROM pg_control_checkpoint()"
            )
            _sql(server, "SELECT count(*) FROM pg_class")
        finally:
            server.release()
    except EmbeddedPostgresError as exc:
        raise BackupError(f"the restored server did not come up: {exc}") from exc
    timeline, lsn = state.split("|")
    result = RestoreResult(
        data_dir=to,
        chain=[link.id for link in chain],
        target=target,
        timeline=timeline,
        lsn=lsn,
        seconds_combine=round(combined, 3),
        seconds_replay=round(time.monotonic() - clock, 3),
    )
    log.info("backup.restored", **{k: str(v) for k, v in result.__dict__.items()})
    return result


def _recovery_settings(
    server: EmbeddedPostgres,
    store: BackupStore,
    *,
    target_time: datetime | None,
    target_lsn: str | None,
    archive: bool,
) -> str:
    """Write the recovery settings; return a description of the target."""
    if target_time is None and target_lsn is None and not archive:
        return "end of backup"  # backup_label alone: replay the backup's own WAL, then open
    wal = shlex.quote(str(store.wal_dir)).replace("%", "%%")
    command = f"cp {wal}/%f %p".replace("'", "''")
    lines = [f"restore_command = '{command}'", "recovery_target_action = 'promote'"]
    target = "end of archived WAL"
    if target_time is not None:
        target = f"time {target_time.isoformat()}"
        lines.append(f"recovery_target_time = '{target_time.isoformat()}'")
    elif target_lsn is not None:
        target = f"LSN {target_lsn}"
        lines.append(f"recovery_target_lsn = '{target_lsn}'")
    with (server.pgdata / "postgresql.auto.conf").open("a") as fh:
        fh.write("# keel db restore\n" + "\n".join(lines) + "\n")
    signal = server.pgdata / "recovery.signal"
    signal.touch(mode=0o600)
    owner = (server.pgdata / "PG_VERSION").stat()  # the server's account, when run as root
    os.chown(signal, owner.st_uid, owner.st_gid)
    return target


def _wait_out_of_recovery(server: EmbeddedPostgres, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _sql(server, "SELECT pg_is_in_recovery()") == "t":
        if time.monotonic() > deadline:
            raise BackupError(f"the restored server was still recovering after {timeout}s")
        time.sleep(0.1)


def _sql(server: EmbeddedPostgres, sql: str) -> str:
    argv = [*server.psql_argv(), "-XAtqc", sql]
    return run_binary(argv, as_server=False, cwd=server.data_dir).strip()
