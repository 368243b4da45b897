"""SQL for posts: visibility, filters, keyset and offset pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, Select, or_, select, true, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer, joinedload
from sqlmodel import col

from keel.posts.models import Post
from keel.users.models import User


@dataclass(frozen=True, slots=True)
class PostFilters:
    author_id: UUID | None = None
    published: bool | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def visible_to(viewer: User) -> ColumnElement[bool]:
    """Published posts, plus the viewer's own drafts; admins see everything."""
    if viewer.is_superuser:
        return true()
    return or_(col(Post.is_published).is_(True), col(Post.author_id) == viewer.id)


# Reads never need the tsvector (often larger than the content) nor the author's
# private columns: the response carries only the public profile.
_PUBLIC_AUTHOR: tuple[Any, ...] = (User.id, User.username, User.full_name, User.created_at)
_POST_SEARCH: Any = Post.search
_POST_AUTHOR: Any = Post.author
READ_OPTIONS = (defer(_POST_SEARCH), joinedload(_POST_AUTHOR).load_only(*_PUBLIC_AUTHOR))


def _with_author(statement: Select[Post]) -> Select[Post]:
    return statement.options(*READ_OPTIONS)


async def get_visible(session: AsyncSession, post_id: UUID, viewer: User) -> Post | None:
    statement = _with_author(select(Post).where(col(Post.id) == post_id, visible_to(viewer)))
    return (await session.scalars(statement)).first()


def list_visible_statement(
    viewer: User,
    filters: PostFilters,
    *,
    limit: int,
    after: tuple[datetime, UUID] | None = None,
    offset: int = 0,
) -> Select[Post]:
    """Newest first (id breaks ties). `after` continues a keyset page; `offset` skips rows."""
    statement = select(Post).where(visible_to(viewer))
    if filters.author_id is not None:
        statement = statement.where(col(Post.author_id) == filters.author_id)
    if filters.published is not None:
        statement = statement.where(col(Post.is_published).is_(filters.published))
    if filters.created_after is not None:
        statement = statement.where(col(Post.created_at) > filters.created_after)
    if filters.created_before is not None:
        statement = statement.where(col(Post.created_at) < filters.created_before)
    if after is not None:
        statement = statement.where(tuple_(col(Post.created_at), col(Post.id)) < tuple_(*after))
    statement = statement.order_by(col(Post.created_at).desc(), col(Post.id).desc())
    return _with_author(statement.offset(offset).limit(limit))


async def list_visible(
    session: AsyncSession,
    viewer: User,
    filters: PostFilters,
    *,
    limit: int,
    after: tuple[datetime, UUID] | None = None,
    offset: int = 0,
) -> list[Post]:
    statement = list_visible_statement(viewer, filters, limit=limit, after=after, offset=offset)
    return list((await session.scalars(statement)).unique().all())


async def save(session: AsyncSession, post: Post) -> Post:
    """Flush `post` and load what the database computed (timestamps) and its author."""
    session.add(post)
    await session.flush()
    await session.refresh(post, attribute_names=["created_at", "updated_at"])
    loaded = await get_by_id(session, post.id)
    assert loaded is not None  # noqa: S101 - just flushed in this transaction
    return loaded


async def get_by_id(session: AsyncSession, post_id: UUID) -> Post | None:
    statement = _with_author(select(Post).where(col(Post.id) == post_id))
    return (await session.scalars(statement.execution_options(populate_existing=True))).first()


async def delete(session: AsyncSession, post: Post) -> None:
    await session.delete(post)
    await session.flush()
