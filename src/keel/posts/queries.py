"""Public query pieces for posts: who may see a post, and how a post loads with its author.

Other domains that read posts (search) build on these instead of reaching into
`keel.posts.repository`, so the visibility rule has one definition.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, or_, true
from sqlalchemy.orm import defer, joinedload
from sqlmodel import col

from keel.core.viewer import Viewer
from keel.posts.models import Post
from keel.users.models import User


def visible_to(viewer: Viewer) -> ColumnElement[bool]:
    """Published posts, plus the viewer's own drafts; admins see everything."""
    if viewer.is_superuser:
        return true()
    return or_(col(Post.is_published).is_(True), col(Post.author_id) == viewer.user_id)


# A post loads with its author's public profile, never the tsvector (often larger than
# the content) nor the author's private columns.
_PUBLIC_AUTHOR: tuple[Any, ...] = (User.id, User.username, User.full_name, User.created_at)
_POST_SEARCH: Any = Post.search
_POST_AUTHOR: Any = Post.author
READ_OPTIONS = (defer(_POST_SEARCH), joinedload(_POST_AUTHOR).load_only(*_PUBLIC_AUTHOR))
