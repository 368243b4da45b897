"""The posts table, with a stored, weighted tsvector for full-text search."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import Boolean, Column, Computed, ForeignKey, Index, String, Text, text
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlmodel import Field, Relationship, SQLModel

from keel.core.columns import created_at_column, tenant_column, updated_at_column
from keel.core.ids import uuid7
from keel.users.models import User

TITLE_MAX = 255
# Baked into the generated column when the migration runs (SEARCH_CONFIG setting);
# queries read the configuration back from the database, never from user input.
DEFAULT_SEARCH_CONFIG = "english"


def search_vector_sql(config: str) -> str:
    return (
        f"setweight(to_tsvector('{config}'::regconfig, coalesce(title, '')), 'A') || "
        f"setweight(to_tsvector('{config}'::regconfig, coalesce(content, '')), 'B')"
    )


class Post(SQLModel, table=True):
    __tablename__ = "posts"
    __table_args__ = (
        Index(
            "ix_posts_tenant_id_author_id_created_at",
            "tenant_id",
            "author_id",
            "created_at",
            postgresql_include=["title", "is_published"],
        ),
        Index(
            "ix_posts_tenant_id_created_at_id",
            "tenant_id",
            text("created_at DESC"),
            text("id DESC"),
        ),
        Index("ix_posts_tenant_id_search", "tenant_id", "search", postgresql_using="gin"),
        Index("ix_posts_author_id", "author_id"),
        {"schema": "app"},
    )

    tenant_id: UUID = Field(sa_column=tenant_column())
    id: UUID = Field(default_factory=uuid7, primary_key=True)
    title: str = Field(sa_column=Column(String(TITLE_MAX), nullable=False))
    content: str = Field(sa_column=Column(Text, nullable=False))
    is_published: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    author_id: UUID = Field(
        sa_column=Column(ForeignKey("app.users.id", ondelete="CASCADE"), nullable=False)
    )
    created_at: datetime | None = Field(default=None, sa_column=created_at_column())
    updated_at: datetime | None = Field(default=None, sa_column=updated_at_column())
    search: str | None = Field(
        default=None,
        sa_column=Column(
            TSVECTOR, Computed(search_vector_sql(DEFAULT_SEARCH_CONFIG), persisted=True)
        ),
    )

    author: User = Relationship(sa_relationship_kwargs={"lazy": "raise"})
