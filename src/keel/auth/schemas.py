"""Request and response shapes for authentication."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from keel.users.schemas import Password

# Long enough for any token Keel issues; bounds what a client can make us parse.
TokenString = Annotated[str, Field(min_length=1, max_length=4096)]


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type
    expires_in: int = Field(description="Seconds until the access token expires.")


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: TokenString


class EmailRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr


class PasswordResetConfirm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: TokenString
    new_password: Password


class VerifyConfirm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: TokenString


class Accepted(BaseModel):
    detail: str
