"""Import records (migration 0015): one row per import of an organization's data."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Boolean, CheckConstraint, Column, ForeignKey, Index, Integer, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from keel.core.columns import created_at_column, tenant_column
from keel.core.ids import uuid7

IMPORT_STATUSES = ("committed", "rejected")  # rejected: atomic, with rejected rows; rolled back


def _count_column() -> Any:
    return Column(Integer, nullable=False, server_default=text("0"))


class ImportRecord(SQLModel, table=True):
    """What one import did. Ids are UUIDv7: newest first is the primary key backwards."""

    __tablename__ = "imports"
    __table_args__ = (
        Index("ix_imports_actor_id", "actor_id"),
        CheckConstraint("status IN ('committed', 'rejected')", name="status"),
        CheckConstraint("strategy IN ('merge', 'upsert')", name="strategy"),
        {"schema": "app"},
    )

    tenant_id: UUID = Field(sa_column=tenant_column())
    id: UUID = Field(default_factory=uuid7, primary_key=True)
    actor_id: UUID | None = Field(
        default=None,
        sa_column=Column(ForeignKey("app.users.id", ondelete="SET NULL"), nullable=True),
    )
    kind: str = Field(sa_column=Column(Text, nullable=False))
    format: str = Field(sa_column=Column(Text, nullable=False))
    on_conflict: str = Field(sa_column=Column(Text, nullable=False))
    atomic: bool = Field(sa_column=Column(Boolean, nullable=False))
    strategy: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(sa_column=Column(Text, nullable=False))
    rows: int = Field(default=0, sa_column=_count_column())
    inserted: int = Field(default=0, sa_column=_count_column())
    updated: int = Field(default=0, sa_column=_count_column())
    unchanged: int = Field(default=0, sa_column=_count_column())
    skipped: int = Field(default=0, sa_column=_count_column())
    rejected_count: int = Field(default=0, sa_column=_count_column())
    rejected: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=Column(JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    )
    rejected_truncated: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    created_at: datetime | None = Field(default=None, sa_column=created_at_column())
    finished_at: datetime | None = Field(default=None, sa_column=created_at_column())
