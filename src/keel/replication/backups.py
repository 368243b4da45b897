"""Base backups, full and incremental, checked and kept in chains: `keel db backup(s)`.

Backups live in `KEEL_DATA_DIR/backups/<id>/` (pg_basebackup's plain format with its
`backup_manifest`), each described by `<id>.json` beside it; archived WAL goes to
`backups/wal/` (the embedded server's `archive_command` copies into it once the directory
exists). A full backup starts a chain; an incremental one (`pg_basebackup --incremental`,
PostgreSQL 17+, needs `summarize_wal = on`) holds only the blocks changed since its parent,
the newest backup. Every backup is checked with `pg_verifybackup` when taken and whenever
it is listed. Only pgdata is copied: no other file of KEEL_DATA_DIR (secret key, replicas)
ends up in a backup. Directories are 0700, files 0600.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import structlog

from keel.core.embedded import EmbeddedPostgresError, bin_path
from keel.core.embedded.process import run_binary, server_account

log = structlog.get_logger(__name__)

BackupKind = Literal["full", "incremental"]
WAL_SEGMENT_BYTES = 16 * 1024 * 1024


class BackupError(RuntimeError):
    """A backup could not be taken, found, verified or restored; the message says why."""


@dataclass(frozen=True)
class Backup:
    id: str
    kind: BackupKind
    parent: str | None
    timeline: int
    start_lsn: str
    end_lsn: str
    started_at: str
    finished_at: str
    duration_s: float
    size_bytes: int
    verified: bool


@dataclass(frozen=True)
class Verification:
    ok: bool
    message: str


def lsn_int(lsn: str) -> int:
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def wal_file_name(timeline: int, lsn: str) -> str:
    """Name of the WAL segment holding lsn (16 MB segments, the default)."""
    segment = lsn_int(lsn) // WAL_SEGMENT_BYTES
    per_id = 0x100000000 // WAL_SEGMENT_BYTES
    return f"{timeline:08X}{segment // per_id:08X}{segment % per_id:08X}"


class BackupStore:
    """The backups of one server, in `root`; binaries run as the embedded server's account."""

    def __init__(self, root: Path, conninfo: str, *, as_server: bool) -> None:
        self.root = root
        self.wal_dir = root / "wal"
        self.conninfo = conninfo
        self.as_server = as_server

    # --- listing -------------------------------------------------------------------
    def backups(self) -> list[Backup]:
        """Every backup described in the store, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for meta in sorted(self.root.glob("*.json")):
            try:
                found.append(Backup(**json.loads(meta.read_text())))
            except (ValueError, TypeError) as exc:
                log.warning("backup.unreadable_metadata", file=str(meta), error=str(exc))
        return sorted(found, key=lambda b: b.started_at)

    def get(self, backup_id: str) -> Backup:
        for backup in self.backups():
            if backup.id == backup_id:
                return backup
        raise BackupError(f"no backup {backup_id!r} in {self.root}")

    def chain(self, backup: Backup) -> list[Backup]:
        """The full backup and incrementals that `backup` needs, oldest first."""
        by_id = {b.id: b for b in self.backups()}
        chain = [backup]
        while chain[0].parent is not None:
            parent = by_id.get(chain[0].parent)
            if parent is None or not (self.root / parent.id).is_dir():
                raise BackupError(
                    f"backup {backup.id} cannot be restored: the chain is missing backup "
                    f"{chain[0].parent} (parent of {chain[0].id})"
                )
            chain.insert(0, parent)
        return chain

    def verify(self, backup: Backup) -> Verification:
        """`pg_verifybackup` on the backup (WAL parsing off for incrementals, which hold
        no complete WAL of their own)."""
        path = self.root / backup.id
        if not path.is_dir():
            return Verification(False, f"directory {path} is missing")
        argv = [str(bin_path("pg_verifybackup")), "--quiet"]
        if backup.kind == "incremental":
            argv.append("--no-parse-wal")
        try:
            # As whoever runs keel: it reads the backup, whoever owns it (root reads all).
            run_binary([*argv, str(path)], as_server=False, cwd=self.root)
        except EmbeddedPostgresError as exc:
            return Verification(False, str(exc).split(": ", 1)[-1].strip())
        return Verification(True, "ok")

    # --- taking ----------------------------------------------------------------------
    def take(self, *, incremental: bool) -> Backup:
        """A full backup, or an incremental one on top of the newest backup."""
        self._prepare()
        parent = None
        if incremental:
            existing = self.backups()
            if not existing:
                raise BackupError("no backup to build on: take a full backup first")
            parent = existing[-1]
        started = datetime.now(UTC)
        backup_id = started.strftime("%Y%m%dT%H%M%S%fZ") + ("-incr" if incremental else "-full")
        target = self.root / backup_id
        argv = [str(bin_path("pg_basebackup")), "-d", self.conninfo, "-D", str(target)]
        argv += ["-X", "stream", "--checkpoint=fast", "--no-password"]
        argv += ["--manifest-checksums=CRC32C"]
        if parent is not None:
            argv.append(f"--incremental={self.root / parent.id / 'backup_manifest'}")
        clock = time.monotonic()
        try:
            run_binary(argv, as_server=self.as_server, cwd=self.root, timeout=6 * 3600)
        except EmbeddedPostgresError as exc:
            shutil.rmtree(target, ignore_errors=True)
            raise BackupError(str(exc)) from exc
        duration = time.monotonic() - clock
        _make_private(target)
        manifest = json.loads((target / "backup_manifest").read_text())
        wal_range = manifest["WAL-Ranges"][0]
        draft = Backup(
            id=backup_id,
            kind="incremental" if parent else "full",
            parent=parent.id if parent else None,
            timeline=int(wal_range["Timeline"]),
            start_lsn=wal_range["Start-LSN"],
            end_lsn=wal_range["End-LSN"],
            started_at=started.isoformat(),
            finished_at=datetime.now(UTC).isoformat(),
            duration_s=round(duration, 3),
            size_bytes=_tree_size(target),
            verified=False,
        )
        check = self.verify(draft)
        backup = Backup(**(asdict(draft) | {"verified": check.ok}))
        meta = self.root / f"{backup_id}.json"
        meta.write_text(json.dumps(asdict(backup), indent=2))
        meta.chmod(0o600)
        if not check.ok:
            raise BackupError(f"backup {backup_id} failed verification: {check.message}")
        log.info("backup.taken", **asdict(backup))
        return backup

    def _prepare(self) -> None:
        for path in (self.root, self.wal_dir):
            path.mkdir(mode=0o700, exist_ok=True)
            path.chmod(0o700)
            account = server_account() if self.as_server else None
            if account is not None:
                os.chown(path, account.pw_uid, account.pw_gid)

    # --- retention -------------------------------------------------------------------
    def prune(self, keep_full: int) -> list[str]:
        """Delete chains older than the newest `keep_full` full backups, and the archived
        WAL that no kept backup needs. Returns the ids deleted."""
        backups = self.backups()
        fulls = [b for b in backups if b.kind == "full"]
        if len(fulls) <= keep_full:
            return []
        oldest_kept = fulls[-keep_full]
        doomed = [b for b in backups if b.started_at < oldest_kept.started_at]
        for backup in doomed:
            shutil.rmtree(self.root / backup.id, ignore_errors=True)
            (self.root / f"{backup.id}.json").unlink(missing_ok=True)
        if self.wal_dir.is_dir():
            first_needed = wal_file_name(oldest_kept.timeline, oldest_kept.start_lsn)
            argv = [str(bin_path("pg_archivecleanup")), str(self.wal_dir), first_needed]
            run_binary(argv, as_server=False, cwd=self.root)
        log.info("backup.pruned", deleted=[b.id for b in doomed], kept_from=oldest_kept.id)
        return [b.id for b in doomed]


def _make_private(tree: Path) -> None:
    """0700 directories, 0600 files, whatever modes the server's files had."""
    tree.chmod(0o700)
    for path in tree.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o700 if path.is_dir() else 0o600)


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
