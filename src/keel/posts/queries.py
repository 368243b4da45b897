"""Public query pieces for posts: who sees a post, and how a post loads with its author.

Other domains that read posts (search) build on these instead of reaching into
`keel.posts.repository`, so the visibility rule has one definition.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.orm import defer, joinedload
from sqlmodel import col

from keel.orgs.permissions import OrgActor, Permission
from keel.posts.models import Post
from keel.users.models import User


def sees_drafts(actor: OrgActor) -> bool:
    """Whoever may edit any post of the organization (admins, owners) sees its drafts."""
    return actor.may(Permission.POSTS_EDIT_ANY)


def visible_to(actor: OrgActor) -> ColumnElement[bool]:
    """The organization's published posts, plus the actor's own drafts (all, for admins).

    Always filtered by the actor's organization: no other tenant's post matches.
    """
    in_tenant = col(Post.tenant_id) == actor.organization_id
    if sees_drafts(actor):
        return in_tenant
    return and_(
        in_tenant, or_(col(Post.is_published).is_(True), col(Post.author_id) == actor.user_id)
    )


# A post loads with its author's public profile, never the tsvector (often larger than
# the content) nor the author's private columns.
_PUBLIC_AUTHOR: tuple[Any, ...] = (User.id, User.username, User.full_name, User.created_at)
_POST_SEARCH: Any = Post.search
_POST_AUTHOR: Any = Post.author
READ_OPTIONS = (defer(_POST_SEARCH), joinedload(_POST_AUTHOR).load_only(*_PUBLIC_AUTHOR))
