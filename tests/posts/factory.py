"""Make posts through the real service, in the author's personal organization by default."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.viewer import Role
from keel.posts.models import Post
from keel.posts.schemas import PostCreate
from keel.posts.service import create_post
from keel.users.models import User
from tests.orgs.factory import acting_in


def posts_url(org_id: UUID | str) -> str:
    """The posts of an organization; a user's personal organization has the user's id."""
    return f"/api/v1/orgs/{org_id}/posts"


async def make_post(
    session: AsyncSession,
    author: User,
    title: str = "A post",
    content: str = "Some words.",
    *,
    published: bool = True,
    org_id: UUID | None = None,
) -> Post:
    """A post by `author` in `org_id` (their personal organization unless given)."""
    role = Role.OWNER if org_id in (None, author.id) else Role.MEMBER
    actor = acting_in(author, org_id, role)
    data = PostCreate(title=title, content=content, is_published=published)
    return await create_post(session, actor, data)
