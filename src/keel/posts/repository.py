"""SQL for posts: visibility, filters, keyset and offset pages.

Every statement is filtered by the organization (`tenant_id`) it is given. Reads
(`read_visible`, `list_visible_rows`) are prepared statements on the read pool that
select exactly the columns a `PostPublic` carries and return dicts of that shape.
Writes go through the ORM session, inside the request's transaction.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from keel.core.db import ReadPool
from keel.orgs.permissions import OrgActor
from keel.posts.models import Post
from keel.posts.queries import READ_OPTIONS, sees_drafts, visible_to


@dataclass(frozen=True, slots=True)
class PostFilters:
    author_id: UUID | None = None
    published: bool | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def _with_author(statement: Select[Post]) -> Select[Post]:
    return statement.options(*READ_OPTIONS)


# --- the read path ------------------------------------------------------------------------

_PUBLIC_POST_COLUMNS = """
    p.id, p.title, p.content, p.is_published, p.created_at, p.updated_at,
    u.id AS author_id, u.username, u.full_name, u.created_at AS author_created_at
FROM app.posts AS p JOIN app.users AS u ON u.id = p.author_id"""
# $3 is the caller, $4 whether they see drafts: the same statement serves everyone.
READ_VISIBLE = f"""SELECT {_PUBLIC_POST_COLUMNS}
WHERE p.tenant_id = $1 AND p.id = $2 AND (p.is_published OR p.author_id = $3 OR $4)"""


def public_post(row: Any) -> dict[str, Any]:
    """A row of `_PUBLIC_POST_COLUMNS` as a `PostPublic`-shaped dict."""
    return {
        "id": row[0],
        "title": row[1],
        "content": row[2],
        "is_published": row[3],
        "author": {"id": row[6], "username": row[7], "full_name": row[8], "created_at": row[9]},
        "created_at": row[4],
        "updated_at": row[5],
    }


async def read_visible(reads: ReadPool, actor: OrgActor, post_id: UUID) -> dict[str, Any] | None:
    row = await reads.fetchrow(
        READ_VISIBLE, actor.organization_id, post_id, actor.user_id, sees_drafts(actor)
    )
    return None if row is None else public_post(row)


# Filter name -> clause, with `{}` for each parameter it takes (numbered when built).
_LIST_FILTERS: dict[str, str] = {
    "tenant": "p.tenant_id = {}",
    "visible": "(p.is_published OR p.author_id = {})",
    "author_id": "p.author_id = {}",
    "published": "p.is_published = {}",
    "created_after": "p.created_at > {}",
    "created_before": "p.created_at < {}",
    "after": "(p.created_at, p.id) < ({}, {})",
}


@functools.cache
def _list_query(filters: tuple[str, ...]) -> str:
    """The list statement for one combination of filters, built from constants only.

    A handful of fixed texts, each prepared once per connection, instead of one
    catch-all statement whose `$n IS NULL OR ...` clauses would defeat the indexes.
    """
    numbers = itertools.count(1)
    clauses = [
        _LIST_FILTERS[name].format(*(f"${next(numbers)}" for _ in range(_arity(name))))
        for name in filters
    ]
    where = " AND ".join(clauses) or "true"
    offset, limit = next(numbers), next(numbers)
    return (
        f"SELECT {_PUBLIC_POST_COLUMNS}\nWHERE {where}\n"
        f"ORDER BY p.created_at DESC, p.id DESC OFFSET ${offset} LIMIT ${limit}"
    )


def _arity(name: str) -> int:
    return _LIST_FILTERS[name].count("{}")


def list_query(
    actor: OrgActor,
    filters: PostFilters,
    *,
    limit: int,
    after: tuple[datetime, UUID] | None = None,
    offset: int = 0,
) -> tuple[str, list[Any]]:
    """The list statement and its arguments: newest first (id breaks ties), one tenant.

    `after` continues a keyset page; `offset` skips rows.
    """
    candidates: list[tuple[str, tuple[Any, ...] | None]] = [
        ("tenant", (actor.organization_id,)),
        ("visible", None if sees_drafts(actor) else (actor.user_id,)),
        ("author_id", None if filters.author_id is None else (filters.author_id,)),
        ("published", None if filters.published is None else (filters.published,)),
        ("created_after", None if filters.created_after is None else (filters.created_after,)),
        ("created_before", None if filters.created_before is None else (filters.created_before,)),
        ("after", after),
    ]
    present = tuple(name for name, values in candidates if values is not None)
    args = [value for _, values in candidates if values is not None for value in values]
    return _list_query(present), [*args, offset, limit]


async def list_visible_rows(
    reads: ReadPool,
    actor: OrgActor,
    filters: PostFilters,
    *,
    limit: int,
    after: tuple[datetime, UUID] | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    sql, args = list_query(actor, filters, limit=limit, after=after, offset=offset)
    return [public_post(row) for row in await reads.fetch(sql, *args)]


# --- the write path -----------------------------------------------------------------------


async def save(session: AsyncSession, post: Post) -> Post:
    """Flush `post` and load what the database computed (timestamps) and its author."""
    session.add(post)
    await session.flush()
    await session.refresh(post, attribute_names=["created_at", "updated_at"])
    loaded = await get_by_id(session, post.tenant_id, post.id)
    assert loaded is not None  # noqa: S101 - just flushed in this transaction
    return loaded


async def get_visible(session: AsyncSession, actor: OrgActor, post_id: UUID) -> Post | None:
    statement = _with_author(select(Post).where(col(Post.id) == post_id, visible_to(actor)))
    return (await session.scalars(statement)).first()


async def get_by_id(session: AsyncSession, tenant_id: UUID, post_id: UUID) -> Post | None:
    statement = _with_author(
        select(Post).where(col(Post.tenant_id) == tenant_id, col(Post.id) == post_id)
    )
    return (await session.scalars(statement.execution_options(populate_existing=True))).first()


async def delete(session: AsyncSession, post: Post) -> None:
    await session.delete(post)
    await session.flush()
