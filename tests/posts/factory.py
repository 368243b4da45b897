"""Make posts through the real service."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from keel.posts.models import Post
from keel.posts.schemas import PostCreate
from keel.posts.service import create_post
from keel.users.models import User
from tests.users.factory import as_viewer


async def make_post(
    session: AsyncSession,
    author: User,
    title: str = "A post",
    content: str = "Some words.",
    *,
    published: bool = True,
) -> Post:
    data = PostCreate(title=title, content=content, is_published=published)
    return await create_post(session, as_viewer(author), data)
