"""Small helpers to make users and sign them in, through the real services."""

from __future__ import annotations

import itertools
from typing import Any
from uuid import uuid4

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.viewer import Viewer
from keel.users.models import User
from keel.users.schemas import AdminUserCreate
from keel.users.service import create_user

PASSWORD = "correct horse battery staple"
_serial = itertools.count(1)


async def make_user(
    app: FastAPI,
    session: AsyncSession,
    *,
    password: str = PASSWORD,
    admin: bool = False,
    **fields: Any,
) -> User:
    n = next(_serial)
    data = AdminUserCreate(
        email=fields.pop("email", f"user{n}@example.com"),
        username=fields.pop("username", f"user{n}"),
        password=password,
        is_superuser=admin,
        **fields,
    )
    return await create_user(session, app.state.services.passwords, data)


async def sign_in(client: AsyncClient, login: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/auth/login", data={"username": login, "password": password}
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def bearer(tokens: dict[str, Any] | str) -> dict[str, str]:
    token = tokens if isinstance(tokens, str) else tokens["access_token"]
    return {"Authorization": f"Bearer {token}"}


async def signed_in(
    app: FastAPI, session: AsyncSession, client: AsyncClient, **fields: Any
) -> tuple[User, dict[str, str]]:
    """A new user and the Authorization header of a fresh session of theirs."""
    user = await make_user(app, session, **fields)
    return user, bearer(await sign_in(client, user.username))


def as_viewer(user: User) -> Viewer:
    """`user` as services see a signed-in caller (the session id is irrelevant to them)."""
    return Viewer(
        user_id=user.id, family_id=uuid4(), is_superuser=user.is_superuser, is_active=True
    )
