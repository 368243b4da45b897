"""End-to-end tests of the real `keel` command: subprocesses, real HTTP, real embedded PostgreSQL.

Nothing is mocked. Every process a test starts runs in its own process group and is stopped by
the `keel` fixture's finalizer (then `keel db stop` on each data dir), whatever the outcome.
Timing is used only as timeouts, never asserted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.config import SECRET_FILE_NAME, Settings
from keel.core.embedded import bin_path
from keel.migrations.runner import head_revision
from tests.processes import children_of, environ_of, free_port

STARTUP_TIMEOUT_S = 180.0  # initdb + server start + migrations, on a slow CI machine
STOP_TIMEOUT_S = 60.0
CLI_TIMEOUT_S = 180.0
# A PostgreSQL older than 17 to be refused; the default is this machine's system server.
OLD_DATABASE_URL = os.environ.get(
    "KEEL_TEST_OLD_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# Every variable Settings (or the metrics module) reads: the tests set their own.
SETTINGS_ENV = {name.upper() for name in Settings.model_fields} | {
    "KEEL_DATA_DIR",
    "KEEL_AUTO_MIGRATE",
    "PROMETHEUS_MULTIPROC_DIR",
}


def keel_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key.upper() not in SETTINGS_ENV}
    env |= {
        "KEEL_DATA_DIR": str(data_dir),
        "ENVIRONMENT": "development",
        "LOG_JSON": "true",
        "PYTHONUNBUFFERED": "1",
    }
    return env | overrides


def run_keel(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `keel ARGS` to completion. cwd is outside the repo so no `.env` is read."""
    return subprocess.run(
        [sys.executable, "-m", "keel", *args],
        env=env if env is not None else keel_env(data_dir),
        cwd=data_dir.parent,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def db_status(data_dir: Path) -> dict[str, str]:
    """`keel db status` as a dict of its fields."""
    result = run_keel(data_dir, "db", "status")
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
    assert {"initialized", "running", "pid", "users"} <= fields.keys(), result.stdout
    return fields


def assert_no_traceback(*outputs: str) -> None:
    for output in outputs:
        assert "Traceback" not in output, output


def workers_of(pid: int) -> list[int]:
    """Live worker processes multiprocessing spawned for pid (not its resource tracker)."""
    workers = []
    for child in children_of(pid):
        with contextlib.suppress(OSError):  # gone meanwhile
            if b"--multiprocessing-fork" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(child)
    return workers


def counter_value(metrics_text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    match = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", metrics_text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@dataclass
class KeelServer:
    """One `keel serve` process."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    stdout_path: Path
    stderr_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return (
            f"--- exit code: {self.proc.poll()}\n"
            f"--- stdout ---\n{self.stdout_path.read_text(errors='replace')}\n"
            f"--- stderr ---\n{self.stderr_path.read_text(errors='replace')}"
        )

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def get(self, path: str, timeout: float = 30.0) -> httpx.Response:
        return httpx.get(self.base_url + path, timeout=timeout)

    def wait_ready(self, path: str = "/health") -> None:
        """Poll `path` until it answers 200; fail early if the process dies."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"keel serve exited during startup\n{self.output()}")
            try:
                if self.get(path, timeout=10).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"keel serve not ready within {STARTUP_TIMEOUT_S}s\n{self.output()}")

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        """Send sig to the main process only (as a supervisor would) and wait for the exit."""
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"keel serve did not exit {STOP_TIMEOUT_S}s after {sig.name}")

    def kill_group(self) -> None:
        """Finalizer: make sure the process and everything it forked (workers) is gone."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # leftover workers, if any
        self.proc.wait()


@dataclass
class KeelLauncher:
    log_dir: Path
    servers: list[KeelServer] = field(default_factory=list)
    data_dirs: set[Path] = field(default_factory=set)

    def serve(self, data_dir: Path, *args: str, port: int | None = None, **env: str) -> KeelServer:
        port = port or free_port()
        self.data_dirs.add(data_dir)
        name = f"serve-{len(self.servers)}-{port}"
        stdout_path, stderr_path = self.log_dir / f"{name}.out", self.log_dir / f"{name}.err"
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "keel", "serve", "--port", str(port), *args],
                env=keel_env(data_dir, **env),
                cwd=data_dir.parent,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # own process group: the finalizer kills it whole
            )
        server = KeelServer(proc, port, data_dir, stdout_path, stderr_path)
        self.servers.append(server)
        return server

    def cleanup(self) -> None:
        for server in self.servers:
            server.kill_group()
        for data_dir in self.data_dirs:
            if data_dir.exists():
                run_keel(data_dir, "db", "stop")


@pytest.fixture
def keel(tmp_path: Path) -> Iterator[KeelLauncher]:
    launcher = KeelLauncher(log_dir=tmp_path)
    try:
        yield launcher
    finally:
        launcher.cleanup()


@pytest.fixture(scope="module")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data dir reused by tests that don't need a fresh one (saves an initdb each).

    Every test using it leaves its server stopped, so the order does not matter.
    """
    data_dir = tmp_path_factory.mktemp("kd")
    yield data_dir
    run_keel(data_dir, "db", "stop")


