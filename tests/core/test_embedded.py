"""Real-server tests for keel.core.embedded (no mocks: every test runs PostgreSQL 18)."""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from structlog.testing import capture_logs

from keel.core.embedded import (
    EmbeddedInUse,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    ServerState,
    Supervisor,
    bin_path,
)

MakePg = Callable[..., EmbeddedPostgres]

CHILD = """
import sys
from pathlib import Path
from keel.core.embedded import EmbeddedPostgres
pg = EmbeddedPostgres(Path(sys.argv[1]))
pg.ensure_running()
print("PID", pg.status().pid, flush=True)
if sys.argv[2] == "hold":
    sys.stdin.readline()
    pg.release()
"""


def q(pg: EmbeddedPostgres, sql: str) -> str:
    """Run sql through the real psql binary and return its unaligned output."""
    proc = subprocess.run(  # noqa: S603
        [*pg.psql_argv(), "-X", "-v", "ON_ERROR_STOP=1", "-Atc", sql],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


def spawn_child(data_dir: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", CHILD, str(data_dir), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def read_child_pid(child: subprocess.Popen[str]) -> int:
    assert child.stdout is not None
    for line in child.stdout:  # structlog may print log lines before ours
        if line.startswith("PID "):
            return int(line.split()[1])
    raise AssertionError(f"child exited with {child.wait()} without reporting a pid")


def wait_until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture
def make_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakePg]:
    made: list[EmbeddedPostgres] = []

    def make(name: str = "pg", **kwargs: str) -> EmbeddedPostgres:
        pg = EmbeddedPostgres(tmp_path_factory.mktemp(name), **kwargs)
        made.append(pg)
        return pg

    yield make
    for pg in made:
        pg.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("shared"))
    pg.ensure_running()
    yield pg
    pg.stop()


