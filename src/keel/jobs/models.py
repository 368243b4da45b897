"""The job queue's table: PostgreSQL itself is the queue (claimed with SKIP LOCKED)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, Integer, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from keel.core.columns import created_at_column, optional_timestamp_column, updated_at_column
from keel.core.ids import uuid7


class JobStatus(StrEnum):
    QUEUED = "queued"  # waiting for run_at
    RUNNING = "running"  # claimed by a worker until locked_at + the lease
    FAILED = "failed"  # out of attempts; kept, with last_error, until retried or purged


class Job(SQLModel, table=True):
    """One unit of background work. Finished jobs are deleted; failed ones stay visible."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_ready", "run_at", postgresql_where=text("status = 'queued'")),
        Index("ix_jobs_running", "locked_at", postgresql_where=text("status = 'running'")),
        Index(
            "ix_jobs_tenant_id_created_at",
            "tenant_id",
            text("created_at DESC"),
            postgresql_where=text("tenant_id IS NOT NULL"),
        ),
        CheckConstraint("status IN ('queued', 'running', 'failed')", name="status"),
        {"schema": "app"},
    )

    id: UUID = Field(default_factory=uuid7, primary_key=True)
    # The organization the job works for; NULL for the platform's own jobs.
    tenant_id: UUID | None = Field(
        default=None,
        sa_column=Column(ForeignKey("app.organizations.id", ondelete="CASCADE"), nullable=True),
    )
    kind: str = Field(sa_column=Column(Text, nullable=False))
    payload: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )
    status: str = Field(
        default=JobStatus.QUEUED,
        sa_column=Column(Text, nullable=False, server_default=text("'queued'")),
    )
    attempts: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )
    max_attempts: int = Field(
        default=5, sa_column=Column(Integer, nullable=False, server_default=text("5"))
    )
    run_at: datetime | None = Field(default=None, sa_column=created_at_column())
    locked_at: datetime | None = Field(default=None, sa_column=optional_timestamp_column())
    locked_by: str | None = Field(default=None, sa_column=Column(Text))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    # W3C traceparent of the span that queued the job (migration 0011); rows inserted by
    # triggers take it from the transaction's `keel.trace_parent` setting.
    trace_parent: str | None = Field(
        default=None,
        sa_column=Column(
            Text,
            # As PostgreSQL spells it back, so autogenerate sees no difference.
            server_default=text(
                "NULLIF(current_setting('keel.trace_parent'::text, true), ''::text)"
            ),
        ),
    )
    created_at: datetime | None = Field(default=None, sa_column=created_at_column())
    updated_at: datetime | None = Field(default=None, sa_column=updated_at_column())