@pytest.fixture
def fresh_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Not created: `keel` must create it. Short name: the socket path must fit AF_UNIX.
    return tmp_path_factory.mktemp("kf") / "d"


def test_serve_on_a_fresh_data_dir(keel: KeelLauncher, fresh_data_dir: Path) -> None:
    server = keel.serve(fresh_data_dir)
    server.wait_ready()

    startup = server.get("/health/startup")
    assert startup.status_code == 200, startup.text
    assert startup.json() == {"status": "ok", "revision": head_revision()}
    responses = {path: server.get(path) for path in ("/health", "/health/ready", "/metrics")}
    responses |= {"/health/startup": startup}
    for path in ("/docs", "/openapi.json"):
        responses[path] = server.get(path)
        assert responses[path].status_code == 200, path
    assert responses["/openapi.json"].json()["openapi"].startswith("3.")
    responses["/no-such-page"] = server.get("/no-such-page")
    assert responses["/no-such-page"].status_code == 404
    for path, response in responses.items():
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers.get("x-request-id", "")), path

    secret = fresh_data_dir / SECRET_FILE_NAME
    assert secret.is_file()
    assert len(secret.read_text().strip()) >= 32
    assert secret.stat().st_mode & 0o777 == 0o600
    status = db_status(fresh_data_dir)
    assert status["initialized"] == "True"
    assert status["running"] == "True"
    assert str(server.pid) in status["users"]

    # Ctrl-C: uvicorn shuts down gracefully, then the CLI releases the embedded server.
    assert server.stop(signal.SIGINT) == 0, server.output()
    assert db_status(fresh_data_dir)["running"] == "False"
    assert_no_traceback(server.stdout(), server.stderr())
    # LOG_JSON=true: every stdout line is a JSON log event.
    events = [json.loads(line)["event"] for line in server.stdout().splitlines() if line.strip()]
    assert "startup" in events  # the app's lifespan ran...
    assert "shutdown" in events  # ...and finished
    assert events.index("embedded_pg.stopped") > events.index("shutdown")


def test_sigterm_stops_server_and_database(keel: KeelLauncher, shared_data_dir: Path) -> None:
    server = keel.serve(shared_data_dir)
    server.wait_ready()
    assert db_status(shared_data_dir)["running"] == "True"

    # After uvicorn's graceful shutdown, a SIGTERM stop is a clean exit.
    assert server.stop(signal.SIGTERM) == 0, server.output()
    assert db_status(shared_data_dir)["running"] == "False"
    assert_no_traceback(server.stdout(), server.stderr())
    events = [json.loads(line)["event"] for line in server.stdout().splitlines() if line]
    assert "shutdown" in events
    with pytest.raises(httpx.ConnectError):
        server.get("/health", timeout=5)


