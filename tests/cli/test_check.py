"""`keel check`: each production hazard is reported, and errors fail the command."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from keel.config import Settings
from keel.core.preflight import check_settings
from tests.deploy.support import clean_environ

SECRET = secrets.token_urlsafe(48)
PRODUCTION = {
    "ENVIRONMENT": "production",
    "SECRET_KEY": SECRET,
    "METRICS_TOKEN": secrets.token_urlsafe(24),
    "ALLOWED_HOSTS": "api.example.com",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "WEB_CONCURRENCY": "2",
}


def keel_check(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "keel", "check", *args],
        env=clean_environ() | {"KEEL_DATA_DIR": str(tmp_path)} | env,
        cwd=tmp_path,  # no .env
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def codes(settings: Settings, workers: int = 1) -> dict[str, str]:
    return {f.code: f.severity for f in check_settings(settings, workers)}


def production(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "production",
        "secret_key": SECRET,
        "metrics_token": "m" * 20,
        "allowed_hosts": ["api.example.com"],
        "redis_url": "redis://redis:6379/0",
        "database_url": "postgresql://keel:pw@db.internal/keel?ssl=require",
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_a_sound_production_configuration_has_no_findings() -> None:
    assert codes(production(), workers=4) == {}


@pytest.mark.parametrize(
    ("overrides", "workers", "code", "severity"),
    [
        ({"allowed_hosts": ["localhost", "127.0.0.1"]}, 1, "allowed-hosts", "error"),
        ({"redis_url": None}, 2, "redis", "error"),
        ({"database_url": "postgresql://keel:pw@db.internal/keel"}, 1, "database-tls", "error"),
        ({"database_url": None}, 1, "database-url", "error"),
        ({"docs_enabled": True}, 1, "docs", "warning"),
        ({"metrics_token": None}, 1, "metrics-token", "warning"),
        ({"db_pgbouncer": True}, 1, "pgbouncer", "error"),
    ],
)
def test_each_hazard_is_reported(
    overrides: dict[str, object], workers: int, code: str, severity: str
) -> None:
    assert codes(production(**overrides), workers) == {code: severity}


def test_one_worker_needs_no_redis_and_a_local_server_no_tls() -> None:
    local = "postgresql://keel:pw@127.0.0.1:5432/keel"
    assert codes(production(redis_url=None, database_url=local), workers=1) == {}


def test_a_placeholder_secret_outside_production_is_still_an_error() -> None:
    settings = Settings(_env_file=None, environment="testing", secret_key="changeme")
    assert codes(settings)["secret-key"] == "error"
    assert codes(settings)["environment"] == "warning"


def test_keel_check_passes_a_sound_configuration(tmp_path: Path, test_database_url: str) -> None:
    result = keel_check(tmp_path, DATABASE_URL=test_database_url, **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 error(s), 0 warning(s)" in result.stdout


def test_keel_check_fails_when_the_pools_exceed_the_server(
    tmp_path: Path, test_database_url: str
) -> None:
    result = keel_check(tmp_path, "--workers", "64", DATABASE_URL=test_database_url, **PRODUCTION)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ERROR [connections] 64 workers x 21 connections" in result.stdout


def test_keel_check_refuses_a_placeholder_secret(tmp_path: Path) -> None:
    result = keel_check(tmp_path, **(PRODUCTION | {"SECRET_KEY": "changeme"}))
    assert result.returncode == 1
    assert "SECRET_KEY is missing or a placeholder" in result.stderr
    assert "Traceback" not in result.stderr