def test_server_settings(shared: EmbeddedPostgres) -> None:
    assert q(shared, "SHOW listen_addresses") == ""
    assert "pg_stat_statements" in q(shared, "SHOW shared_preload_libraries")
    for setting in ("fsync", "synchronous_commit", "full_page_writes", "track_io_timing"):
        assert q(shared, f"SHOW {setting}") == "on", setting
    assert q(shared, "SHOW pg_stat_statements.track") == "all"
    assert q(shared, "SHOW max_connections") == "200"
    assert q(shared, "SHOW shared_buffers") == "128MB"
    assert q(shared, "SELECT current_setting('server_version_num')::int >= 180000") == "t"
    assert q(shared, "SELECT current_database()") == "keel"
    assert q(shared, "SHOW server_encoding") == "UTF8"
    # pg_stat_statements refuses to work unless it really was preloaded.
    q(shared, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    assert int(q(shared, "SELECT count(*) FROM pg_stat_statements")) >= 1
    assert "include_if_exists = 'keel.conf'" in (shared.pgdata / "postgresql.conf").read_text()
    assert (shared.pgdata / "keel.conf").is_file()
    assert shared.socket_dir == shared.data_dir / "run"
    assert (shared.socket_dir / ".s.PGSQL.5432").is_socket()
    assert shared.log_file.is_file()


def test_server_process_owner(shared: EmbeddedPostgres) -> None:
    pid = shared.status().pid
    assert pid is not None
    owner = Path(f"/proc/{pid}").stat().st_uid
    assert owner == shared.pgdata.stat().st_uid
    if os.geteuid() == 0:
        assert owner != 0  # postgres cannot run as root; we use the embedded_postgres account


def test_vector_extension(shared: EmbeddedPostgres) -> None:
    q(shared, "CREATE EXTENSION IF NOT EXISTS vector")
    assert q(shared, "SELECT '[1,2,3]'::vector <-> '[1,2,5]'::vector") == "2"


async def test_sqlalchemy_url_connects(shared: EmbeddedPostgres) -> None:
    engine = create_async_engine(shared.url)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT current_database()")) == "keel"
            assert await conn.scalar(text("SHOW listen_addresses")) == ""
    finally:
        await engine.dispose()


def test_urls_and_binaries(shared: EmbeddedPostgres) -> None:
    sock = str(shared.socket_dir)
    assert shared.url == f"postgresql+asyncpg://postgres@/keel?host={sock}"
    assert shared.libpq_url() == f"postgresql://postgres@/keel?host={sock}"
    out = subprocess.run(  # noqa: S603
        [str(bin_path("psql")), shared.libpq_url(), "-X", "-Atc", "SELECT 42"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "42"
    argv0 = Path(shared.psql_argv()[0])
    assert argv0.is_absolute()
    assert argv0.name == "psql"
    assert bin_path("pgbench").is_file()
    assert bin_path("pg_basebackup").is_file()
    with pytest.raises(EmbeddedPostgresError):
        bin_path("no-such-tool")


def test_ensure_running_is_idempotent(shared: EmbeddedPostgres) -> None:
    before = shared.status()
    assert shared.ensure_running() == shared.url
    after = shared.status()
    assert after.running
    assert after.initialized
    assert after.pid == before.pid
    assert after.users == [os.getpid()]
    assert after.url == shared.url
    assert after.pgdata == shared.data_dir / "pgdata"


def test_custom_database_is_created(make_pg: MakePg) -> None:
    pg = make_pg("custom", database="other_db")
    assert pg.ensure_running().endswith("/other_db?host=" + str(pg.socket_dir))
    assert q(pg, "SELECT current_database()") == "other_db"


def test_data_survives_stop_and_start(make_pg: MakePg) -> None:
    pg = make_pg("restart")
    assert not pg.status().initialized
    pg.ensure_running()
    first_pid = pg.status().pid
    q(pg, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
    pg.release()  # sole user: stops the server
    stopped = pg.status()
    assert stopped.initialized
    assert not stopped.running
    assert stopped.url is None
    assert stopped.users == []
    pg.ensure_running()
    assert pg.status().pid != first_pid
    assert q(pg, "SELECT v FROM kept") == "still here"


def test_stop_and_release_are_idempotent(make_pg: MakePg) -> None:
    pg = make_pg("idem")
    pg.stop()  # never started: nothing to do
    pg.release()
    pg.ensure_running()
    pg.stop()
    pg.stop()
    pg.release()
    status = pg.status()
    assert not status.running
    assert status.users == []


def test_recovers_after_postmaster_kill9(make_pg: MakePg) -> None:
    pg = make_pg("crash")
    pg.ensure_running()
    q(pg, "CREATE TABLE t (v int); INSERT INTO t VALUES (7)")
    pid = pg.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pg.status().running)
    assert (pg.pgdata / "postmaster.pid").exists()  # the stale file the crash left behind
    pg.ensure_running()
    new_pid = pg.status().pid
    assert new_pid is not None
    assert new_pid != pid
    assert q(pg, "SELECT v FROM t") == "7"  # committed before the crash: durable


def test_recovers_from_pidfile_naming_unrelated_live_process(make_pg: MakePg) -> None:
    pg = make_pg("reused")
    pg.ensure_running()
    q(pg, "CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
    pg.stop()
    # The decoy runs as the server's account: postgres itself treats a pid it may not signal
    # (EPERM) as stale, but refuses to start over a pid file naming a live process it can signal.
    sleep = shutil.which("sleep")
    assert sleep is not None
    decoy = subprocess.Popen([sleep, "30"], user=pg.pgdata.stat().st_uid)  # noqa: S603
    try:
        stale = (
            f"{decoy.pid}\n{pg.pgdata}\n{int(time.time())}\n5432\n{pg.socket_dir}\n\n0 0\nready\n"
        )
        (pg.pgdata / "postmaster.pid").write_text(stale)
        (pg.socket_dir / ".s.PGSQL.5432.lock").write_text(stale)
        assert not pg.status().running
        pg.ensure_running()
        status = pg.status()
        assert status.running
        assert status.pid != decoy.pid
        assert decoy.poll() is None, "the unrelated process must be left alone"
        assert q(pg, "SELECT v FROM t") == "1"
    finally:
        decoy.kill()
        decoy.wait()


def test_two_processes_share_one_server(make_pg: MakePg) -> None:
    pg = make_pg("twoproc")
    children = [spawn_child(pg.data_dir, "once") for _ in range(2)]
    pids = [read_child_pid(child) for child in children]
    assert [child.wait(timeout=30) for child in children] == [0, 0]
    assert pids[0] == pids[1]
    status = pg.status()
    assert status.running
    assert status.pid == pids[0]
    assert status.users == []  # both exited without release: pruned as dead
    pg.ensure_running()
    assert pg.status().pid == pids[0]  # reused, not restarted


def test_release_waits_for_other_live_users(make_pg: MakePg) -> None:
    pg = make_pg("release")
    pg.ensure_running()
    child = spawn_child(pg.data_dir, "hold")
    try:
        child_pid = read_child_pid(child)
        assert child_pid == pg.status().pid
        assert sorted(pg.status().users) == sorted([os.getpid(), child.pid])
        pg.release()
        status = pg.status()
        assert status.running
        assert status.users == [child.pid]
        assert q(pg, "SELECT 1") == "1"
        assert child.stdin is not None
        child.stdin.write("done\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == 0
        status = pg.status()
        assert not status.running
        assert status.users == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_long_data_dir_uses_short_socket_dir(make_pg: MakePg) -> None:
    pg = make_pg("long")
    long_pg = EmbeddedPostgres(pg.data_dir / ("x" * 90))
    assert len(str(long_pg.data_dir / "run" / ".s.PGSQL.5432")) > 100
    assert long_pg.socket_dir.parent == Path("/tmp")
    assert long_pg.socket_dir == EmbeddedPostgres(long_pg.data_dir).socket_dir  # stable hash
    try:
        long_pg.ensure_running()
        assert q(long_pg, "SELECT 1") == "1"
        assert (long_pg.socket_dir / ".s.PGSQL.5432").is_socket()
        assert not (long_pg.data_dir / "run").exists()
    finally:
        long_pg.stop()
        shutil.rmtree(long_pg.socket_dir, ignore_errors=True)


def test_start_failure_reports_server_log(make_pg: MakePg) -> None:
    pg = make_pg("broken")
    pg.ensure_running()
    pg.stop()
    with (pg.pgdata / "postgresql.auto.conf").open("a") as fh:
        fh.write("max_connections = 'lots'\n")
    with pytest.raises(EmbeddedPostgresError, match="max_connections") as excinfo:
        pg.ensure_running()
    assert "tail of" in str(excinfo.value)
    assert not pg.status().running


def pg_ctl(pg: EmbeddedPostgres, *args: str) -> None:
    """Run the wheel's pg_ctl on pg's cluster as the server's own account (as an operator)."""
    subprocess.run(  # noqa: S603
        [str(bin_path("pg_ctl")), "-D", str(pg.pgdata), "-w", "-l", str(pg.log_file), *args],
        user=pg.pgdata.stat().st_uid,
        cwd=pg.data_dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=120,
    )


def test_supervisor_restarts_a_killed_postmaster_and_logs_the_replay(make_pg: MakePg) -> None:
    pg = make_pg("supervised")
    pg.ensure_running()
    q(pg, "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 1000)")
    pid = pg.status().pid
    assert pid is not None

    with capture_logs() as logs, Supervisor(pg, interval=0.1) as supervisor:
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: supervisor.restarts == 1 and pg.state() is ServerState.RUNNING, 120)

    assert pg.status().pid != pid
    assert q(pg, "SELECT count(*) FROM t") == "1000"  # committed before the crash: kept
    events = {entry["event"]: entry for entry in logs}
    assert "embedded_pg.postmaster_died" in events
    recovery = events["embedded_pg.crash_recovery"]
    assert recovery["wal_replayed"] is True
    assert recovery["redo_start"]
    assert pg.status().users == [os.getpid()]  # restarting registers nobody new


def test_supervisor_restarts_a_server_stopped_from_outside(make_pg: MakePg) -> None:
    pg = make_pg("outside")
    pg.ensure_running()
    supervisor = Supervisor(pg, outside_stop_grace=0.5)
    pg_ctl(pg, "-m", "fast", "stop")
    assert pg.state() is ServerState.STOPPED
    assert not supervisor.check()  # not at once: a planned restart has the grace to finish
    wait_until(supervisor.check, 30)
    assert pg.state() is ServerState.RUNNING
    assert q(pg, "SELECT 1") == "1"


def test_supervisor_leaves_a_planned_restart_alone(make_pg: MakePg) -> None:
    pg = make_pg("planned")
    pg.ensure_running()
    with capture_logs() as logs, Supervisor(pg, interval=0.05) as supervisor:
        pg_ctl(pg, "-m", "fast", "restart")
        assert q(pg, "SELECT 1") == "1"
    assert supervisor.restarts == 0
    assert not [e for e in logs if e["event"].startswith("embedded_pg.restart")]


def test_a_stop_under_other_users_is_refused_unless_forced_then_held(make_pg: MakePg) -> None:
    pg = make_pg("held")
    child = spawn_child(pg.data_dir, "hold")  # another keel process using the server
    try:
        read_child_pid(child)
        with pytest.raises(EmbeddedInUse) as refused:
            pg.stop(force=False)
        assert refused.value.users == [child.pid]
        assert pg.state() is ServerState.RUNNING

        pg.stop(force=True)
        status = pg.status()
        assert not status.running
        assert status.users == [child.pid]  # still a user: its exit decides, not ours
        assert status.stop_requested
        supervisor = Supervisor(pg, outside_stop_grace=0)
        assert not supervisor.check()
        assert not supervisor.check()
        assert pg.state() is ServerState.STOPPED  # the supervisor holds off

        pg.ensure_running()  # a command that needs the database starts it again...
        assert not pg.status().stop_requested
        pg.release()  # ...and its exit doesn't stop it under the other user
        assert pg.status().running
        assert pg.status().users == [child.pid]
        assert child.stdin is not None
        child.stdin.write("done\n")
        child.stdin.flush()
        assert child.wait(timeout=60) == 0
        assert not pg.status().running  # the last user's release stops it
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
