"""Posts: the author is always the caller; drafts exist only for their author and admins."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.db import ReadPool
from keel.core.errors import Forbidden, NotFound
from keel.core.viewer import Viewer
from keel.posts import repository
from keel.posts.models import Post
from keel.posts.repository import PostFilters as PostFilters  # re-exported
from keel.posts.repository import list_query as list_query  # for EXPLAIN (insight)
from keel.posts.schemas import PostCreate, PostUpdate

NOT_FOUND = "No post with this id."


async def read_post(reads: ReadPool, viewer: Viewer, post_id: UUID) -> dict[str, Any]:
    """The post as `PostPublic` data, if `viewer` may see it (else 404, as if missing)."""
    post = await repository.read_visible(reads, post_id, viewer)
    if post is None:
        raise NotFound(NOT_FOUND)
    return post


async def list_posts(
    reads: ReadPool,
    viewer: Viewer,
    filters: PostFilters,
    *,
    limit: int,
    after: tuple[datetime, UUID] | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Up to `limit` visible posts, newest first, as `PostPublic` data."""
    return await repository.list_visible_rows(
        reads, viewer, filters, limit=limit, after=after, offset=offset
    )


async def create_post(session: AsyncSession, author: Viewer, data: PostCreate) -> Post:
    post = Post(**data.model_dump(), author_id=author.user_id)
    return await repository.save(session, post)


async def _editable(session: AsyncSession, actor: Viewer, post_id: UUID) -> Post:
    """The post if `actor` may change it; 404 if they can't see it, 403 if only see it."""
    post = await repository.get_visible(session, post_id, actor)
    if post is None:
        raise NotFound(NOT_FOUND)
    if post.author_id != actor.user_id and not actor.is_superuser:
        raise Forbidden("Only the author or an administrator may change this post.")
    return post


async def update_post(
    session: AsyncSession, actor: Viewer, post_id: UUID, changes: PostUpdate
) -> Post:
    post = await _editable(session, actor, post_id)
    for name, value in changes.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(post, name, value)
    return await repository.save(session, post)


async def delete_post(session: AsyncSession, actor: Viewer, post_id: UUID) -> None:
    await repository.delete(session, await _editable(session, actor, post_id))
