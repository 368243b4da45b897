"""The container image's start command, run here as a real process.

The argv and environment come from `deploy/Dockerfile` itself (its runtime stage's CMD and
ENV), in a working directory laid out like the image's `/app`, against a migrated database
on the embedded server. No Docker engine runs here, so the image is not built: this runs
what the image would run, with this checkout's virtualenv standing in for the image's.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.support import (
    DEPLOY,
    STOP_TIMEOUT_S,
    clean_environ,
    image_command,
    image_environment,
    wait_for,
)
from tests.processes import children_of, free_port

WORKERS = 2
METRICS_TOKEN = secrets.token_urlsafe(24)
# Anonymous, takes JSON: it can be held in flight (a signed-in route answers 401 unread).
HELD_PATH = "/api/v1/auth/signup"


class Gunicorn:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path, tmp: Path) -> None:
        self.proc, self.port, self.log, self.tmp = proc, port, log, tmp

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return f"exit code {self.proc.poll()}\n{self.log.read_text(errors='replace')}"

    def get(self, path: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        return httpx.get(self.base_url + path, headers=headers, timeout=30)

    def workers_except(self, dead: int | None = None) -> list[int] | None:
        """The worker pids once all WORKERS are up and `dead` is not among them."""
        pids = sorted(children_of(self.proc.pid))
        return pids if len(pids) == WORKERS and dead not in pids else None

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"gunicorn exited\n{self.output()}")
        try:
            return self.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    def served_count(self) -> float:
        text = self.get("/metrics").text
        pattern = r'^keel_http_requests_total\{method="GET",route="/health",status="200"\} (\S+)$'
        match = re.search(pattern, text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0


@pytest.fixture
def gunicorn(test_database_url: str, tmp_path: Path) -> Iterator[Gunicorn]:
    app_dir = tmp_path / "app"  # the image's WORKDIR: only deploy/gunicorn.conf.py in it
    (app_dir / "deploy").mkdir(parents=True)
    shutil.copy(DEPLOY / "gunicorn.conf.py", app_dir / "deploy" / "gunicorn.conf.py")
    port = free_port()
    env = clean_environ() | image_environment()
    env |= {
        "KEEL_DATA_DIR": str(tmp_path / "data"),
        "PORT": str(port),
        "DATABASE_URL": test_database_url,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "METRICS_TOKEN": METRICS_TOKEN,
        "ALLOWED_HOSTS": "127.0.0.1",
        "WEB_CONCURRENCY": str(WORKERS),
        "WORKER_ENABLED": "false",
        "SHUTDOWN_GRACE_SECONDS": "60",
        "TMPDIR": str(tmp_path),
        # The image puts its virtualenv first on PATH; here that is this interpreter's.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    }
    assert env["ENVIRONMENT"] == "production"
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - the Dockerfile's own CMD
            image_command(),
            cwd=app_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Gunicorn(proc, port, log, tmp_path)
    try:
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_the_image_command_serves_aggregates_metrics_replaces_workers_and_drains(
    gunicorn: Gunicorn,
) -> None:
    assert image_command()[0] == "gunicorn"
    wait_for(gunicorn.healthy, "gunicorn to serve /health")
    workers = wait_for(lambda: gunicorn.workers_except(), "the workers")
    # The config made its own multiprocess dir (none was given), in TMPDIR.
    (metrics_dir,) = gunicorn.tmp.glob("keel-metrics-*")

    # Serves, and /metrics on whichever worker answers sums every worker's counts.
    before = gunicorn.served_count()
    requests = 40
    for _ in range(requests):  # a new connection each: the kernel spreads them over workers
        assert gunicorn.get("/health").status_code == 200
    wait_for(lambda: gunicorn.served_count() >= before + requests, "the counts to add up", 30)
    assert gunicorn.served_count() == before + requests
    files = [re.search(r"_(\d+)\.db$", path.name) for path in metrics_dir.glob("*.db")]
    counted_pids = {int(match.group(1)) for match in files if match}
    assert set(workers) <= counted_pids, "every worker wrote its own samples"

    # A killed worker is replaced, and the dead one's counts still add up.
    os.kill(workers[0], signal.SIGKILL)
    replaced = wait_for(lambda: gunicorn.workers_except(workers[0]), "a replacement worker")
    assert workers[1] in replaced
    wait_for(gunicorn.healthy, "serving after the worker was replaced")
    assert gunicorn.served_count() >= before + requests

    # SIGTERM: no new connections, the request in flight completes, exit status 0.
    body = b"{}"
    head = (
        f"POST {HELD_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gunicorn.port), timeout=STOP_TIMEOUT_S) as conn:
        conn.sendall(head.encode())
        # uvicorn answers "100 Continue" once the app awaits the body: the request is in flight.
        assert _read_until(conn, b"\r\n\r\n").startswith(b"HTTP/1.1 100 ")
        gunicorn.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: _refused(gunicorn.port), "the listener to close", STOP_TIMEOUT_S)
        conn.sendall(body)
        response = _read_to_end(conn)
    status_line = response.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 422 "), response  # `{}` is not a valid sign-up
    assert response.endswith(b"}"), "the whole body arrived"
    assert gunicorn.proc.wait(STOP_TIMEOUT_S) == 0, gunicorn.output()
    assert not any(Path(f"/proc/{pid}").exists() for pid in replaced)
    assert not metrics_dir.exists(), "the config removes the metrics dir it made"
    assert "Traceback" not in gunicorn.output()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def _read_until(conn: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data and (chunk := conn.recv(65536)):
        data += chunk
    return data


def _read_to_end(conn: socket.socket) -> bytes:
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)
