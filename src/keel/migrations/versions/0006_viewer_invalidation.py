"""Viewer invalidation: NOTIFY on the changes that end or narrow what a signed-in caller may do.

Every worker caches the `Viewer` behind an access token (user, token family, flags).
These triggers tell all of them, through one channel, when a cached viewer is stale:
- `family:<uuid>` when a token family (a session) is revoked;
- `user:<uuid>` when a user is deactivated, changes role or password, or is deleted.
NOTIFY is transactional: listeners hear it only when the change commits.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "keel_viewer"  # keel.core.viewer.INVALIDATION_CHANNEL; migrations are frozen history


def upgrade() -> None:
    op.execute(
        f"""
        CREATE FUNCTION app.notify_family_revoked() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', 'family:' || NEW.id::text);
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER token_families_notify_revoked
        AFTER UPDATE OF revoked_at ON app.token_families
        FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL)
        EXECUTE FUNCTION app.notify_family_revoked()
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION app.notify_user_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', 'user:' || OLD.id::text);
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER users_notify_changed
        AFTER UPDATE OF is_active, is_superuser, hashed_password ON app.users
        FOR EACH ROW WHEN (
            OLD.is_active IS DISTINCT FROM NEW.is_active
            OR OLD.is_superuser IS DISTINCT FROM NEW.is_superuser
            OR OLD.hashed_password IS DISTINCT FROM NEW.hashed_password
        )
        EXECUTE FUNCTION app.notify_user_changed()
        """
    )
    op.execute(
        """
        CREATE TRIGGER users_notify_deleted
        AFTER DELETE ON app.users
        FOR EACH ROW EXECUTE FUNCTION app.notify_user_changed()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS users_notify_deleted ON app.users")
    op.execute("DROP TRIGGER IF EXISTS users_notify_changed ON app.users")
    op.execute("DROP FUNCTION IF EXISTS app.notify_user_changed()")
    op.execute("DROP TRIGGER IF EXISTS token_families_notify_revoked ON app.token_families")
    op.execute("DROP FUNCTION IF EXISTS app.notify_family_revoked()")
