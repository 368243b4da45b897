"""The job queue, post embeddings, and triggers that queue embedding work for posts.

Every write path (the API, imports, `keel seed`'s COPY) goes through the statement-level
triggers, so a new or re-worded post always gets an `embed_posts` job, in batches of
EMBED_BATCH posts per job. The embedding dimension and HNSW parameters come from the
settings when this runs.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql

from keel.config import get_settings

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EMBED_BATCH = 32  # posts per embedding job: one model batch


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[object]:
    default = None if nullable else sa.text("now()")
    return sa.Column(name, sa.DateTime(timezone=True), server_default=default, nullable=nullable)


def upgrade() -> None:
    settings = get_settings()
    op.create_table(
        "jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column(
            "payload",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("status", sa.Text(), server_default=sa.text("'queued'"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default=sa.text("5"), nullable=False),
        _timestamp("run_at"),
        _timestamp("locked_at", nullable=True),
        sa.Column("locked_by", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'failed')", name=op.f("ck_jobs_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        schema="app",
    )
    op.create_index(
        "ix_jobs_ready",
        "jobs",
        ["run_at"],
        schema="app",
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index(
        "ix_jobs_running",
        "jobs",
        ["locked_at"],
        schema="app",
        postgresql_where=sa.text("status = 'running'"),
    )
    op.execute(
        "CREATE TRIGGER jobs_set_updated_at BEFORE UPDATE ON app.jobs "
        "FOR EACH ROW EXECUTE FUNCTION app.set_updated_at()"
    )

    op.create_table(
        "post_embeddings",
        sa.Column("post_id", sa.Uuid(), nullable=False),
        sa.Column("embedding", Vector(settings.embedding_dimension), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        _timestamp("embedded_at"),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["app.posts.id"],
            name=op.f("fk_post_embeddings_post_id_posts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("post_id", name=op.f("pk_post_embeddings")),
        schema="app",
    )
    op.create_index(
        "ix_post_embeddings_hnsw",
        "post_embeddings",
        ["embedding"],
        schema="app",
        postgresql_using="hnsw",
        postgresql_with={"m": settings.hnsw_m, "ef_construction": settings.hnsw_ef_construction},
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )

    # Transition tables can't be combined with UPDATE OF <columns>, so the update trigger
    # compares old and new rows itself: only a changed title or content queues work.
    # EXECUTE plans each call afresh: PL/pgSQL would otherwise cache the first call's plan
    # per connection, and a plan made for 0 rows (a nested loop) turns quadratic when the
    # next statement updates 100k rows.
    op.execute(
        f"""
        CREATE FUNCTION app.queue_post_embeddings() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                EXECUTE $sql$
                    INSERT INTO app.jobs (id, kind, payload)
                    SELECT gen_random_uuid(), 'embed_posts',
                           jsonb_build_object('post_ids', jsonb_agg(id))
                    FROM (SELECT id, (row_number() OVER () - 1) / {EMBED_BATCH} AS batch
                          FROM new_rows) AS added
                    GROUP BY batch
                $sql$;
            ELSE
                EXECUTE $sql$
                    INSERT INTO app.jobs (id, kind, payload)
                    SELECT gen_random_uuid(), 'embed_posts',
                           jsonb_build_object('post_ids', jsonb_agg(id))
                    FROM (SELECT n.id, (row_number() OVER () - 1) / {EMBED_BATCH} AS batch
                          FROM new_rows n JOIN old_rows o USING (id)
                          WHERE (o.title, o.content) IS DISTINCT FROM (n.title, n.content)
                         ) AS reworded
                    GROUP BY batch
                $sql$;
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER posts_queue_embeddings_on_insert AFTER INSERT ON app.posts "
        "REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION app.queue_post_embeddings()"
    )
    op.execute(
        "CREATE TRIGGER posts_queue_embeddings_on_update AFTER UPDATE ON app.posts "
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION app.queue_post_embeddings()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS posts_queue_embeddings_on_update ON app.posts")
    op.execute("DROP TRIGGER IF EXISTS posts_queue_embeddings_on_insert ON app.posts")
    op.execute("DROP FUNCTION IF EXISTS app.queue_post_embeddings()")
    op.drop_index("ix_post_embeddings_hnsw", table_name="post_embeddings", schema="app")
    op.drop_table("post_embeddings", schema="app")
    op.drop_index("ix_jobs_running", table_name="jobs", schema="app")
    op.drop_index("ix_jobs_ready", table_name="jobs", schema="app")
    op.drop_table("jobs", schema="app")
