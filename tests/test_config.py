"""Settings: env parsing, database URLs and the secret-key rules."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from keel.config import Settings
from tests.test_cli import keel_env, run_keel


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


@pytest.mark.parametrize("secret", [None, "", "changeme", "secret", "short-but-real"])
def test_production_refuses_missing_or_placeholder_secret(secret: str | None) -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY is missing or a placeholder"):
        settings(environment="production", secret_key=secret)


def test_production_accepts_a_long_random_secret() -> None:
    configured = settings(environment="production", secret_key="k" * 40)
    assert configured.resolved_secret_key() == "k" * 40


def test_development_generates_and_keeps_a_secret(tmp_path: Path) -> None:
    first = settings(environment="development", data_dir=tmp_path).resolved_secret_key()
    again = settings(environment="development", data_dir=tmp_path).resolved_secret_key()
    assert first == again
    assert len(first) >= 32
    secret_file = tmp_path / "secret_key"
    assert secret_file.read_text() == first
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600


def test_testing_secret_is_random_and_not_written(tmp_path: Path) -> None:
    secret = settings(environment="testing", data_dir=tmp_path).resolved_secret_key()
    assert len(secret) >= 32
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/keel", "postgresql+asyncpg://u:p@db:5432/keel"),
        ("postgres://u@db/keel", "postgresql+asyncpg://u@db/keel"),
        ("postgresql+asyncpg://u@db/keel", "postgresql+asyncpg://u@db/keel"),
        ("", None),
    ],
)
def test_database_url_is_normalised_to_asyncpg(given: str, expected: str | None) -> None:
    assert settings(database_url=given).database_url == expected


def test_database_url_rejects_other_schemes() -> None:
    with pytest.raises(ValidationError, match="DATABASE_URL must start with"):
        settings(database_url="mysql://u@db/keel")


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ENVIRONMENT", "testing")
    monkeypatch.setenv("KEEL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("DB_POOL_SIZE", "7")
    configured = Settings(_env_file=None)
    assert configured.environment == "testing"
    assert configured.data_dir == tmp_path
    assert configured.cors_origins == ["https://a.example", "https://b.example"]
    assert configured.db_pool_size == 7


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("ENVIRONMENT=testing\nREDIS_URL=redis://127.0.0.1:6379/3\n")
    configured = Settings(_env_file=env_file)
    assert configured.redis_url == "redis://127.0.0.1:6379/3"


def test_unknown_environment_is_rejected() -> None:
    with pytest.raises(ValidationError):
        settings(environment="staging")


@pytest.mark.parametrize("origins", ["*", "https://app.example.com,*"])
def test_a_cors_wildcard_with_credentials_is_refused(origins: str) -> None:
    with pytest.raises(ValidationError, match=r"CORS_ORIGINS=\* with CORS_ALLOW_CREDENTIALS"):
        settings(cors_origins=origins)
    allowed = settings(cors_origins=origins, cors_allow_credentials=False)
    assert "*" in allowed.cors_origins


def test_serve_refuses_a_cors_wildcard_with_credentials(tmp_path: Path) -> None:
    result = run_keel(tmp_path, "serve", env=keel_env(tmp_path, CORS_ORIGINS="*"))
    assert result.returncode == 1
    assert "CORS_ORIGINS=* with CORS_ALLOW_CREDENTIALS=true" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "pgdata").exists()  # refused before touching the database
