"""Import records: one row per import of an organization's data, with its counts.

`app.imports` is tenant-scoped like posts: `tenant_id` (the organization, ON DELETE
CASCADE) leads the primary key `(tenant_id, id)`, and ids are UUIDv7, so the newest-first
listing walks the primary key backwards. `actor_id` is who ran it (NULL for `keel import`
and once that account is deleted). A committed import writes its row in the same
transaction as its data; an atomic import refused for rejected rows writes one with
status `rejected` in a short transaction of its own, after its data rolled back.

On Citus it is distributed by `tenant_id`, colocated with posts.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _count(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.Integer(), server_default=sa.text("0"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "imports",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("format", sa.Text(), nullable=False),
        sa.Column("on_conflict", sa.Text(), nullable=False),
        sa.Column("atomic", sa.Boolean(), nullable=False),
        sa.Column("strategy", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        _count("rows"),
        _count("inserted"),
        _count("updated"),
        _count("unchanged"),
        _count("skipped"),
        _count("rejected_count"),
        sa.Column(
            "rejected",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "rejected_truncated", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "finished_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("status IN ('committed', 'rejected')", name=op.f("ck_imports_status")),
        sa.CheckConstraint("strategy IN ('merge', 'upsert')", name=op.f("ck_imports_strategy")),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.organizations.id"],
            name=op.f("fk_imports_tenant_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["app.users.id"],
            name=op.f("fk_imports_actor_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_imports")),
        schema="app",
    )
    # Deleting an account sets its imports' actor_id to NULL: find them without a scan.
    op.create_index(op.f("ix_imports_actor_id"), "imports", ["actor_id"], schema="app")


def downgrade() -> None:
    op.drop_index(op.f("ix_imports_actor_id"), table_name="imports", schema="app")
    op.drop_table("imports", schema="app")
