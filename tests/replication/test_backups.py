"""Full and incremental backups, verification, and restores on real embedded servers."""

from __future__ import annotations

import json
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from keel.core.embedded import PORT, EmbeddedPostgres
from keel.core.embedded.process import run_binary
from keel.replication.backups import Backup, BackupError, BackupStore, wal_file_name
from keel.replication.restore import pick_backup, restore
from tests.test_cli import run_keel


@dataclass
class Chain:
    server: EmbeddedPostgres
    store: BackupStore
    backups: list[Backup]  # full, incremental, incremental
    rows: list[list[str]]  # the table's rows as each backup saw them
    between: datetime  # a time after row 4 was committed and before row 5
    root: Path


def sql(server: EmbeddedPostgres, query: str) -> str:
    argv = [*server.psql_argv(), "-XAtqc", query]
    return run_binary(argv, as_server=False, cwd=server.data_dir).strip()


def rows(server: EmbeddedPostgres) -> list[str]:
    return sql(server, "SELECT x FROM t ORDER BY x").split()


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    """Full backup, write, incremental, write, incremental, then two more writes."""
    root = Path(tempfile.mkdtemp(prefix="keel-test-backups-"))
    server = EmbeddedPostgres(root / "primary")
    server.ensure_running()
    (root / "primary" / "secret_key").write_text("not for backups")
    conninfo = f"host={server.socket_dir} port={PORT} user=postgres dbname=postgres"
    store = BackupStore(root / "primary" / "backups", conninfo, as_server=True)
    try:
        sql(server, "CREATE TABLE t (x int PRIMARY KEY); INSERT INTO t VALUES (1)")
        taken, seen = [store.take(incremental=False)], [rows(server)]
        for x in (2, 3):
            sql(server, f"INSERT INTO t VALUES ({x:d})")  # noqa: S608 - an int
            taken.append(store.take(incremental=True))
            seen.append(rows(server))
        sql(server, "INSERT INTO t VALUES (4)")
        time.sleep(0.2)
        between = datetime.fromisoformat(sql(server, "SELECT to_json(clock_timestamp())#>>'{}'"))
        time.sleep(0.2)
        sql(server, "INSERT INTO t VALUES (5)")
        sql(server, "SELECT pg_switch_wal()")
        wait_archived(server)
        yield Chain(server, store, taken, seen, between, root)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def wait_archived(server: EmbeddedPostgres) -> None:
    for _ in range(600):
        if (
            sql(
                server,
                "SELECT archived_count > 0 AND last_archived_wal >= "
                "pg_walfile_name(pg_current_wal_lsn() - 1) FROM pg_stat_archiver",
            )
            == "t"
        ):
            return
        time.sleep(0.05)
    raise AssertionError("WAL not archived")


def test_the_chain_is_full_then_incrementals_all_verified(chain: Chain) -> None:
    full, first, second = chain.backups
    assert (full.kind, first.kind, second.kind) == ("full", "incremental", "incremental")
    assert (first.parent, second.parent) == (full.id, first.id)
    assert all(b.verified for b in chain.backups)
    assert [b.id for b in chain.store.chain(second)] == [full.id, first.id, second.id]


def test_backups_hold_no_other_files_and_are_private(chain: Chain) -> None:
    for path in chain.store.root.rglob("*"):
        assert path.name != "secret_key"
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path


@pytest.mark.parametrize("index", [0, 1, 2])
def test_each_backup_restores_exactly_its_rows(chain: Chain, tmp_path: Path, index: int) -> None:
    target = Path(tempfile.mkdtemp(prefix="keel-test-restore-"))
    try:
        result = restore(chain.store, chain.backups[index], target / "data", replay_archive=False)
        assert result.chain == [b.id for b in chain.backups[: index + 1]]
        restored = EmbeddedPostgres(target / "data")
        restored.ensure_running()
        try:
            assert rows(restored) == chain.rows[index]
        finally:
            restored.release()
    finally:
        shutil.rmtree(target, ignore_errors=True)


def test_restore_to_a_time_between_two_writes(chain: Chain) -> None:
    target = Path(tempfile.mkdtemp(prefix="keel-test-pitr-"))
    try:
        backup = pick_backup(
            chain.store, backup_id=None, target_time=chain.between, target_lsn=None
        )
        assert backup.id == chain.backups[-1].id
        restore(chain.store, backup, target / "data", target_time=chain.between)
        restored = EmbeddedPostgres(target / "data")
        restored.ensure_running()
        try:
            assert rows(restored) == ["1", "2", "3", "4"]
        finally:
            restored.release()
    finally:
        shutil.rmtree(target, ignore_errors=True)


def test_a_corrupt_backup_is_reported_and_refused(chain: Chain, tmp_path: Path) -> None:
    victim = chain.backups[1]
    copy = chain.root / "corrupt"
    shutil.copytree(chain.store.root, copy, symlinks=True)
    store = BackupStore(copy, chain.store.conninfo, as_server=True)
    (copy / victim.id / "PG_VERSION").write_text("99\n")
    assert not store.verify(victim).ok
    assert store.verify(chain.backups[0]).ok
    with pytest.raises(BackupError, match=f"backup {victim.id} failed verification"):
        restore(store, chain.backups[2], tmp_path / "data", replay_archive=False)
    # `keel db backups` names it too, and fails.
    data_dir = chain.root / "cli"
    data_dir.mkdir()
    (data_dir / "backups").symlink_to(copy)
    listed = run_keel(data_dir, "db", "backups")
    assert listed.returncode == 1
    line = next(line for line in listed.stdout.splitlines() if line.startswith(victim.id))
    assert "FAILED" in line
    assert "PG_VERSION" in line


def test_a_missing_link_is_refused_by_name(chain: Chain, tmp_path: Path) -> None:
    missing = chain.backups[1]
    copy = chain.root / "gap"
    shutil.copytree(chain.store.root, copy, symlinks=True)
    shutil.rmtree(copy / missing.id)
    store = BackupStore(copy, chain.store.conninfo, as_server=True)
    with pytest.raises(BackupError, match=f"missing backup {missing.id}"):
        restore(store, chain.backups[2], tmp_path / "data", replay_archive=False)


def test_retention_keeps_the_newest_full_chains(chain: Chain) -> None:
    copy = chain.root / "retention"
    shutil.copytree(chain.store.root, copy, symlinks=True)
    store = BackupStore(copy, chain.store.conninfo, as_server=True)
    assert store.prune(keep_full=1) == []  # one full chain: nothing to prune
    full = chain.backups[0]
    later = Backup(
        **{
            **full.__dict__,
            "id": "29990101T000000000000Z-full",
            "started_at": "2999-01-01T00:00:00+00:00",
        }
    )
    (copy / f"{later.id}.json").write_text(json.dumps(later.__dict__))
    shutil.copytree(copy / full.id, copy / later.id)
    (copy / "wal" / "000000010000000000000001").write_text("older than every backup")
    assert sorted(store.prune(keep_full=1)) == sorted(b.id for b in chain.backups)
    assert [b.id for b in store.backups()] == [later.id]
    # The WAL the kept chain needs stays; older segments go.
    first_needed = wal_file_name(full.timeline, full.start_lsn)
    remaining = sorted(p.name for p in (copy / "wal").iterdir())
    assert first_needed in remaining
    assert all(name[:24] >= first_needed for name in remaining)


def _owner(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid
