"""The users table."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Boolean, CheckConstraint, Column, Index, String, Text, text
from sqlalchemy.dialects.postgresql import CITEXT, JSONB
from sqlmodel import Field, SQLModel

from keel.core.columns import created_at_column, optional_timestamp_column, updated_at_column
from keel.core.ids import uuid7

USERNAME_MIN, USERNAME_MAX = 3, 50
FULL_NAME_MAX = 255

# One expression, used by the trigram index and by the search query, so they match.
SEARCH_EXPRESSION = "lower(username || ' ' || coalesce(full_name, ''))"


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (
        Index("ix_users_email_is_active", "email", "is_active"),
        Index("uq_users_username_lower", text("lower(username)"), unique=True),
        Index("ix_users_created_at_brin", "created_at", postgresql_using="brin"),
        Index(
            "ix_users_search_trgm",
            text(f"({SEARCH_EXPRESSION}) gin_trgm_ops"),
            postgresql_using="gin",
        ),
        CheckConstraint(
            f"char_length(username) BETWEEN {USERNAME_MIN} AND {USERNAME_MAX}",
            name="username_length",
        ),
        {"schema": "app"},
    )

    id: UUID = Field(default_factory=uuid7, primary_key=True)
    email: str = Field(sa_column=Column(CITEXT, nullable=False, unique=True))
    # An address the user asked to move to; it replaces `email` once a mailed token confirms it.
    pending_email: str | None = Field(default=None, sa_column=Column(CITEXT))
    username: str = Field(sa_column=Column(Text, nullable=False))
    full_name: str | None = Field(default=None, sa_column=Column(String(FULL_NAME_MAX)))
    hashed_password: str = Field(sa_column=Column(Text, nullable=False))
    is_active: bool = Field(
        default=True, sa_column=Column(Boolean, nullable=False, server_default=text("true"))
    )
    is_superuser: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    is_verified: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    last_login: datetime | None = Field(default=None, sa_column=optional_timestamp_column())
    metadata_: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )
    created_at: datetime | None = Field(default=None, sa_column=created_at_column())
    updated_at: datetime | None = Field(default=None, sa_column=updated_at_column())
