"""Documents from text alone: a document's embedding may be pending (NULL) until the worker
embeds it (bulk loads queue `embed_documents` jobs).

Downgrading deletes the documents still waiting for their embedding.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE app.documents ALTER COLUMN embedding DROP NOT NULL")


def downgrade() -> None:
    op.execute("DELETE FROM app.documents WHERE embedding IS NULL")
    op.execute("ALTER TABLE app.documents ALTER COLUMN embedding SET NOT NULL")
