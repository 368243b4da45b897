"""Alembic environment: async engine, Keel's metadata, only schema `app` compared."""

import asyncio

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from keel.migrations.runner import COMPARE_OPTIONS
from keel.models import metadata

# One fixed key: concurrent `keel migrate` / `keel serve` runs apply migrations once.
MIGRATION_LOCK_KEY = 0x6B65656C  # "keel"


def run_on_connection(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, **COMPARE_OPTIONS)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


async def run_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("sqlalchemy.url is not set; run migrations through `keel migrate`.")
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_on_connection)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("Keel's migrations run online only; use `keel migrate upgrade`.")
asyncio.run(run_online())
