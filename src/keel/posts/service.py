"""Posts of an organization: reading, writing, publishing and deleting, by the role matrix.

Every function takes the `OrgActor` of the active organization, checks one `Permission`
first, and passes the organization to the repository, which filters every statement by
it. A post of another organization, or a draft the caller may not see, is a 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.db import ReadPool
from keel.core.errors import NotFound
from keel.orgs.permissions import OrgActor, Permission
from keel.posts import repository
from keel.posts.models import Post
from keel.posts.repository import PostFilters as PostFilters  # re-exported
from keel.posts.repository import list_query as list_query  # for EXPLAIN (insight)
from keel.posts.schemas import PostCreate, PostUpdate

NOT_FOUND = "No post with this id."


async def read_post(reads: ReadPool, actor: OrgActor, post_id: UUID) -> dict[str, Any]:
    """The post as `PostPublic` data, if `actor` may see it (else 404, as if missing)."""
    actor.require(Permission.POSTS_READ)
    post = await repository.read_visible(reads, actor, post_id)
    if post is None:
        raise NotFound(NOT_FOUND)
    return post


async def list_posts(
    reads: ReadPool,
    actor: OrgActor,
    filters: PostFilters,
    *,
    limit: int,
    after: tuple[datetime, UUID] | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Up to `limit` posts of the organization `actor` may see, newest first."""
    actor.require(Permission.POSTS_READ)
    return await repository.list_visible_rows(
        reads, actor, filters, limit=limit, after=after, offset=offset
    )


async def create_post(session: AsyncSession, actor: OrgActor, data: PostCreate) -> Post:
    actor.require(Permission.POSTS_CREATE)
    if data.is_published:
        actor.require(Permission.POSTS_PUBLISH)
    post = Post(**data.model_dump(), tenant_id=actor.organization_id, author_id=actor.user_id)
    return await repository.save(session, post)


async def _visible(session: AsyncSession, actor: OrgActor, post_id: UUID) -> Post:
    post = await repository.get_visible(session, actor, post_id)
    if post is None:
        raise NotFound(NOT_FOUND)
    return post


async def update_post(
    session: AsyncSession, actor: OrgActor, post_id: UUID, changes: PostUpdate
) -> Post:
    """The author edits (and publishes) their post; admins and owners edit anyone's."""
    post = await _visible(session, actor, post_id)
    own = post.author_id == actor.user_id
    actor.require(Permission.POSTS_EDIT_OWN if own else Permission.POSTS_EDIT_ANY)
    if changes.is_published and not post.is_published:
        actor.require(Permission.POSTS_PUBLISH)
    for name, value in changes.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(post, name, value)
    return await repository.save(session, post)


async def delete_post(session: AsyncSession, actor: OrgActor, post_id: UUID) -> None:
    post = await _visible(session, actor, post_id)
    own = post.author_id == actor.user_id
    actor.require(Permission.POSTS_DELETE_OWN if own else Permission.POSTS_DELETE_ANY)
    await repository.delete(session, post)
