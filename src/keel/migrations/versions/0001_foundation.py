"""Foundation: schema app, extensions, and the shared updated_at trigger function.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EXTENSIONS = ("vector", "pg_trgm", "pg_stat_statements", "citext")


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS app")
    for extension in EXTENSIONS:
        op.execute(f'CREATE EXTENSION IF NOT EXISTS "{extension}"')
    # Attach with: CREATE TRIGGER t BEFORE UPDATE ON app.x
    #   FOR EACH ROW EXECUTE FUNCTION app.set_updated_at();
    op.execute(
        """
        CREATE OR REPLACE FUNCTION app.set_updated_at() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NEW.updated_at := clock_timestamp();
            RETURN NEW;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS app.set_updated_at()")
    op.execute("DROP SCHEMA IF EXISTS app")
    for extension in reversed(EXTENSIONS):
        op.execute(f'DROP EXTENSION IF EXISTS "{extension}"')
