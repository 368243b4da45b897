"""What would hurt in production, found before it does: the checks behind `keel check`.

Settings checks are pure; server checks ask the database once (version, extensions,
`max_connections`). Each finding is an error (the release should stop) or a warning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from keel.config import MIN_SECRET_LENGTH, PLACEHOLDER_SECRETS, Settings
from keel.core.server_checks import DatabaseUnsupported, verify_server

Severity = Literal["error", "warning"]
DEFAULT_ALLOWED_HOSTS = frozenset(Settings.model_fields["allowed_hosts"].get_default())
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
TLS_MODES = frozenset({"require", "verify-ca", "verify-full", "true"})
CONNECTION_WARN_RATIO = 0.8  # of the connections the server leaves to ordinary roles


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    code: str
    message: str


def worker_count(settings: Settings) -> int:
    """How many processes serve: what deploy/gunicorn.conf.py will start."""
    return settings.web_concurrency or os.cpu_count() or 1


def connections_per_process(settings: Settings) -> int:
    """Write pool + read pool + the viewer-invalidation listener."""
    return settings.db_pool_size + settings.db_read_pool_size + 1


def check_settings(settings: Settings, workers: int) -> list[Finding]:
    """Findings from the settings alone."""
    found: list[Finding] = []
    if not settings.is_production:
        found.append(
            Finding(
                "warning",
                "environment",
                f"ENVIRONMENT is {settings.environment!r}, not "
                "'production': production defaults (docs off, host checks) are not in force",
            )
        )
    key = settings.secret_key.get_secret_value() if settings.secret_key else ""
    if key.lower() in PLACEHOLDER_SECRETS or len(key) < MIN_SECRET_LENGTH:
        found.append(
            Finding(
                "error",
                "secret-key",
                "SECRET_KEY is missing or a placeholder; set a random "
                f"value of at least {MIN_SECRET_LENGTH} characters",
            )
        )
    if set(settings.allowed_hosts) <= DEFAULT_ALLOWED_HOSTS:
        found.append(
            Finding(
                "error",
                "allowed-hosts",
                "ALLOWED_HOSTS is left at its default (localhost): "
                "in production every request for your real hostname would be refused",
            )
        )
    if settings.redis_url is None and workers > 1:
        found.append(
            Finding(
                "error",
                "redis",
                f"no REDIS_URL with {workers} workers: each process would "
                "keep its own rate-limit counts, multiplying every limit by the workers",
            )
        )
    if settings.serves_docs and settings.is_production:
        found.append(
            Finding(
                "warning",
                "docs",
                "DOCS_ENABLED=true in production: /docs, /redoc and "
                "/openapi.json describe every operation to anyone",
            )
        )
    if settings.is_production and settings.metrics_token is None:
        found.append(
            Finding(
                "warning",
                "metrics-token",
                "no METRICS_TOKEN: /metrics answers 401 to everyone, Prometheus included",
            )
        )
    found.extend(_check_database_url(settings.database_url))
    if settings.db_pgbouncer and settings.database_direct_url is None:
        found.append(
            Finding(
                "error",
                "pgbouncer",
                "DB_PGBOUNCER=true without DATABASE_DIRECT_URL: "
                "the viewer-cache LISTEN needs a session, which transaction pooling "
                "doesn't keep; give the server's own URL",
            )
        )
    return found


def _check_database_url(url: str | None) -> list[Finding]:
    if url is None:
        return [
            Finding(
                "error",
                "database-url",
                "DATABASE_URL is unset: production needs an "
                "external PostgreSQL 17+ (the embedded server is for development)",
            )
        ]
    parsed = make_url(url)
    host = parsed.host or ""
    local = not host or host in LOCAL_HOSTS or host.startswith("/") or "host" in parsed.query
    mode = str(parsed.query.get("ssl") or parsed.query.get("sslmode") or "").lower()
    if not local and mode not in TLS_MODES:
        return [
            Finding(
                "error",
                "database-tls",
                f"DATABASE_URL reaches {host} without TLS: add "
                "?ssl=require (or verify-full with a CA) to the URL",
            )
        ]
    return []


async def check_server(engine: AsyncEngine, settings: Settings, workers: int) -> list[Finding]:
    """Findings that need the server: version, extensions, room for every pool."""
    try:
        await verify_server(engine)
    except DatabaseUnsupported as exc:
        return [Finding("error", "database", str(exc))]
    except Exception as exc:  # unreachable, refused, wrong password: all stop a release
        return [Finding("error", "database", f"cannot use the database: {exc}")]
    async with engine.connect() as conn:
        max_connections = int(await conn.scalar(text("SHOW max_connections")) or 0)
        reserved = int(await conn.scalar(text("SHOW superuser_reserved_connections")) or 0)
    available = max_connections - reserved
    per_process = connections_per_process(settings)
    needed = per_process * workers
    summary = (
        f"{workers} workers x {per_process} connections (DB_POOL_SIZE + DB_READ_POOL_SIZE + "
        f"1 listener) = {needed}, of the {available} the server allows"
    )
    if needed > available:
        return [
            Finding(
                "error",
                "connections",
                f"{summary}: lower the pools or the workers, or put PgBouncer in front",
            )
        ]
    if needed > available * CONNECTION_WARN_RATIO:
        return [
            Finding(
                "warning",
                "connections",
                f"{summary}: little room for a second replica, migrations or a rolling update",
            )
        ]
    return []
