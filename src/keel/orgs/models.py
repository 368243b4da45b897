"""Organizations, memberships and invitations (migration 0012).

The tenant key is `tenant_id` everywhere an organization owns a row, so the tables
that part 2 scopes (posts, documents, jobs, imports) and these line up for Citus:
these three are small and joined from everywhere, so they become reference tables.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import CITEXT
from sqlmodel import Field, SQLModel

from keel.core.columns import created_at_column, optional_timestamp_column, tenant_column
from keel.core.ids import uuid7

NAME_MAX = 100
ROLES_CHECK = "role IN ('owner', 'admin', 'member', 'viewer')"


class Organization(SQLModel, table=True):
    __tablename__ = "organizations"
    __table_args__ = (
        CheckConstraint(f"char_length(name) BETWEEN 1 AND {NAME_MAX}", name="name_length"),
        {"schema": "app"},
    )

    id: UUID = Field(default_factory=uuid7, primary_key=True)
    name: str = Field(sa_column=Column(Text, nullable=False))
    slug: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    # Made at sign-up for one account; it can't be deleted and its slug is `~username`.
    personal: bool = Field(
        default=False,
        sa_column=Column(Boolean, nullable=False, server_default=text("false")),
    )
    created_at: datetime | None = Field(default=None, sa_column=created_at_column())


class Membership(SQLModel, table=True):
    __tablename__ = "memberships"
    __table_args__ = (
        # The viewer query reads a user's memberships from this index alone.
        Index("ix_memberships_user_id_tenant_id_role", "user_id", "tenant_id", "role"),
        CheckConstraint(ROLES_CHECK, name="role_known"),
        {"schema": "app"},
    )

    tenant_id: UUID = Field(sa_column=tenant_column())
    user_id: UUID = Field(
        sa_column=Column(
            ForeignKey("app.users.id", ondelete="CASCADE"), primary_key=True, nullable=False
        )
    )
    role: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime | None = Field(default=None, sa_column=created_at_column())


class Invitation(SQLModel, table=True):
    """An emailed, single-use, expiring invitation; only a SHA-256 of its token is stored."""

    __tablename__ = "invitations"
    __table_args__ = (CheckConstraint(ROLES_CHECK, name="role_known"), {"schema": "app"})

    tenant_id: UUID = Field(sa_column=tenant_column())
    id: UUID = Field(default_factory=uuid7, primary_key=True)
    email: str = Field(sa_column=Column(CITEXT, nullable=False))
    role: str = Field(sa_column=Column(Text, nullable=False))
    token_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False, unique=True))
    invited_by: UUID | None = Field(
        default=None, sa_column=Column(ForeignKey("app.users.id", ondelete="SET NULL"))
    )
    created_at: datetime | None = Field(default=None, sa_column=created_at_column())
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    accepted_at: datetime | None = Field(default=None, sa_column=optional_timestamp_column())
    revoked_at: datetime | None = Field(default=None, sa_column=optional_timestamp_column())
