"""The SQL of import records (`app.imports`): every statement is keyed by the tenant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from keel.bulk.models import ImportRecord

_COLUMNS = (
    "tenant_id",
    "id",
    "actor_id",
    "kind",
    "format",
    "on_conflict",
    "atomic",
    "strategy",
    "status",
    "rows",
    "inserted",
    "updated",
    "unchanged",
    "skipped",
    "rejected_count",
    "rejected",
    "rejected_truncated",
    "created_at",
)
_PLACEHOLDERS = [
    f"${i}::jsonb" if name == "rejected" else f"${i}" for i, name in enumerate(_COLUMNS, 1)
]
_INSERT = (
    f"INSERT INTO app.imports ({', '.join(_COLUMNS)}, finished_at) "
    f"VALUES ({', '.join(_PLACEHOLDERS)}, clock_timestamp())"
)


async def insert_record(conn: asyncpg.Connection, values: dict[str, Any]) -> None:
    """One import's row, in the caller's transaction; `values` names every column."""
    args = [
        orjson.dumps(values[name]).decode() if name == "rejected" else values[name]
        for name in _COLUMNS
    ]
    await conn.execute(_INSERT, *args)


_LISTED = [
    col(getattr(ImportRecord, name))
    for name in _COLUMNS
    if name not in {"tenant_id", "rejected", "rejected_truncated"}
]


async def list_records(
    session: AsyncSession, tenant_id: UUID, before: UUID | None, limit: int
) -> Sequence[Any]:
    """The tenant's imports, newest first (ids are UUIDv7), older than `before` if given."""
    statement = select(*_LISTED, col(ImportRecord.finished_at)).where(
        col(ImportRecord.tenant_id) == tenant_id
    )
    if before is not None:
        statement = statement.where(col(ImportRecord.id) < before)
    statement = statement.order_by(col(ImportRecord.id).desc()).limit(limit)
    return (await session.execute(statement)).all()


async def get_record(session: AsyncSession, tenant_id: UUID, import_id: UUID) -> Any | None:
    statement = select(
        *_LISTED,
        col(ImportRecord.finished_at),
        col(ImportRecord.rejected),
        col(ImportRecord.rejected_truncated),
    ).where(col(ImportRecord.tenant_id) == tenant_id, col(ImportRecord.id) == import_id)
    return (await session.execute(statement)).first()
