"""The documents table: clients' own embeddings, a half-precision copy, HNSW indexes.

The dimension, the metric and which column is indexed come from the settings when the
migration runs (see config's vectors section); requests read them back from the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pgvector.sqlalchemy import HALFVEC, Vector
from sqlalchemy import Column, Computed, ForeignKey, Index, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from keel.config import Settings
from keel.core.columns import created_at_column, tenant_column, updated_at_column
from keel.core.ids import uuid7

Metric = Literal["cosine", "l2", "inner_product", "l1"]
METRICS: tuple[Metric, ...] = ("cosine", "l2", "inner_product", "l1")
# pgvector's distance operators; `<#>` is the *negative* inner product (smaller is nearer).
OPERATORS: dict[Metric, str] = {"cosine": "<=>", "l2": "<->", "inner_product": "<#>", "l1": "<+>"}
_OPCLASS_SUFFIXES: dict[Metric, str] = {
    "cosine": "cosine_ops",
    "l2": "l2_ops",
    "inner_product": "ip_ops",
    "l1": "l1_ops",
}
# pgvector's HNSW limits: 2,000 dimensions for vector, 4,000 for halfvec.
HNSW_MAX_DIMENSIONS = {"vector": 2000, "halfvec": 4000}


@dataclass(frozen=True, slots=True)
class VectorColumn:
    """A vector column, its pgvector type and the name its HNSW index gets."""

    name: str
    type_name: Literal["vector", "halfvec"]
    index_name: str

    def sql_type(self, dimension: int) -> str:
        return f"{self.type_name}({dimension})"

    def opclass(self, metric: Metric) -> str:
        return f"{self.type_name}_{_OPCLASS_SUFFIXES[metric]}"


FULL = VectorColumn("embedding", "vector", "ix_documents_embedding_hnsw")
HALF = VectorColumn("embedding_half", "halfvec", "ix_documents_embedding_half_hnsw")
VECTOR_COLUMNS = (FULL, HALF)
INDEXED_COLUMNS: dict[str, tuple[VectorColumn, ...]] = {
    "vector": (FULL,),
    "halfvec": (HALF,),
    "both": (FULL, HALF),
}


def half_vector_sql(dimension: int) -> str:
    return f"embedding::{HALF.sql_type(dimension)}"


def hnsw_indexes(settings: Settings) -> list[Index]:
    """The HNSW index(es) the migration builds for these settings."""
    return [
        Index(
            column.index_name,
            column.name,
            postgresql_using="hnsw",
            postgresql_with={
                "m": settings.hnsw_m,
                "ef_construction": settings.hnsw_ef_construction,
            },
            postgresql_ops={column.name: column.opclass(settings.vector_metric)},
        )
        for column in INDEXED_COLUMNS[settings.vector_index]
    ]


# The model describes the default layout, never reading the environment (importing it
# must not fail on bad settings). Its vector types carry no dimension, so autogenerate
# and the drift test accept any EMBEDDING_DIMENSION; with a VECTOR_INDEX other than the
# default they see the other HNSW index(es): leave those out of a generated revision.
DEFAULTS = Settings.model_construct()


class Document(SQLModel, table=True):
    __tablename__ = "documents"
    __table_args__ = (
        Index("ix_documents_tenant_id_owner_id", "tenant_id", "owner_id"),
        Index("ix_documents_owner_id", "owner_id"),
        Index(
            "ix_documents_tenant_id_metadata",
            "tenant_id",
            "metadata",
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
        ),
        *hnsw_indexes(DEFAULTS),
        {"schema": "app"},
    )

    tenant_id: UUID = Field(sa_column=tenant_column())
    id: UUID = Field(default_factory=uuid7, primary_key=True)
    owner_id: UUID = Field(
        sa_column=Column(ForeignKey("app.users.id", ondelete="CASCADE"), nullable=False)
    )
    content: str = Field(sa_column=Column(Text, nullable=False))
    metadata_: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )
    # NULL while the server's model has yet to embed `content` (bulk loads of text alone).
    embedding: Any = Field(default=None, sa_column=Column(Vector(), nullable=True))
    # Always equal to `embedding` at half precision: PostgreSQL computes it on write.
    embedding_half: Any = Field(
        default=None,
        sa_column=Column(HALFVEC(), Computed(f"embedding::{HALF.type_name}", persisted=True)),
    )
    created_at: datetime | None = Field(default=None, sa_column=created_at_column())
    updated_at: datetime | None = Field(default=None, sa_column=updated_at_column())
