"""Import records: what each import into an organization did, for its owners and admins.

A committed import writes its record in its own transaction, with its data. An atomic
import refused for rejected rows is rolled back first, then its record (status
`rejected`) is written in a short transaction of its own on the same session: no second
connection is taken while the import holds one. Files refused whole (malformed, over a
cap, a timeout) never ran to a report and leave no record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from keel.bulk import history_repository
from keel.bulk.schemas import ImportPage, ImportRecordDetail, ImportRecordPublic, ImportReport
from keel.core.db import driver_connection
from keel.core.errors import NotFound
from keel.core.ids import uuid7
from keel.orgs.permissions import OrgActor, Permission

NOT_FOUND = "No such import."


@dataclass(frozen=True, slots=True)
class Target:
    """Where posts land: the organization, and who imports (None: `keel import`)."""

    tenant_id: UUID
    actor_id: UUID | None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def _values(target: Target, report: ImportReport, strategy: str) -> dict[str, Any]:
    return {
        "tenant_id": target.tenant_id,
        "id": uuid7(),
        "actor_id": target.actor_id,
        "kind": report.kind.value,
        "format": report.format,
        "on_conflict": report.on_conflict.value,
        "atomic": report.atomic,
        "strategy": strategy,
        "status": "committed" if report.committed else "rejected",
        "rows": report.rows,
        "inserted": report.inserted,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "skipped": report.skipped,
        "rejected_count": report.rejected_count,
        "rejected": [r.model_dump(mode="json", exclude_none=True) for r in report.rejected],
        "rejected_truncated": report.rejected_truncated,
        "created_at": target.started_at,
    }


async def record(
    conn: asyncpg.Connection, target: Target, report: ImportReport, strategy: str
) -> UUID:
    """Record a committed import in its own transaction. Returns the record's id."""
    values = _values(target, report, strategy)
    await history_repository.insert_record(conn, values)
    return UUID(str(values["id"]))


async def record_after_rollback(
    session: AsyncSession, target: Target, report: ImportReport, strategy: str
) -> UUID:
    """Roll a refused atomic import back, then record it in a short transaction of its own.

    The one place imports commit by themselves: the caller's transaction had written
    nothing that should stay (a staging table, its settings, the idempotency key's lock).
    """
    await session.rollback()
    record_id = await record(await driver_connection(session), target, report, strategy)
    await session.commit()
    return record_id


async def list_imports(
    session: AsyncSession, actor: OrgActor, before: UUID | None, limit: int
) -> ImportPage:
    """The organization's imports, newest first, a keyset page at a time."""
    actor.require(Permission.IMPORTS_VIEW)
    found = await history_repository.list_records(session, actor.organization_id, before, limit + 1)
    items = [ImportRecordPublic.model_validate(row) for row in found[:limit]]
    return ImportPage(items=items, next=items[-1].id if len(found) > limit else None)


async def get_import(session: AsyncSession, actor: OrgActor, import_id: UUID) -> ImportRecordDetail:
    """One import of the organization, with its first rejected rows; 404 if not its own."""
    actor.require(Permission.IMPORTS_VIEW)
    found = await history_repository.get_record(session, actor.organization_id, import_id)
    if found is None:
        raise NotFound(NOT_FOUND)
    return ImportRecordDetail.model_validate(found)
