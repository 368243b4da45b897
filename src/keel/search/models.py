"""Post embeddings: one vector per post, kept beside the post by the background worker.

A separate table rather than a column on posts: writing a vector never touches the post
(its `updated_at`, its row), and the model that made each vector is recorded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pgvector.sqlalchemy import Vector
from sqlalchemy import Column, ForeignKeyConstraint, Index, Text, Uuid
from sqlmodel import Field, SQLModel

from keel.config import Settings
from keel.core.columns import created_at_column, tenant_column

# The migration sizes the vector by EMBEDDING_DIMENSION and builds the index with HNSW_M and
# HNSW_EF_CONSTRUCTION. The model describes the defaults without reading the environment
# (importing it must not fail on bad settings), and its vector type carries no dimension.
_DEFAULTS = Settings.model_construct()


class PostEmbedding(SQLModel, table=True):
    __tablename__ = "post_embeddings"
    __table_args__ = (
        Index(
            "ix_post_embeddings_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with={
                "m": _DEFAULTS.hnsw_m,
                "ef_construction": _DEFAULTS.hnsw_ef_construction,
            },
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
        ForeignKeyConstraint(
            ["tenant_id", "post_id"],
            ["app.posts.tenant_id", "app.posts.id"],
            name="fk_post_embeddings_tenant_id_posts",
            ondelete="CASCADE",
        ),
        {"schema": "app"},
    )

    tenant_id: UUID = Field(sa_column=tenant_column())
    post_id: UUID = Field(sa_column=Column(Uuid, primary_key=True, nullable=False))
    embedding: Any = Field(sa_column=Column(Vector(), nullable=False))
    model: str = Field(sa_column=Column(Text, nullable=False))
    embedded_at: datetime | None = Field(default=None, sa_column=created_at_column())