def test_data_persists_across_restarts(keel: KeelLauncher, fresh_data_dir: Path) -> None:
    first = keel.serve(fresh_data_dir)
    first.wait_ready()
    assert first.stop() == 0, first.stdout()

    # Unknown options must reach psql (not be parsed by keel).
    sql = "CREATE TABLE public.persist_probe(x int); INSERT INTO public.persist_probe VALUES (42)"
    written = run_keel(fresh_data_dir, "db", "psql", "-v", "ON_ERROR_STOP=1", "-c", sql)
    assert written.returncode == 0, written.stderr + written.stdout
    assert db_status(fresh_data_dir)["running"] == "False"  # psql released what it started

    second = keel.serve(fresh_data_dir)
    second.wait_ready()
    assert second.get("/health/startup").status_code == 200
    read = run_keel(fresh_data_dir, "db", "psql", "-Atc", "SELECT x FROM public.persist_probe")
    assert read.returncode == 0, read.stderr
    # `keel db` prints its own embedded_pg.* log lines to stdout too, so look for the row.
    assert "42" in read.stdout.splitlines(), read.stdout
    assert db_status(fresh_data_dir)["running"] == "True"  # psql did not stop serve's server
    assert second.stop() == 0, second.output()
    assert db_status(fresh_data_dir)["running"] == "False"


def test_psql_exit_code_is_passed_through(keel: KeelLauncher, shared_data_dir: Path) -> None:
    keel.data_dirs.add(shared_data_dir)
    failed = run_keel(shared_data_dir, "db", "psql", "-v", "ON_ERROR_STOP=1", "-c", "SELECT 1/0")
    assert failed.returncode != 0
    assert "division by zero" in failed.stderr
    assert db_status(shared_data_dir)["running"] == "False"


