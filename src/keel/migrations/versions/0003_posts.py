"""Posts with a stored, weighted tsvector for full-text search.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from keel.config import get_settings

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def search_vector_sql(config: str) -> str:
    # Frozen copy of keel.posts.models.search_vector_sql as of this revision.
    return (
        f"setweight(to_tsvector('{config}'::regconfig, coalesce(title, '')), 'A') || "
        f"setweight(to_tsvector('{config}'::regconfig, coalesce(content, '')), 'B')"
    )


def _search_config() -> str:
    """SEARCH_CONFIG, checked against the server's text-search configurations."""
    config = get_settings().search_config
    known = op.get_bind().execute(
        sa.text("SELECT 1 FROM pg_ts_config WHERE cfgname = :name"), {"name": config}
    )
    if known.first() is None:
        raise SystemExit(f"SEARCH_CONFIG={config!r} is not a text-search configuration here.")
    return config


def upgrade() -> None:
    op.create_table(
        "posts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("is_published", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=False),
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
        sa.Column(
            "search",
            postgresql.TSVECTOR(),
            sa.Computed(search_vector_sql(_search_config()), persisted=True),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["author_id"],
            ["app.users.id"],
            name=op.f("fk_posts_author_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_posts")),
        schema="app",
    )
    op.create_index(
        "ix_posts_author_id_created_at",
        "posts",
        ["author_id", "created_at"],
        unique=False,
        schema="app",
        postgresql_include=["title", "is_published"],
    )
    op.create_index(
        "ix_posts_created_at_id",
        "posts",
        [sa.literal_column("created_at DESC"), sa.literal_column("id DESC")],
        unique=False,
        schema="app",
    )
    op.create_index(
        "ix_posts_search", "posts", ["search"], unique=False, schema="app", postgresql_using="gin"
    )
    op.execute(
        "CREATE TRIGGER posts_set_updated_at BEFORE UPDATE ON app.posts "
        "FOR EACH ROW EXECUTE FUNCTION app.set_updated_at()"
    )


def downgrade() -> None:
    op.drop_index("ix_posts_search", table_name="posts", schema="app", postgresql_using="gin")
    op.drop_index("ix_posts_created_at_id", table_name="posts", schema="app")
    op.drop_index(
        "ix_posts_author_id_created_at",
        table_name="posts",
        schema="app",
        postgresql_include=["title", "is_published"],
    )
    op.drop_table("posts", schema="app")
