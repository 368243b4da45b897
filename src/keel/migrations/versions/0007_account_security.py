"""Account security: rules the database enforces whichever path changes an account.

- Deactivating a user (`is_active` true -> false) revokes every open token family, so
  tokens issued before stay dead after a reactivation. The API, imports, the CLI and
  hand-written SQL all go through this trigger.
- Any change of a password hash (a reset, a password change, an import, a rehash at
  login) spends every outstanding password-reset token of that user.
- A mailed token remembers the address it was sent to (`sent_to_hash`, a SHA-256 of
  the lower-cased address), and only works while that address is the account's.
  Tokens issued before this revision get an empty hash, which matches no address.
- `users.pending_email`: a user's own email change waits there until the new address
  confirms it.
- `signup_requests`: with SIGNUP_ENUMERATION_SAFE, a sign-up waits there (password
  already hashed) until its address confirms it; only then is the account created.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import CITEXT

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signup_requests",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", CITEXT(), nullable=False),
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("full_name", sa.String(length=255), nullable=True),
        sa.Column("hashed_password", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signup_requests")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_signup_requests_token_hash")),
        schema="app",
    )
    op.add_column("users", sa.Column("pending_email", CITEXT(), nullable=True), schema="app")
    op.add_column(
        "action_tokens",
        sa.Column(
            "sent_to_hash", sa.LargeBinary(), server_default=sa.text("''::bytea"), nullable=False
        ),
        schema="app",
    )
    op.alter_column("action_tokens", "sent_to_hash", server_default=None, schema="app")
    op.execute(
        """
        CREATE FUNCTION app.end_sessions_on_deactivation() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE app.token_families
            SET revoked_at = now(), revoked_reason = 'account deactivated'
            WHERE user_id = NEW.id AND revoked_at IS NULL;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER users_deactivated_end_sessions
        AFTER UPDATE OF is_active ON app.users
        FOR EACH ROW WHEN (OLD.is_active AND NOT NEW.is_active)
        EXECUTE FUNCTION app.end_sessions_on_deactivation()
        """
    )
    op.execute(
        """
        CREATE FUNCTION app.spend_reset_tokens_on_password_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE app.action_tokens
            SET used_at = now()
            WHERE user_id = NEW.id AND purpose = 'password_reset' AND used_at IS NULL;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER users_password_changed_spend_reset_tokens
        AFTER UPDATE OF hashed_password ON app.users
        FOR EACH ROW WHEN (OLD.hashed_password IS DISTINCT FROM NEW.hashed_password)
        EXECUTE FUNCTION app.spend_reset_tokens_on_password_change()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS users_password_changed_spend_reset_tokens ON app.users")
    op.execute("DROP FUNCTION IF EXISTS app.spend_reset_tokens_on_password_change()")
    op.execute("DROP TRIGGER IF EXISTS users_deactivated_end_sessions ON app.users")
    op.execute("DROP FUNCTION IF EXISTS app.end_sessions_on_deactivation()")
    op.drop_column("action_tokens", "sent_to_hash", schema="app")
    op.drop_column("users", "pending_email", schema="app")
    op.drop_table("signup_requests", schema="app")
