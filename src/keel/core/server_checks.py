"""Which PostgreSQL servers Keel runs on: 17 or newer, with its extensions.

Refused servers get a `DatabaseUnsupported` whose message says what was found where and
what to do; nothing falls back silently.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

MIN_SERVER_VERSION_NUM = 170000
REQUIRED_EXTENSIONS = ("vector", "pg_trgm", "pg_stat_statements", "citext")


class DatabaseUnsupported(RuntimeError):
    """The configured server cannot run Keel; the message says why and what to do."""


def describe_url(url: str) -> str:
    """Where a URL points, without its password: for messages and logs."""
    parsed = make_url(url)
    where = parsed.query.get("host") or f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    return f"{where}/{parsed.database}"


async def verify_server(
    engine: AsyncEngine, required: tuple[str, ...] = REQUIRED_EXTENSIONS
) -> str:
    """Refuse servers older than PostgreSQL 17 or lacking Keel's extensions.

    Returns the server version string.
    """
    where = describe_url(engine.url.render_as_string(hide_password=True))
    async with engine.connect() as conn:
        version_num = int(await conn.scalar(text("SHOW server_version_num")) or 0)
        version = str(await conn.scalar(text("SHOW server_version")))
        if version_num < MIN_SERVER_VERSION_NUM:
            raise DatabaseUnsupported(
                f"PostgreSQL {version} found at {where}; Keel needs PostgreSQL 17 or newer "
                "(it uses JSON_TABLE, MERGE ... RETURNING and pg_stat_io). Upgrade the server, "
                "or unset DATABASE_URL to use the embedded PostgreSQL 18."
            )
        rows = await conn.execute(
            text("SELECT name FROM pg_available_extensions WHERE name = ANY(:names)"),
            {"names": list(required)},
        )
        missing = sorted(set(required) - {row[0] for row in rows})
    if missing:
        raise DatabaseUnsupported(missing_extensions_message(missing, version, version_num, where))
    return version


def missing_extensions_message(
    missing: list[str], version: str, version_num: int, where: str
) -> str:
    """Say which extensions are missing and how to install them."""
    if "vector" in missing:
        return (
            f"The pgvector extension is not installed on the server at {where} "
            f"(PostgreSQL {version}). Install it, e.g. `apt install postgresql-"
            f"{version_num // 10000}-pgvector` or build it from github.com/pgvector/pgvector, "
            "then run `keel migrate upgrade`."
        )
    return (
        f"Extensions {', '.join(missing)} are not available on the server at {where} "
        f"(PostgreSQL {version}); install the PostgreSQL contrib package for that version."
    )
