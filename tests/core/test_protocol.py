"""Header limits of `keel serve`: a real server, raw sockets, oversized and overfull heads."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli import KeelLauncher, KeelServer, assert_no_traceback, read_to_end

MAX_HEADER_BYTES = 32 * 1024  # the defaults
MAX_HEADER_COUNT = 100


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelServer]:
    launcher = KeelLauncher(log_dir=tmp_path_factory.mktemp("logs"))
    # Outside pytest's basetemp, which another pytest session may reset to mode 0700
    # under the server's own system user (see tests/conftest.py).
    data_dir = Path(tempfile.mkdtemp(prefix="keel-headers-"))
    try:
        running = launcher.serve(data_dir / "d")
        running.wait_ready()
        yield running
        assert_no_traceback(running.stdout(), running.stderr())
    finally:
        launcher.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


def request_head(*fields: tuple[str, str]) -> bytes:
    # Two fields of every request: Host, and Connection (the server closes after answering).
    lines = ["GET /health HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def exchange(server: KeelServer, head: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(head)
        response = read_to_end(conn)
    head_bytes, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


def assert_431(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 431, body
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    problem = json.loads(body)
    assert problem["status"] == 431
    assert str(MAX_HEADER_BYTES) in problem["detail"]


def test_a_head_at_the_limits_is_served(server: KeelServer) -> None:
    fields = [(f"X-Field-{n}", "v") for n in range(MAX_HEADER_COUNT - 3)]
    fields.append(("X-Large", "a" * (MAX_HEADER_BYTES - 4096)))
    status, _, body = exchange(server, request_head(*fields))  # 100 fields in all
    assert status == 200, body


def test_a_header_over_the_byte_limit_gets_431(server: KeelServer) -> None:
    assert_431(*exchange(server, request_head(("X-Large", "a" * (MAX_HEADER_BYTES + 1)))))


def test_one_header_field_too_many_gets_431(server: KeelServer) -> None:
    fields = [(f"X-Field-{n}", "v") for n in range(MAX_HEADER_COUNT - 1)]  # 101 in all
    assert_431(*exchange(server, request_head(*fields)))


def test_a_16_mb_header_is_refused_before_it_is_read(server: KeelServer) -> None:
    size, chunk = 16 * 1024 * 1024, b"a" * 65536
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        try:
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ")
            while sent < size:
                conn.sendall(chunk)
                sent += len(chunk)
            conn.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while the header was still coming
        try:
            response = read_to_end(conn)
        except ConnectionResetError:
            response = b""  # the reset may overtake the answer
    # Only socket buffers' worth was taken, never the whole header.
    assert sent < size
    assert response == b"" or response.startswith(b"HTTP/1.1 431 "), response[:200]
    assert server.get("/health").status_code == 200  # and the server is unharmed
