"""Session and one-time token tables.

A login opens a token *family*; every refresh token and access token carries the
family id, so revoking the family (logout, replay, password change) ends the whole
session at once.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import CITEXT
from sqlmodel import Field, SQLModel

from keel.core.columns import created_at_column, optional_timestamp_column
from keel.core.ids import uuid7
from keel.users.models import FULL_NAME_MAX


def _user_fk() -> Column[UUID]:
    return Column(ForeignKey("app.users.id", ondelete="CASCADE"), nullable=False)


class TokenFamily(SQLModel, table=True):
    __tablename__ = "token_families"
    __table_args__ = (Index("ix_token_families_user_id", "user_id"), {"schema": "app"})

    id: UUID = Field(default_factory=uuid7, primary_key=True)
    user_id: UUID = Field(sa_column=_user_fk())
    created_at: datetime | None = Field(default=None, sa_column=created_at_column())
    revoked_at: datetime | None = Field(default=None, sa_column=optional_timestamp_column())
    revoked_reason: str | None = Field(default=None, sa_column=Column(Text))


class RefreshToken(SQLModel, table=True):
    """One row per issued refresh token; `id` is the token's jti."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (Index("ix_refresh_tokens_family_id", "family_id"), {"schema": "app"})

    id: UUID = Field(primary_key=True)
    family_id: UUID = Field(
        sa_column=Column(ForeignKey("app.token_families.id", ondelete="CASCADE"), nullable=False)
    )
    issued_at: datetime | None = Field(default=None, sa_column=created_at_column())
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=optional_timestamp_column())


class ActionPurpose(StrEnum):
    PASSWORD_RESET = "password_reset"  # noqa: S105 - a purpose, not a secret
    VERIFY_EMAIL = "verify_email"


class ActionToken(SQLModel, table=True):
    """Single-use, expiring tokens sent by mail. Only a SHA-256 of the token is stored."""

    __tablename__ = "action_tokens"
    __table_args__ = (
        Index("ix_action_tokens_user_id", "user_id"),
        CheckConstraint("purpose IN ('password_reset', 'verify_email')", name="purpose_known"),
        {"schema": "app"},
    )

    id: UUID = Field(default_factory=uuid7, primary_key=True)
    user_id: UUID = Field(sa_column=_user_fk())
    purpose: str = Field(sa_column=Column(Text, nullable=False))
    token_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False, unique=True))
    # SHA-256 of the lower-cased address the token was mailed to: it only works for that one.
    sent_to_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime | None = Field(default=None, sa_column=created_at_column())
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=optional_timestamp_column())


class SignupRequest(SQLModel, table=True):
    """A sign-up waiting for its address to confirm it (`SIGNUP_ENUMERATION_SAFE`).

    The account is created from this row when the mailed token comes back, so until
    then nothing (no username, no sign-in) tells a new address from a registered one.
    """

    __tablename__ = "signup_requests"
    __table_args__ = ({"schema": "app"},)

    id: UUID = Field(default_factory=uuid7, primary_key=True)
    email: str = Field(sa_column=Column(CITEXT, nullable=False))
    username: str = Field(sa_column=Column(Text, nullable=False))
    full_name: str | None = Field(default=None, sa_column=Column(String(FULL_NAME_MAX)))
    hashed_password: str = Field(sa_column=Column(Text, nullable=False))
    token_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False, unique=True))
    created_at: datetime | None = Field(default=None, sa_column=created_at_column())
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
