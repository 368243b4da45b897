"""Database outages under a real `keel serve`: a crash, a planned restart, `keel db stop`.

Each drill keeps concurrent writers running through the outage and then checks what a
client would: no 500 (503 with Retry-After while the database is away), every write that
was acknowledged is stored, and service is back within 5 s of the database answering.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.core.embedded import EmbeddedPostgres, bin_path
from tests.drills.helpers import Writers, org_path, sign_up
from tests.test_cli import KeelLauncher, KeelServer, assert_no_traceback, db_status, run_keel

BACK_WITHIN_S = 5.0  # the bound, from the database answering to the API answering
OUTAGE_TIMEOUT_S = 120.0  # a timeout only: how long the database may take to come back


@pytest.fixture
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("od") / "d"  # short: the socket path must fit AF_UNIX


def serve(keel: KeelLauncher, data_dir: Path) -> KeelServer:
    server = keel.serve(data_dir, RATE_LIMIT_ENABLED="false", WORKER_ENABLED="false")
    server.wait_ready()
    return server


def events(server: KeelServer) -> list[dict[str, Any]]:
    found = []
    for line in server.stdout().splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def psql(data_dir: Path, sql: str) -> subprocess.CompletedProcess[str]:
    """psql straight on the server's socket: it registers no user, starts nothing."""
    argv = [*EmbeddedPostgres(data_dir).psql_argv(), "-XAtc", sql]
    return subprocess.run(  # noqa: S603
        argv, capture_output=True, text=True, timeout=30, check=False
    )


def wait_for_database(data_dir: Path) -> float:
    """Block until the database answers; the monotonic time it first did."""
    deadline = time.monotonic() + OUTAGE_TIMEOUT_S
    while psql(data_dir, "SELECT 1").returncode != 0:
        assert time.monotonic() < deadline, "the database did not come back"
        time.sleep(0.05)
    return time.monotonic()


def assert_back_within(server: KeelServer, headers: dict[str, str], since: float) -> None:
    """A write succeeds within BACK_WITHIN_S of `since` (when the database answered)."""
    posts = org_path(server, headers) + "/posts"
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as http:
        while True:
            response = http.post(posts, json={"title": "back?", "content": ""})
            if response.status_code == 201:
                return
            waited = time.monotonic() - since
            assert waited < BACK_WITHIN_S, f"still {response.status_code} after {waited:.1f}s"
            time.sleep(0.05)


def assert_writes_kept(data_dir: Path, writers: Writers) -> None:
    stored = psql(data_dir, "SELECT id FROM app.posts")
    assert stored.returncode == 0, stored.stderr
    missing = set(writers.acknowledged) - set(stored.stdout.split())
    assert not missing, f"{len(missing)} acknowledged writes were lost"


def assert_no_server_errors(writers: Writers) -> None:
    assert writers.acknowledged
    errors = {k: n for k, n in writers.statuses.items() if k not in (201, 503)}
    assert not errors, f"outcomes other than 201 and 503: {dict(writers.statuses)}"


def test_kill9_of_the_postmaster_under_writers(keel: KeelLauncher, data_dir: Path) -> None:
    server = serve(keel, data_dir)
    headers = sign_up(server)
    postmaster = EmbeddedPostgres(data_dir).status().pid
    assert postmaster is not None

    with Writers(server, headers, count=8) as writers:
        writers.wait_for_acks(40, OUTAGE_TIMEOUT_S)
        os.kill(postmaster, signal.SIGKILL)
        reachable = wait_for_database(data_dir)
        assert_back_within(server, headers, reachable)
        writers.wait_for_acks(40, OUTAGE_TIMEOUT_S)

    assert EmbeddedPostgres(data_dir).status().pid != postmaster
    assert_writes_kept(data_dir, writers)
    assert_no_server_errors(writers)
    seen = {event["event"]: event for event in events(server)}
    assert "embedded_pg.postmaster_died" in seen
    assert "embedded_pg.restarted" in seen
    assert seen["embedded_pg.crash_recovery"]["wal_replayed"] is True
    assert server.stop() == 0, server.output()
    assert db_status(data_dir)["running"] == "False"


def test_planned_restart_under_writers(keel: KeelLauncher, data_dir: Path) -> None:
    server = serve(keel, data_dir)
    headers = sign_up(server)
    pg = EmbeddedPostgres(data_dir)

    with Writers(server, headers, count=8) as writers:
        writers.wait_for_acks(40, OUTAGE_TIMEOUT_S)
        restart = subprocess.run(  # noqa: S603 - the wheel's pg_ctl, as an operator runs it
            [str(bin_path("pg_ctl")), "-D", str(pg.pgdata), "-w", "-m", "fast"]
            + ["-l", str(pg.log_file), "restart"],
            user=pg.pgdata.stat().st_uid,
            cwd=pg.data_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=OUTAGE_TIMEOUT_S,
            check=False,
        )
        assert restart.returncode == 0, restart.stdout + restart.stderr
        assert_back_within(server, headers, wait_for_database(data_dir))
        writers.wait_for_acks(40, OUTAGE_TIMEOUT_S)

    assert_writes_kept(data_dir, writers)
    assert_no_server_errors(writers)
    names = [event["event"] for event in events(server)]
    assert "embedded_pg.postmaster_died" not in names  # the supervisor left it alone
    assert "embedded_pg.restarted" not in names
    assert server.stop() == 0, server.output()


def test_db_stop_while_serving(keel: KeelLauncher, data_dir: Path) -> None:
    server = serve(keel, data_dir)
    headers = sign_up(server)
    posts = org_path(server, headers) + "/posts"

    refused = run_keel(data_dir, "db", "stop")
    assert refused.returncode == 1
    assert f"in use by keel process(es) {server.pid}" in refused.stderr
    assert "--force" in refused.stderr
    assert_no_traceback(refused.stderr)
    assert db_status(data_dir)["running"] == "True"

    forced = run_keel(data_dir, "db", "stop", "--force")
    assert forced.returncode == 0, forced.stderr
    status = db_status(data_dir)
    assert status["running"] == "False"
    assert json.loads(status["users"]) == [server.pid]  # still serving, still a user
    assert status["stop_requested"] == "True"

    # While stopped: 503 with Retry-After, never 500, and nobody restarts it.
    deadline = time.monotonic() + 8  # longer than the supervisor's grace for outside stops
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as http:
        while time.monotonic() < deadline:
            response = http.post(posts, json={"title": "while stopped"})
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert "retry-after" in response.headers
            time.sleep(0.5)
    assert db_status(data_dir)["running"] == "False"

    # A short-lived command that needs the database starts it, and leaves it to the server.
    psql_run = run_keel(data_dir, "db", "psql", "-XAtc", "SELECT 41 + 1")
    assert psql_run.returncode == 0, psql_run.stderr
    assert "42" in psql_run.stdout.splitlines()
    status = db_status(data_dir)
    assert status["running"] == "True"
    assert json.loads(status["users"]) == [server.pid]
    assert status["stop_requested"] == "False"
    assert_back_within(server, headers, time.monotonic())

    assert server.stop() == 0, server.output()
    assert db_status(data_dir)["running"] == "False"
