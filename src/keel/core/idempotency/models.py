"""Stored answers to requests sent with an `Idempotency-Key`, per caller, until they expire."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Column, DateTime, ForeignKey, Index, Integer, LargeBinary, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from keel.core.columns import created_at_column


class IdempotencyKey(SQLModel, table=True):
    """One key of one caller: the request's fingerprint and the response it got."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        Index("ix_idempotency_keys_expires_at", "expires_at"),
        {"schema": "app"},
    )

    user_id: UUID = Field(
        sa_column=Column(
            ForeignKey("app.users.id", ondelete="CASCADE"), primary_key=True, nullable=False
        )
    )
    key: str = Field(sa_column=Column(Text, primary_key=True, nullable=False))
    # sha256 of method, path, query and body: the same key with another request is refused.
    fingerprint: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status_code: int = Field(sa_column=Column(Integer, nullable=False))
    headers: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime | None = Field(default=None, sa_column=created_at_column())
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
