"""Posts: the author is always the caller; drafts exist only for their author and admins."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.errors import Forbidden, NotFound
from keel.posts import repository
from keel.posts.models import Post
from keel.posts.schemas import PostCreate, PostUpdate
from keel.users.models import User

NOT_FOUND = "No post with this id."


async def create_post(session: AsyncSession, author: User, data: PostCreate) -> Post:
    post = Post(**data.model_dump(), author_id=author.id)
    return await repository.save(session, post)


async def get_post(session: AsyncSession, viewer: User, post_id: UUID) -> Post:
    post = await repository.get_visible(session, post_id, viewer)
    if post is None:
        raise NotFound(NOT_FOUND)
    return post


async def _editable(session: AsyncSession, actor: User, post_id: UUID) -> Post:
    """The post if `actor` may change it; 404 if they can't see it, 403 if only see it."""
    post = await get_post(session, actor, post_id)
    if post.author_id != actor.id and not actor.is_superuser:
        raise Forbidden("Only the author or an administrator may change this post.")
    return post


async def update_post(
    session: AsyncSession, actor: User, post_id: UUID, changes: PostUpdate
) -> Post:
    post = await _editable(session, actor, post_id)
    for name, value in changes.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(post, name, value)
    return await repository.save(session, post)


async def delete_post(session: AsyncSession, actor: User, post_id: UUID) -> None:
    await repository.delete(session, await _editable(session, actor, post_id))
