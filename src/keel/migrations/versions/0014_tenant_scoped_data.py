"""Tenant-scoped data: posts, documents and post embeddings belong to an organization.

- A personal organization's id is now its owner's user id (existing ones are re-keyed),
  so "the author's personal organization" is the author id itself: the backfill below,
  and clients, need no lookup.
- posts, documents and post_embeddings get `tenant_id` (NOT NULL, the organization),
  their primary keys become `(tenant_id, id)`, the foreign key between posts and their
  embeddings includes `tenant_id`, and the list and search indexes lead with it
  (btree_gin lets the GIN indexes do so). HNSW indexes take one column: tenant filters
  run inside them as iterative scans (see the README).
- Every existing post and document moves into its author's (owner's) personal
  organization.
- jobs get a nullable `tenant_id`: the organization a job works for, NULL for the
  platform's own jobs (snapshots). The queue itself stays one table keyed by `id`:
  claiming is a cross-tenant `FOR UPDATE SKIP LOCKED`, which Citus can't distribute.

On Citus the scoped tables are distributed by `tenant_id`, colocated; the schema is the
same (`keel db citus enable`).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EMBED_BATCH = 32  # 0005's batch size: posts per embedding job
_TENANT_FK = "FOREIGN KEY (tenant_id) REFERENCES app.organizations (id) ON DELETE CASCADE"
_ORG_CHILDREN = ("memberships", "invitations")


def _rekey_personal_organizations() -> None:
    for table in _ORG_CHILDREN:
        op.execute(
            f"ALTER TABLE app.{table} DROP CONSTRAINT fk_{table}_tenant_id_organizations, "
            f"ADD CONSTRAINT fk_{table}_tenant_id_organizations {_TENANT_FK} ON UPDATE CASCADE"
        )
    op.execute(
        """
        UPDATE app.organizations AS o SET id = u.id
        FROM app.memberships AS m JOIN app.users AS u ON u.id = m.user_id
        WHERE m.tenant_id = o.id AND o.personal AND m.role = 'owner'
          AND o.slug = '~' || lower(u.username) AND o.id <> u.id
        """
    )
    for table in _ORG_CHILDREN:  # Citus forbids ON UPDATE CASCADE towards reference tables
        op.execute(
            f"ALTER TABLE app.{table} DROP CONSTRAINT fk_{table}_tenant_id_organizations, "
            f"ADD CONSTRAINT fk_{table}_tenant_id_organizations {_TENANT_FK}"
        )
    op.execute(
        """
        CREATE OR REPLACE FUNCTION app.create_personal_organizations() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            WITH organizations AS (
                INSERT INTO app.organizations (id, name, slug, personal, created_at)
                SELECT id, username, '~' || lower(username), true, created_at FROM new_users
            )
            INSERT INTO app.memberships (tenant_id, user_id, role, created_at)
            SELECT id, id, 'owner', created_at FROM new_users;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE OR REPLACE FUNCTION app.delete_personal_organizations() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM app.organizations AS o USING old_users AS u
            WHERE o.personal AND o.id = u.id;
            RETURN NULL;
        END
        $$
        """
    )


def _add_tenant(table: str, backfill: str) -> None:
    """`tenant_id` on `table`, filled by `backfill` without firing the table's triggers."""
    op.execute(f"ALTER TABLE app.{table} ADD COLUMN tenant_id uuid")
    op.execute(f"ALTER TABLE app.{table} DISABLE TRIGGER USER")
    op.execute(backfill)
    op.execute(f"ALTER TABLE app.{table} ENABLE TRIGGER USER")
    op.execute(
        f"ALTER TABLE app.{table} ALTER COLUMN tenant_id SET NOT NULL, "
        f"ADD CONSTRAINT fk_{table}_tenant_id_organizations {_TENANT_FK}"
    )


# The embedding jobs a statement on posts queues: with 0014 each job carries its
# organization and one batch never mixes tenants; without, 0005's (for the downgrade).
_BATCHES = {
    True: f"""
        INSERT INTO app.jobs (id, kind, payload, tenant_id)
        SELECT gen_random_uuid(), 'embed_posts',
               jsonb_build_object('tenant_id', tenant_id, 'post_ids', jsonb_agg(id)), tenant_id
        FROM (SELECT n.id, n.tenant_id,
                     (row_number() OVER (PARTITION BY n.tenant_id) - 1) / {EMBED_BATCH} AS batch
              FROM new_rows AS n {{changed}}) AS added
        GROUP BY tenant_id, batch""",
    False: f"""
        INSERT INTO app.jobs (id, kind, payload)
        SELECT gen_random_uuid(), 'embed_posts', jsonb_build_object('post_ids', jsonb_agg(id))
        FROM (SELECT n.id, (row_number() OVER () - 1) / {EMBED_BATCH} AS batch
              FROM new_rows AS n {{changed}}) AS added
        GROUP BY batch""",
}
_REWORDED = "WHERE (o.title, o.content) IS DISTINCT FROM (n.title, n.content)"
_SAME_POST = {True: "(o.tenant_id, o.id) = (n.tenant_id, n.id)", False: "o.id = n.id"}


