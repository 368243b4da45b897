"""Helpers for tests that run the deployment's real programs (gunicorn, postgres, pgbouncer)."""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
STARTUP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0

# Keel settings a developer's shell may carry: never let them leak into a test's process.
SETTINGS_PREFIXES = ("DATABASE_", "DB_", "REDIS_", "KEEL_", "PROMETHEUS_", "WEB_", "OTEL_")


def clean_environ() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(SETTINGS_PREFIXES)
        and key.upper() not in {"ENVIRONMENT", "SECRET_KEY", "METRICS_TOKEN", "PORT"}
    }


def _runtime_stage() -> list[str]:
    """The Dockerfile's instructions after its last FROM, continuation lines joined."""
    joined = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    last_from = max(i for i, line in enumerate(instructions) if line.upper().startswith("FROM "))
    return instructions[last_from + 1 :]


def image_command() -> list[str]:
    """The image's start command: the runtime stage's CMD (exec form)."""
    cmd = [line for line in _runtime_stage() if line.upper().startswith("CMD ")]
    argv: list[str] = json.loads(cmd[-1][4:])
    return argv


def image_environment() -> dict[str, str]:
    """The runtime stage's ENV values, except PATH (the test's venv is on it already)."""
    env: dict[str, str] = {}
    for line in _runtime_stage():
        if line.upper().startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = value
    env.pop("PATH", None)
    return env


def wait_for[T](probe: Callable[[], T | None], what: str, timeout: float = STARTUP_TIMEOUT_S) -> T:
    """Poll probe until it returns something truthy; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
