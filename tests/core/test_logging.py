"""One log format: Keel's own lines and stdlib ones (alembic) render the same JSON shape."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.test_cli import assert_no_traceback, run_keel

ENVELOPE = {"event", "level", "timestamp", "logger"}


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Outside pytest's basetemp (see tests/conftest.py); a short path for the socket.
    parent = Path(tempfile.mkdtemp(prefix="keel-log-"))
    yield parent / "d"
    run_keel(parent / "d", "db", "stop")
    shutil.rmtree(parent, ignore_errors=True)


def test_a_migration_logs_every_line_in_one_json_shape(data_dir: Path) -> None:
    result = run_keel(data_dir, "migrate", "upgrade")  # LOG_JSON=true, as in keel_env

    assert result.returncode == 0, result.stderr
    assert_no_traceback(result.stdout, result.stderr)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    loggers = set()
    for line in lines:
        event = json.loads(line)
        assert event.keys() >= ENVELOPE, line
        # Rendered by the same serialiser: compact, nothing added or reordered.
        assert line == orjson.dumps(event).decode(), line
        assert event["level"] == event["level"].lower()
        loggers.add(event["logger"].split(".")[0])
    assert {"alembic", "keel"} <= loggers, lines
    assert any(json.loads(line)["event"].startswith("Running upgrade") for line in lines)