def _queue_post_embeddings(*, per_tenant: bool) -> None:
    batches = _BATCHES[per_tenant]
    reworded = f"JOIN old_rows AS o ON {_SAME_POST[per_tenant]} {_REWORDED}"
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION app.queue_post_embeddings() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                {batches.format(changed="")};
            ELSE
                {batches.format(changed=reworded)};
            END IF;
            RETURN NULL;
        END
        $$
        """
    )


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    _rekey_personal_organizations()

    _add_tenant("posts", "UPDATE app.posts SET tenant_id = author_id")
    _add_tenant(
        "post_embeddings",
        "UPDATE app.post_embeddings AS e SET tenant_id = p.tenant_id "
        "FROM app.posts AS p WHERE p.id = e.post_id",
    )
    _add_tenant("documents", "UPDATE app.documents SET tenant_id = owner_id")

    op.execute("ALTER TABLE app.post_embeddings DROP CONSTRAINT fk_post_embeddings_post_id_posts")
    for table, key in (("posts", "id"), ("post_embeddings", "post_id"), ("documents", "id")):
        op.execute(
            f"ALTER TABLE app.{table} DROP CONSTRAINT pk_{table}, "
            f"ADD CONSTRAINT pk_{table} PRIMARY KEY (tenant_id, {key})"
        )
    op.execute(
        "ALTER TABLE app.post_embeddings ADD CONSTRAINT fk_post_embeddings_tenant_id_posts "
        "FOREIGN KEY (tenant_id, post_id) REFERENCES app.posts (tenant_id, id) ON DELETE CASCADE"
    )

    op.execute("DROP INDEX app.ix_posts_author_id_created_at")
    op.execute("DROP INDEX app.ix_posts_created_at_id")
    op.execute("DROP INDEX app.ix_posts_search")
    op.execute(
        "CREATE INDEX ix_posts_tenant_id_author_id_created_at ON app.posts "
        "(tenant_id, author_id, created_at) INCLUDE (title, is_published)"
    )
    op.execute(
        "CREATE INDEX ix_posts_tenant_id_created_at_id ON app.posts "
        "(tenant_id, created_at DESC, id DESC)"
    )
    op.execute("CREATE INDEX ix_posts_tenant_id_search ON app.posts USING gin (tenant_id, search)")
    # A user's posts across organizations (account deletion, the author filter for admins).
    op.execute("CREATE INDEX ix_posts_author_id ON app.posts (author_id)")

    op.execute("DROP INDEX app.ix_documents_owner_id")
    op.execute("DROP INDEX app.ix_documents_metadata")
    op.execute(
        "CREATE INDEX ix_documents_tenant_id_owner_id ON app.documents (tenant_id, owner_id)"
    )
    op.execute(
        "CREATE INDEX ix_documents_tenant_id_metadata ON app.documents "
        "USING gin (tenant_id, metadata jsonb_path_ops)"
    )
    op.execute("CREATE INDEX ix_documents_owner_id ON app.documents (owner_id)")

    op.execute(
        "ALTER TABLE app.jobs ADD COLUMN tenant_id uuid, "
        f"ADD CONSTRAINT fk_jobs_tenant_id_organizations {_TENANT_FK}"
    )
    op.execute(
        "CREATE INDEX ix_jobs_tenant_id_created_at ON app.jobs (tenant_id, created_at DESC) "
        "WHERE tenant_id IS NOT NULL"
    )
    _queue_post_embeddings(per_tenant=True)


def downgrade() -> None:
    _queue_post_embeddings(per_tenant=False)
    op.execute("DROP INDEX app.ix_jobs_tenant_id_created_at")
    op.execute("ALTER TABLE app.jobs DROP COLUMN tenant_id")
    for index in (
        "ix_documents_owner_id",
        "ix_documents_tenant_id_metadata",
        "ix_documents_tenant_id_owner_id",
        "ix_posts_author_id",
        "ix_posts_tenant_id_search",
        "ix_posts_tenant_id_created_at_id",
        "ix_posts_tenant_id_author_id_created_at",
    ):
        op.execute(f"DROP INDEX app.{index}")
    op.execute("ALTER TABLE app.post_embeddings DROP CONSTRAINT fk_post_embeddings_tenant_id_posts")
    for table, key in (("posts", "id"), ("post_embeddings", "post_id"), ("documents", "id")):
        op.execute(
            f"ALTER TABLE app.{table} DROP CONSTRAINT pk_{table}, "
            f"ADD CONSTRAINT pk_{table} PRIMARY KEY ({key})"
        )
        op.execute(f"ALTER TABLE app.{table} DROP COLUMN tenant_id")
    op.execute(
        "ALTER TABLE app.post_embeddings ADD CONSTRAINT fk_post_embeddings_post_id_posts "
        "FOREIGN KEY (post_id) REFERENCES app.posts (id) ON DELETE CASCADE"
    )
    op.execute(
        "CREATE INDEX ix_documents_metadata ON app.documents USING gin (metadata jsonb_path_ops)"
    )
    op.execute("CREATE INDEX ix_documents_owner_id ON app.documents (owner_id)")
    op.execute(
        "CREATE INDEX ix_posts_author_id_created_at ON app.posts (author_id, created_at) "
        "INCLUDE (title, is_published)"
    )
    op.execute("CREATE INDEX ix_posts_created_at_id ON app.posts (created_at DESC, id DESC)")
    op.execute("CREATE INDEX ix_posts_search ON app.posts USING gin (search)")
    # Personal organizations keep their ids, and new ones still get their owner's id
    # (0014's trigger functions stay: they are valid before 0014 too).
