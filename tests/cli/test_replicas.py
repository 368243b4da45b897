"""`keel db replica add|list|promote|remove` on a real embedded primary and standby."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.core.embedded import EmbeddedPostgres, standby
from tests.test_cli import run_keel


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="keel-test-replica-cli-"))
    yield path
    EmbeddedPostgres(path).stop()
    shutil.rmtree(path, ignore_errors=True)


def keel_ok(data_dir: Path, *args: str) -> str:
    done = run_keel(data_dir, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def sql(server: EmbeddedPostgres, query: str) -> str:
    return standby._sql(server, query, database=server.database)


def test_add_promote_and_rebuild_the_old_primary_as_a_standby(data_dir: Path) -> None:
    assert "added replica r1" in keel_ok(data_dir, "db", "replica", "add", "r1")
    listed = keel_ok(data_dir, "db", "replica", "list")
    assert listed.startswith("r1")
    assert "stopped" in listed
    bad = run_keel(data_dir, "db", "replica", "add", "R1; drop")
    assert bad.returncode == 1
    assert "invalid replica name" in bad.stderr

    primary = EmbeddedPostgres(data_dir)
    replica = EmbeddedPostgres(data_dir / "replicas" / "r1")
    primary.ensure_running()  # the replica starts with it
    try:
        sql(primary, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        assert sql(replica, "SELECT pg_is_in_recovery()") == "t"
        in_use = run_keel(data_dir, "db", "replica", "promote", "r1")
        assert in_use.returncode == 1
        assert "in use" in in_use.stderr
    finally:
        primary.release()

    assert "promoted r1" in keel_ok(data_dir, "db", "replica", "promote", "r1")
    primary.ensure_running()
    try:
        # The promoted cluster serves as the primary, with every row the old one had ...
        assert sql(primary, "SELECT pg_is_in_recovery(), count(*) FROM t") == "f|1"
        assert sql(primary, "SELECT timeline_id FROM pg_control_checkpoint()") == "2"
        # ... and the old primary, rewound, streams from it as replica r1.
        sql(primary, "INSERT INTO t VALUES (2)")
        lsn = sql(primary, "SELECT pg_current_wal_lsn()")
        for _ in range(200):
            if sql(replica, f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'") == "t":
                break
            time.sleep(0.05)
        assert sql(replica, "SELECT pg_is_in_recovery(), count(*) FROM t") == "t|2"
        assert sql(primary, "SELECT active FROM pg_replication_slots") == "t"
    finally:
        primary.release()

    assert "removed replica r1" in keel_ok(data_dir, "db", "replica", "remove", "r1")
    assert not (data_dir / "replicas" / "r1").exists()
    assert "no replicas" in keel_ok(data_dir, "db", "replica", "list")
