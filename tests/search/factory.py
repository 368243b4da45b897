"""Posts and members for search tests, written with SQL (the posts triggers still fire)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.ids import uuid7
from keel.users.models import User
from tests.orgs.factory import add_member
from tests.users.factory import bearer, make_user, sign_in


def search_path(org_id: UUID | str) -> str:
    return f"/api/v1/orgs/{org_id}/search/posts"


async def insert_post(
    session: AsyncSession,
    tenant_id: UUID | str,
    author_id: UUID,
    title: str,
    content: str = "",
    *,
    published: bool = True,
) -> str:
    post_id = uuid7()
    await session.execute(
        text(
            "INSERT INTO app.posts (tenant_id, id, title, content, is_published, author_id)"
            " VALUES (:t, :id, :title, :content, :published, :author)"
        ),
        {
            "t": str(tenant_id),
            "id": post_id,
            "title": title,
            "content": content,
            "published": published,
            "author": author_id,
        },
    )
    return str(post_id)


async def insert_embedding(
    session: AsyncSession, tenant_id: UUID | str, post_id: str, vector: list[float]
) -> None:
    await session.execute(
        text(
            "INSERT INTO app.post_embeddings (tenant_id, post_id, embedding, model)"
            " VALUES (:t, :p, CAST(:v AS vector), 'test')"
        ),
        {"t": str(tenant_id), "p": post_id, "v": str(vector)},
    )


async def member(
    app: FastAPI,
    session: AsyncSession,
    client: AsyncClient,
    org_id: UUID | str,
    role: str,
    **fields: Any,
) -> tuple[User, dict[str, str]]:
    """A new user with `role` in the organization, and their Authorization header."""
    user = await make_user(app, session, **fields)
    await add_member(session, org_id, user.id, role)
    return user, bearer(await sign_in(client, user.username))
