"""Database insight: snapshot tables for query statistics and relation sizes, and
pgstattuple (for bloat figures) where the server has it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _captured_at() -> sa.Column[datetime]:
    return sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "insight_query_snapshots",
        _captured_at(),
        sa.Column("queryid", sa.BigInteger(), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("total_ms", sa.Double(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("captured_at", "queryid", name=op.f("pk_insight_query_snapshots")),
        schema="app",
    )
    op.create_index(
        "ix_insight_query_snapshots_queryid_captured_at",
        "insight_query_snapshots",
        ["queryid", "captured_at"],
        schema="app",
    )
    op.create_table(
        "insight_space_snapshots",
        _captured_at(),
        sa.Column("relation", sa.Text(), nullable=False),
        sa.Column("total_bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("captured_at", "relation", name=op.f("pk_insight_space_snapshots")),
        schema="app",
    )
    op.create_index(
        "ix_insight_space_snapshots_relation_captured_at",
        "insight_space_snapshots",
        ["relation", "captured_at"],
        schema="app",
    )
    # Optional, and it needs a superuser: without it, bloat is a statistics estimate.
    op.execute(
        """
        DO $$ BEGIN
          IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgstattuple') THEN
            CREATE EXTENSION IF NOT EXISTS pgstattuple;
          END IF;
        EXCEPTION WHEN insufficient_privilege THEN
          RAISE NOTICE 'pgstattuple not created (needs a superuser): bloat is estimated';
        END $$
        """
    )


def downgrade() -> None:
    op.drop_table("insight_space_snapshots", schema="app")
    op.drop_table("insight_query_snapshots", schema="app")
    op.execute("DROP EXTENSION IF EXISTS pgstattuple")