def test_workers_share_metrics(keel: KeelLauncher, shared_data_dir: Path) -> None:
    server = keel.serve(shared_data_dir, "--workers", "2")
    server.wait_ready()

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while len(workers := workers_of(server.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(workers) == 2, workers
    metrics_dir = Path(environ_of(workers[0])["PROMETHEUS_MULTIPROC_DIR"])
    assert metrics_dir.is_dir()

    def health_count() -> float:
        text = server.get("/metrics").text
        return counter_value(
            text, "keel_http_requests_total", method="GET", route="/health", status="200"
        )

    before = health_count()
    requests = 30
    for _ in range(requests):  # a new connection each: the kernel spreads them over workers
        assert server.get("/health").status_code == 200
    # A worker counts a request just after sending its response; give the last one a moment.
    deadline = time.monotonic() + 30
    while (after := health_count()) < before + requests and time.monotonic() < deadline:
        time.sleep(0.1)
    assert after - before == requests
    # Both workers write their own sample files to the shared multiprocess directory.
    per_pid = {
        int(m.group(1)) for p in metrics_dir.iterdir() if (m := re.search(r"_(\d+)\.db$", p.name))
    }
    assert set(workers) <= per_pid

    assert server.stop(signal.SIGINT) == 0, server.output()
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    assert not metrics_dir.exists()  # the CLI removed its temporary metrics dir
    assert db_status(shared_data_dir)["running"] == "False"
    assert_no_traceback(server.stdout(), server.stderr())


def json_body_operation(openapi: dict[str, Any]) -> tuple[str, str] | None:
    """An anonymous (METHOD, path) under /auth, without path parameters, taking JSON.

    Anonymous: a signed-in operation answers 401 before it reads the body.
    """
    for path, item in openapi.get("paths", {}).items():
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "/auth/" in path and "{" not in path and "application/json" in content:
                return method.upper(), path
    return None


def read_until(conn: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_to_end(conn: socket.socket) -> bytes:
    """Everything the peer sends until it closes the connection."""
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def wait_until_refused(port: int, timeout: float = STOP_TIMEOUT_S) -> None:
    """Block until nothing accepts connections on port (the server closed its listener)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except ConnectionRefusedError:
            return
        time.sleep(0.05)
    pytest.fail(f"port {port} still accepts connections {timeout}s after SIGINT")


# With --workers 2 the drain must also close the port at once: new connections are refused
# while the held request is still in flight (well within its 120 s grace), not left waiting.
@pytest.mark.parametrize(
    ("workers", "refused_within"), [(1, STOP_TIMEOUT_S), (2, 30.0)], ids=["workers1", "workers2"]
)
def test_graceful_shutdown_drains_an_in_flight_request(
    keel: KeelLauncher, shared_data_dir: Path, workers: int, refused_within: float
) -> None:
    server = keel.serve(shared_data_dir, "--workers", str(workers), SHUTDOWN_GRACE_SECONDS="120")
    server.wait_ready()
    target = json_body_operation(server.get("/openapi.json").json())
    assert target is not None, "some operation must take a JSON body to hold in flight"
    method, path = target
    body = b"{}"
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=STOP_TIMEOUT_S) as conn:
        conn.sendall(head.encode())
        # uvicorn answers "100 Continue" once the app awaits the body: the request is in flight.
        assert read_until(conn, b"\r\n\r\n").startswith(b"HTTP/1.1 100 ")
        server.proc.send_signal(signal.SIGINT)
        wait_until_refused(server.port, refused_within)  # shutdown began: no new connections
        conn.sendall(body)
        response = read_to_end(conn)
    head_bytes, _, payload = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {
        name.lower(): value.strip() for name, value in (h.split(":", 1) for h in header_lines)
    }
    # A complete response (whatever the endpoint makes of `{}`), then the connection closes.
    assert int(status_line.split()[1]) < 500, response
    assert len(payload) == int(headers["content-length"])
    json.loads(payload)
    assert headers["connection"] == "close"
    assert "x-request-id" in headers
    assert server.proc.wait(STOP_TIMEOUT_S) == 0, server.output()
    assert db_status(shared_data_dir)["running"] == "False"


def test_db_url_status_and_stop(keel: KeelLauncher, shared_data_dir: Path) -> None:
    server = keel.serve(shared_data_dir)
    server.wait_ready()

    url = run_keel(shared_data_dir, "db", "url")
    assert url.returncode == 0, url.stderr
    libpq_url = url.stdout.strip()
    assert libpq_url.startswith("postgresql://"), libpq_url
    assert "host=" in libpq_url
    # The printed URL is usable as is by libpq clients.
    psql = subprocess.run(
        [str(bin_path("psql")), libpq_url, "-XAtc", "SELECT current_database()"],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert psql.returncode == 0, psql.stderr
    assert psql.stdout.strip() == "keel"

    status = db_status(shared_data_dir)
    assert status["initialized"] == "True"
    assert status["running"] == "True"
    assert status["pid"].isdigit()
    assert status["url"].startswith("postgresql+asyncpg://")
    assert Path(status["data_dir"]) == shared_data_dir.resolve()
    assert json.loads(status["users"]) == [server.pid]

    stopped = run_keel(shared_data_dir, "db", "stop", "--force")  # see tests/drills
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip().splitlines()[-1] == "stopped"
    status = db_status(shared_data_dir)
    assert status["running"] == "False"
    assert status["pid"] == "None"
    assert json.loads(status["users"]) == [server.pid]
    # The app notices: readiness fails, liveness does not.
    not_ready = server.get("/health/ready")
    assert not_ready.status_code == 503
    assert not_ready.headers["content-type"] == "application/problem+json"
    assert server.get("/health").status_code == 200

    no_url = run_keel(shared_data_dir, "db", "url")
    assert no_url.returncode == 1
    assert "not running" in no_url.stderr
    assert_no_traceback(no_url.stderr)
    assert server.stop() == 0, server.output()


def test_db_commands_refuse_an_external_database(tmp_path: Path) -> None:
    env = keel_env(tmp_path, DATABASE_URL="postgresql://postgres@127.0.0.1:1/x")
    for command in (["db", "status"], ["db", "url"], ["db", "stop"], ["db", "psql"]):
        result = run_keel(tmp_path, *command, env=env)
        assert result.returncode == 1, command
        assert "DATABASE_URL is set" in result.stderr
        assert_no_traceback(result.stderr)


def test_two_processes_share_one_server(keel: KeelLauncher, fresh_data_dir: Path) -> None:
    # Started together on a fresh dir: initdb, start and migrations must not race.
    first = keel.serve(fresh_data_dir)
    second = keel.serve(fresh_data_dir)
    first.wait_ready()
    second.wait_ready()
    for server in (first, second):
        assert server.get("/health/startup").status_code == 200, server.output()
        assert server.get("/health/ready").status_code == 200
    status = db_status(fresh_data_dir)
    assert json.loads(status["users"]) == sorted([first.pid, second.pid])
    server_pid = status["pid"]

    assert first.stop() == 0, first.output()
    status = db_status(fresh_data_dir)
    assert status["running"] == "True"
    assert status["pid"] == server_pid  # the same server, not a restarted one
    assert json.loads(status["users"]) == [second.pid]
    ready = second.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"]["status"] == "ok"

    assert second.stop() == 0, second.output()
    assert db_status(fresh_data_dir)["running"] == "False"


def _server_version_num(url: str) -> int | None:
    """server_version_num of the server at url, or None if nothing answers there."""
    try:
        result = subprocess.run(
            [str(bin_path("psql")), url, "-XAtc", "SHOW server_version_num"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=os.environ | {"PGCONNECT_TIMEOUT": "5"},
        )
    except subprocess.TimeoutExpired:
        return None
    return int(result.stdout) if result.returncode == 0 else None


def test_migrate_refuses_an_old_postgresql(tmp_path: Path) -> None:
    version_num = _server_version_num(OLD_DATABASE_URL)
    if version_num is None:
        pytest.skip(f"no PostgreSQL answers at {OLD_DATABASE_URL}")
    if version_num >= 170000:
        pytest.skip(f"the server at {OLD_DATABASE_URL} is new enough; nothing to refuse")
    env = keel_env(tmp_path, DATABASE_URL=OLD_DATABASE_URL)
    result = run_keel(tmp_path, "migrate", "upgrade", env=env)
    assert result.returncode == 1
    assert f"PostgreSQL {version_num // 10000}" in result.stderr
    assert "17 or newer" in result.stderr
    assert result.stderr.startswith("error: ")
    assert_no_traceback(result.stdout, result.stderr)
    assert not (tmp_path / "pgdata").exists()  # no embedded server was started instead


@pytest.mark.parametrize("secret", [None, "changeme", "too-short"])
def test_production_without_a_real_secret_refuses_to_serve(
    tmp_path: Path, secret: str | None
) -> None:
    env = keel_env(tmp_path, ENVIRONMENT="production")
    if secret is not None:
        env["SECRET_KEY"] = secret
    result = run_keel(tmp_path, "serve", "--port", str(free_port()), env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "SECRET_KEY" in result.stderr
    assert_no_traceback(result.stdout, result.stderr)
    if secret is not None:
        assert secret not in result.stderr  # the rejected value is not echoed
    assert not (tmp_path / "pgdata").exists()  # refused before touching the database


def test_invalid_settings_are_reported_for_every_command(tmp_path: Path) -> None:
    env = keel_env(tmp_path, DB_POOL_SIZE="0", ENVIRONMENT="staging")
    create_superuser = ["users", "create-superuser", "--email", "a@example.com"]
    create_superuser += ["--username", "admin", "--password", "x" * 20]
    for command in (["db", "status"], ["migrate", "upgrade"], ["serve"], create_superuser):
        result = run_keel(tmp_path, *command, env=env)
        assert result.returncode == 1, command
        assert "DB_POOL_SIZE" in result.stderr
        assert "ENVIRONMENT" in result.stderr
        assert_no_traceback(result.stdout, result.stderr)
