"""Request and response shapes for users. Hashes never appear on any of them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StrictBool, StringConstraints

from keel.core.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from keel.core.types import DbText
from keel.users.models import FULL_NAME_MAX, USERNAME_MAX, USERNAME_MIN

Username = Annotated[
    str,
    StringConstraints(
        min_length=USERNAME_MIN,
        max_length=USERNAME_MAX,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
    ),
]
Password = Annotated[str, Field(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)]
FullName = Annotated[DbText, StringConstraints(max_length=FULL_NAME_MAX)]
MAX_METADATA_KEYS = 50


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    username: Username
    password: Password
    full_name: FullName | None = None


class AdminUserCreate(UserCreate):
    is_active: StrictBool = True
    is_superuser: StrictBool = False
    is_verified: StrictBool = False


CurrentPassword = Annotated[str, Field(max_length=MAX_PASSWORD_LENGTH)]


class UserUpdate(BaseModel):
    """PATCH body. The three flags are for admins: anyone else sending them gets a 403.

    A change of your own `email` needs `current_password`, and takes effect only when
    the new address confirms it (see `pending_email`).
    """

    model_config = ConfigDict(extra="forbid")

    email: EmailStr | None = None
    current_password: CurrentPassword | None = None
    username: Username | None = None
    full_name: FullName | None = None
    metadata: dict[str, Any] | None = Field(default=None, max_length=MAX_METADATA_KEYS)
    is_active: StrictBool | None = None
    is_superuser: StrictBool | None = None
    is_verified: StrictBool | None = None


ADMIN_ONLY_FIELDS = frozenset({"is_active", "is_superuser", "is_verified"})


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: CurrentPassword
    new_password: Password


class UserPublic(BaseModel):
    """What any signed-in user may see of another."""

    model_config = ConfigDict(from_attributes=True)

    id: UUID
    username: str
    full_name: str | None
    created_at: datetime


class UserPrivate(UserPublic):
    """What a user sees of themselves, and admins of anyone."""

    email: str
    pending_email: str | None = Field(
        description="An address you asked to move to; it becomes `email` once confirmed."
    )
    is_active: bool
    is_superuser: bool
    is_verified: bool
    last_login: datetime | None
    metadata: dict[str, Any] = Field(validation_alias="metadata_")
    updated_at: datetime


class UserPage(BaseModel):
    items: list[UserPublic]
    skip: int
    limit: int
