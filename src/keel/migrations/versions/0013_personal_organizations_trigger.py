"""Every account gets its personal organization, however it was created.

0012 made the personal organization in the service that signs users up, so accounts
written by bulk imports (MERGE) and `keel seed` (COPY) got none. A statement-level
trigger with a transition table now makes them in the inserting statement itself: one
set-based INSERT per statement, whatever wrote the users (API, import, seed, SQL). The
accounts created without one in between are backfilled.

Deleting an account deletes its personal organization too (its slug, `~username`, would
otherwise block the name for good: `keel seed --reset` and a re-seed reuse usernames).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The personal organizations of the users in `source` (a table or transition table).
_CREATE_FOR = """
    WITH personal AS (
        SELECT u.id AS user_id, gen_random_uuid() AS tenant_id, u.username, u.created_at
        FROM {source} AS u
        {where}
    ), organizations AS (
        INSERT INTO app.organizations (id, name, slug, personal, created_at)
        SELECT tenant_id, username, '~' || lower(username), true, created_at FROM personal
    )
    INSERT INTO app.memberships (tenant_id, user_id, role, created_at)
    SELECT tenant_id, user_id, 'owner', created_at FROM personal
"""


def upgrade() -> None:
    op.execute(
        f"""
        CREATE FUNCTION app.create_personal_organizations() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            {_CREATE_FOR.format(source="new_users", where="")};
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER users_personal_organization
        AFTER INSERT ON app.users
        REFERENCING NEW TABLE AS new_users
        FOR EACH STATEMENT EXECUTE FUNCTION app.create_personal_organizations()
        """
    )
    op.execute(
        """
        CREATE FUNCTION app.delete_personal_organizations() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM app.organizations AS o
            USING old_users AS u
            WHERE o.personal AND o.slug = '~' || lower(u.username);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER users_personal_organization_gone
        AFTER DELETE ON app.users
        REFERENCING OLD TABLE AS old_users
        FOR EACH STATEMENT EXECUTE FUNCTION app.delete_personal_organizations()
        """
    )
    without_one = """
        WHERE NOT EXISTS (
            SELECT 1 FROM app.memberships AS m
            JOIN app.organizations AS o ON o.id = m.tenant_id
            WHERE m.user_id = u.id AND o.personal
        )
    """
    op.execute(_CREATE_FOR.format(source="app.users", where=without_one))


def downgrade() -> None:
    op.execute("DROP TRIGGER users_personal_organization_gone ON app.users")
    op.execute("DROP FUNCTION app.delete_personal_organizations()")
    op.execute("DROP TRIGGER users_personal_organization ON app.users")
    op.execute("DROP FUNCTION app.create_personal_organizations()")
