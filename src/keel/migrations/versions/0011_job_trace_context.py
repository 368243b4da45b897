"""Jobs carry the trace context of the request that queued them (W3C `traceparent`), so a
job's span can link to that request's span (OpenTelemetry; NULL when tracing is off).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Jobs inserted by triggers (embed_posts) take it from the transaction's setting, which
    # Keel's write transactions set while tracing; unset or empty: NULL.
    op.execute(
        "ALTER TABLE app.jobs ADD COLUMN trace_parent text"
        " DEFAULT nullif(current_setting('keel.trace_parent', true), '')"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE app.jobs DROP COLUMN trace_parent")
