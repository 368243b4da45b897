"""Slow uploads against a small pool, through a real `keel serve`.

Six uploads (document bulk loads and admin imports) trickle in while other users keep
writing. A request never holds a database connection while it waits on its client, so a
pool of two serves everyone; a third upload of one user is refused at once (before its
body is read), and a body that stops arriving gets 408.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import orjson
import pytest

from keel.core.embedded import EmbeddedPostgres
from tests.drills.helpers import PASSWORD, SlowUpload, sign_up
from tests.test_cli import KeelLauncher, KeelServer

DIMENSION = 384
BODY_TIMEOUT_S = 4
ADMIN = "boss"


def documents(count: int, seed: int) -> bytes:
    vector = [0.0] * DIMENSION
    lines = []
    for n in range(count):
        vector[(seed + n) % DIMENSION] = 1.0
        lines.append(orjson.dumps({"content": f"doc {seed}-{n}", "embedding": vector}))
        vector[(seed + n) % DIMENSION] = 0.0
    return b"\n".join(lines) + b"\n"


def posts_csv(count: int, seed: int) -> bytes:
    rows = [f"slow import {seed}-{n},words,{ADMIN}" for n in range(count)]
    return ("title,content,author_username\n" + "\n".join(rows) + "\n").encode()


def admin_headers(server: KeelServer) -> dict[str, str]:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        tokens = http.post("/api/v1/auth/login", data={"username": ADMIN, "password": PASSWORD})
        assert tokens.status_code == 200, tokens.text
    return {"Authorization": f"Bearer {tokens.json()['access_token']}"}


def idle_in_transaction(data_dir: Path) -> int:
    """The app's connections parked inside a transaction (waiting on something)."""
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'keel' "
        "AND state = 'idle in transaction'"
    )
    argv = [*EmbeddedPostgres(data_dir).psql_argv(), "-XAtc", sql]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)  # noqa: S603
    return int(result.stdout.strip())


@pytest.fixture
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("su") / "d"


def test_slow_uploads_starve_nobody(keel: KeelLauncher, data_dir: Path) -> None:
    server = keel.serve(
        data_dir,
        DB_POOL_SIZE="2",
        DB_POOL_TIMEOUT="2",
        RATE_LIMIT_ENABLED="false",
        WORKER_ENABLED="false",
        BODY_READ_TIMEOUT_SECONDS=str(BODY_TIMEOUT_S),
        HEAVY_OPERATIONS_PER_USER="2",
        HEAVY_OPERATIONS_PER_PROCESS="8",
        FIRST_SUPERUSER_EMAIL="boss@example.com",
        FIRST_SUPERUSER_USERNAME=ADMIN,
        FIRST_SUPERUSER_PASSWORD=PASSWORD,
    )
    server.wait_ready()
    alice, bob, carol = sign_up(server), sign_up(server), sign_up(server)
    admin = admin_headers(server)
    ndjson = {"Content-Type": "application/x-ndjson"}
    csv = {"Content-Type": "text/csv"}
    uploads = [
        SlowUpload(server, "/api/v1/documents/bulk", alice | ndjson, documents(50, 1)),
        SlowUpload(server, "/api/v1/documents/bulk", alice | ndjson, documents(50, 2)),
        SlowUpload(server, "/api/v1/documents/bulk", bob | ndjson, documents(50, 3)),
        SlowUpload(server, "/api/v1/admin/import/posts", admin | csv, posts_csv(50, 4)),
        SlowUpload(server, "/api/v1/admin/import/posts", admin | csv, posts_csv(50, 5)),
    ]
    stalled = SlowUpload(server, "/api/v1/documents/bulk", bob | ndjson, documents(50, 6))
    try:
        for upload in [*uploads, stalled]:
            assert upload.start(), upload.response()  # six bodies in flight, pool of two
        for upload in uploads:
            upload.trickle(every=BODY_TIMEOUT_S / 4)  # slow, but never silent for long

        # A third upload of the same user, and a JSON_TABLE import over the admin's limit:
        # refused at once, their bodies never read.
        third = SlowUpload(server, "/api/v1/documents/bulk", alice | ndjson, documents(5, 7))
        assert not third.start()
        status, headers, _ = third.response()
        assert status == 429
        assert "retry-after" in headers
        json_import = SlowUpload(
            server,
            "/api/v1/admin/import/json",
            admin | {"Content-Type": "application/json"},
            b" " * (30 * 1024 * 1024),
        )
        assert not json_import.start()
        assert json_import.response()[0] == 429

        # Meanwhile everyone else is served, writes included, and no connection waits.
        with httpx.Client(base_url=server.base_url, headers=carol, timeout=30) as http:
            for n in range(5):
                created = http.post("/api/v1/posts", json={"title": f"meanwhile {n}"})
                assert created.status_code == 201, created.text
                assert http.get("/api/v1/users/me").status_code == 200
            assert http.get("/health/ready").status_code == 200
        assert idle_in_transaction(data_dir) == 0

        # The stalled body is answered 408; the others complete.
        status, headers, body = stalled.response()
        assert status == 408, body
        assert headers["content-type"] == "application/problem+json"
        for upload in uploads:
            upload.finish()
        outcomes = [upload.response() for upload in uploads]
        assert [status for status, _, _ in outcomes] == [201, 201, 201, 200, 200], outcomes
        assert [orjson.loads(body)["inserted"] for _, _, body in outcomes] == [50] * 5
    finally:
        for upload in [*uploads, stalled]:
            upload.close()
    assert server.stop() == 0, server.output()
