"""Organizations (the tenants), memberships with roles, and invitations.

Every existing user gets a personal organization that they own. Memberships NOTIFY
`keel_viewer` with `user:<uuid>` on any change, so every worker's cached `Viewer`
(which carries the caller's memberships) is dropped when a role changes or ends.

The last-owner rule is also kept here, race-free: a deferred constraint trigger runs at
commit, locks the organization row, and counts its owners with a fresh snapshot, so
two transactions demoting the only two owners can't both commit.

On Citus these three tables are small and joined from everywhere: they become
reference tables (`create_reference_table`), as does `app.users`.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "keel_viewer"  # keel.core.viewer.INVALIDATION_CHANNEL; migrations are frozen history
ROLES = "role IN ('owner', 'admin', 'member', 'viewer')"


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[object]:
    default = None if nullable else sa.text("now()")
    return sa.Column(name, sa.DateTime(timezone=True), server_default=default, nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("slug", sa.Text(), nullable=False),
        sa.Column("personal", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        _timestamp("created_at"),
        sa.CheckConstraint(
            "char_length(name) BETWEEN 1 AND 100", name=op.f("ck_organizations_name_length")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
        sa.UniqueConstraint("slug", name=op.f("uq_organizations_slug")),
        schema="app",
    )
    op.create_table(
        "memberships",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        _timestamp("created_at"),
        sa.CheckConstraint(ROLES, name=op.f("ck_memberships_role_known")),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.organizations.id"],
            name=op.f("fk_memberships_tenant_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["app.users.id"],
            name=op.f("fk_memberships_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "user_id", name=op.f("pk_memberships")),
        schema="app",
    )
    # The viewer query reads a user's memberships from this index alone.
    op.create_index(
        "ix_memberships_user_id_tenant_id_role",
        "memberships",
        ["user_id", "tenant_id", "role"],
        schema="app",
    )
    op.create_table(
        "invitations",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", postgresql.CITEXT(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("invited_by", sa.Uuid(), nullable=True),
        _timestamp("created_at"),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        _timestamp("accepted_at", nullable=True),
        _timestamp("revoked_at", nullable=True),
        sa.CheckConstraint(ROLES, name=op.f("ck_invitations_role_known")),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.organizations.id"],
            name=op.f("fk_invitations_tenant_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invited_by"],
            ["app.users.id"],
            name=op.f("fk_invitations_invited_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_invitations")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_invitations_token_hash")),
        schema="app",
    )
    _backfill_personal_organizations()
    _viewer_triggers()
    _last_owner_trigger()


def _backfill_personal_organizations() -> None:
    op.execute(
        """
        CREATE TEMPORARY TABLE personal_organizations ON COMMIT DROP AS
        SELECT id AS user_id, gen_random_uuid() AS tenant_id, username, created_at
        FROM app.users
        """
    )
    op.execute(
        """
        INSERT INTO app.organizations (id, name, slug, personal, created_at)
        SELECT tenant_id, username, '~' || lower(username), true, created_at
        FROM personal_organizations
        """
    )
    op.execute(
        """
        INSERT INTO app.memberships (tenant_id, user_id, role, created_at)
        SELECT tenant_id, user_id, 'owner', created_at FROM personal_organizations
        """
    )
    op.execute("DROP TABLE personal_organizations")


def _viewer_triggers() -> None:
    op.execute(
        f"""
        CREATE FUNCTION app.notify_membership_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                PERFORM pg_notify('{CHANNEL}', 'user:' || OLD.user_id::text);
            END IF;
            IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.user_id <> OLD.user_id) THEN
                PERFORM pg_notify('{CHANNEL}', 'user:' || NEW.user_id::text);
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER memberships_notify_changed
        AFTER INSERT OR UPDATE OR DELETE ON app.memberships
        FOR EACH ROW EXECUTE FUNCTION app.notify_membership_changed()
        """
    )


def _last_owner_trigger() -> None:
    op.execute(
        """
        CREATE FUNCTION app.keep_an_owner() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            -- Serialise the commits that touch this organization's owners; each query
            -- below then sees every one committed before it (READ COMMITTED).
            PERFORM 1 FROM app.organizations WHERE id = OLD.tenant_id FOR NO KEY UPDATE;
            IF NOT FOUND THEN
                RETURN NULL;  -- the organization itself is gone
            END IF;
            IF NOT EXISTS (SELECT 1 FROM app.users WHERE id = OLD.user_id) THEN
                RETURN NULL;  -- the account was deleted
            END IF;
            IF NOT EXISTS (
                SELECT 1 FROM app.memberships WHERE tenant_id = OLD.tenant_id AND role = 'owner'
            ) THEN
                RAISE EXCEPTION 'organization % would have no owner', OLD.tenant_id
                    USING ERRCODE = 'integrity_constraint_violation',
                          CONSTRAINT = 'memberships_keep_an_owner';
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE CONSTRAINT TRIGGER memberships_keep_an_owner
        AFTER UPDATE OF role OR DELETE ON app.memberships
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW WHEN (OLD.role = 'owner')
        EXECUTE FUNCTION app.keep_an_owner()
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS app.invitations")
    op.execute("DROP TABLE IF EXISTS app.memberships")
    op.execute("DROP TABLE IF EXISTS app.organizations")
    op.execute("DROP FUNCTION IF EXISTS app.keep_an_owner()")
    op.execute("DROP FUNCTION IF EXISTS app.notify_membership_changed()")
