"""Request and response shapes for posts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from keel.core.types import DbText
from keel.posts.models import TITLE_MAX
from keel.users.schemas import UserPublic

CONTENT_MAX = 100_000
# A visible character somewhere and no NUL anywhere. Stored exactly as sent.
Title = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=TITLE_MAX,
        pattern=r"^[^\x00]*[^\s\x00][^\x00]*$",
    ),
]
Content = Annotated[DbText, Field(max_length=CONTENT_MAX)]


class PostCreate(BaseModel):
    """The author is always the caller; a body naming `author_id` is refused (422)."""

    model_config = ConfigDict(extra="forbid")

    title: Title
    content: Content = ""
    is_published: StrictBool = False


class PostUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    content: Content | None = None
    is_published: StrictBool | None = None


class PostPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    title: str
    content: str
    is_published: bool
    author: UserPublic
    created_at: datetime
    updated_at: datetime


class PostPage(BaseModel):
    items: list[PostPublic]
    limit: int
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )
    offset: int | None = Field(default=None, description="Set when paging by offset.")


class PostSearchHit(PostPublic):
    rank: float = Field(
        description="keyword: ts_rank_cd; semantic and hybrid: the reciprocal-rank score."
    )
    distance: float | None = Field(
        default=None, description="Cosine distance to the query, for semantic matches."
    )
    title_highlight: str = Field(description="HTML-escaped title, matches in <mark>.")
    snippet: str = Field(description="HTML-escaped excerpt, matches in <mark>.")


class PostSearchPage(BaseModel):
    items: list[PostSearchHit]
    limit: int
    offset: int
    query: str
