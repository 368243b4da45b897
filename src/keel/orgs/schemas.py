"""Request and response bodies of `/orgs` and `/invitations`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from keel.core.viewer import Role
from keel.orgs.models import NAME_MAX

# Personal organizations' slugs are `~username`: no chosen slug can look like one.
SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$"


def _stripped(name: str) -> str:
    """Stored without surrounding whitespace; nothing but whitespace is no name."""
    if not name.strip():
        raise ValueError("The name must not be blank.")
    return name.strip()


# The length caps the name as sent (so the documented maxLength holds), then it is stripped.
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=NAME_MAX), AfterValidator(_stripped)
]
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN, max_length=50)]
TOKEN_MAX = 128


class OrganizationBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    slug: Slug


class OrganizationCreate(OrganizationBase):
    pass


class OrganizationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    slug: Slug | None = None


class OrganizationPublic(BaseModel):
    id: UUID
    name: str
    slug: str
    personal: bool
    created_at: datetime
    role: Role | None = Field(
        default=None, description="Your role here; null for a platform admin who isn't a member"
    )


class MemberPublic(BaseModel):
    user_id: UUID
    username: str
    full_name: str | None
    role: Role
    created_at: datetime


class RoleChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role


class InvitationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    role: Role = Role.MEMBER


class InvitationPublic(BaseModel):
    """An invitation as its organization's admins see it; the token only ever goes by mail."""

    id: UUID
    organization_id: UUID
    email: str
    role: Role
    invited_by: UUID | None
    created_at: datetime
    expires_at: datetime


class InvitationAccept(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: Annotated[str, StringConstraints(min_length=1, max_length=TOKEN_MAX)]
