"""Documents: clients' embeddings, a generated half-precision copy, HNSW indexes.

The dimension, metric, indexed column(s) and HNSW build parameters are read from the
settings (EMBEDDING_DIMENSION, VECTOR_METRIC, VECTOR_INDEX, HNSW_M, HNSW_EF_CONSTRUCTION)
when this runs; changing them afterwards needs a new migration.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import HALFVEC, Vector
from sqlalchemy.dialects import postgresql

from keel.config import Settings, get_settings

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Frozen copies of keel.documents.models' vector layout as of this revision.
HNSW_MAX_DIMENSIONS = {"vector": 2000, "halfvec": 4000}
OPCLASS_SUFFIXES = {
    "cosine": "cosine_ops",
    "l2": "l2_ops",
    "inner_product": "ip_ops",
    "l1": "l1_ops",
}


@dataclass(frozen=True, slots=True)
class VectorColumn:
    name: str
    type_name: str
    index_name: str

    def opclass(self, metric: str) -> str:
        return f"{self.type_name}_{OPCLASS_SUFFIXES[metric]}"


FULL = VectorColumn("embedding", "vector", "ix_documents_embedding_hnsw")
HALF = VectorColumn("embedding_half", "halfvec", "ix_documents_embedding_half_hnsw")
INDEXED_COLUMNS = {"vector": (FULL,), "halfvec": (HALF,), "both": (FULL, HALF)}


def half_vector_sql(dimension: int) -> str:
    return f"embedding::halfvec({dimension})"


def _vector_settings() -> Settings:
    """The settings, refused here if pgvector would refuse the index they describe."""
    settings = get_settings()
    if settings.hnsw_ef_construction < 2 * settings.hnsw_m:
        raise SystemExit(
            f"HNSW_EF_CONSTRUCTION={settings.hnsw_ef_construction} must be at least "
            f"2 * HNSW_M ({2 * settings.hnsw_m})."
        )
    for column in INDEXED_COLUMNS[settings.vector_index]:
        limit = HNSW_MAX_DIMENSIONS[column.type_name]
        if settings.embedding_dimension > limit:
            raise SystemExit(
                f"EMBEDDING_DIMENSION={settings.embedding_dimension} is more than an HNSW index "
                f"on {column.type_name} can hold ({limit}); set VECTOR_INDEX=halfvec or use a "
                "smaller model."
            )
    return settings


def upgrade() -> None:
    settings = _vector_settings()
    dimension = settings.embedding_dimension
    op.create_table(
        "documents",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column(
            "metadata",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("embedding", Vector(dimension), nullable=False),
        sa.Column(
            "embedding_half",
            HALFVEC(dimension),
            sa.Computed(half_vector_sql(dimension), persisted=True),
            nullable=True,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["app.users.id"],
            name=op.f("fk_documents_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
        schema="app",
    )
    op.create_index("ix_documents_owner_id", "documents", ["owner_id"], schema="app")
    op.create_index(
        "ix_documents_metadata",
        "documents",
        ["metadata"],
        schema="app",
        postgresql_using="gin",
        postgresql_ops={"metadata": "jsonb_path_ops"},
    )
    # The table is new and empty, so building the graph inside the transaction is instant.
    for column in INDEXED_COLUMNS[settings.vector_index]:
        op.create_index(
            column.index_name,
            "documents",
            [column.name],
            schema="app",
            postgresql_using="hnsw",
            postgresql_with={
                "m": settings.hnsw_m,
                "ef_construction": settings.hnsw_ef_construction,
            },
            postgresql_ops={column.name: column.opclass(settings.vector_metric)},
        )
    op.execute(
        "CREATE TRIGGER documents_set_updated_at BEFORE UPDATE ON app.documents "
        "FOR EACH ROW EXECUTE FUNCTION app.set_updated_at()"
    )


def downgrade() -> None:
    # The indexes and the trigger go with the table.
    op.drop_table("documents", schema="app")
