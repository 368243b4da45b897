"""Trigger functions that read their transition table first: the same schema on Citus.

The statement-level triggers of 0013 (personal organizations) and 0014 (embedding jobs)
read `new_users` / `new_rows` inside the statement that writes other tables. Citus ships
such a statement to other nodes, where the transition table doesn't exist ("executor
could not find named tuplestore"). These versions read the transition table alone into a
value first, then write from it. They behave the same on plain PostgreSQL, so the schema
is one schema on both, and `keel db citus enable` only distributes.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGER_FUNCTIONS = (
    """
    CREATE OR REPLACE FUNCTION app.create_personal_organizations() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE added jsonb;
    BEGIN
        SELECT jsonb_agg(jsonb_build_object('id', id, 'username', username,
                                            'created_at', created_at))
        INTO added FROM new_users;
        WITH u AS (
            SELECT (a->>'id')::uuid AS id, a->>'username' AS username,
                   (a->>'created_at')::timestamptz AS created_at
            FROM jsonb_array_elements(added) AS a
        ), organizations AS (
            INSERT INTO app.organizations (id, name, slug, personal, created_at)
            SELECT id, username, '~' || lower(username), true, created_at FROM u
        )
        INSERT INTO app.memberships (tenant_id, user_id, role, created_at)
        SELECT id, id, 'owner', created_at FROM u;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE OR REPLACE FUNCTION app.delete_personal_organizations() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE gone uuid[];
    BEGIN
        SELECT array_agg(id) INTO gone FROM old_users;
        DELETE FROM app.organizations WHERE personal AND id = ANY (gone);
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE OR REPLACE FUNCTION app.queue_post_embeddings() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE batches jsonb;
    BEGIN
        IF TG_OP = 'INSERT' THEN
            SELECT jsonb_agg(jsonb_build_object('tenant_id', tenant_id, 'post_ids', ids))
            INTO batches
            FROM (SELECT tenant_id, jsonb_agg(id) AS ids
                  FROM (SELECT n.id, n.tenant_id,
                               (row_number() OVER (PARTITION BY n.tenant_id) - 1) / 32 AS batch
                        FROM new_rows AS n) AS added
                  GROUP BY tenant_id, batch) AS b;
        ELSE
            SELECT jsonb_agg(jsonb_build_object('tenant_id', tenant_id, 'post_ids', ids))
            INTO batches
            FROM (SELECT tenant_id, jsonb_agg(id) AS ids
                  FROM (SELECT n.id, n.tenant_id,
                               (row_number() OVER (PARTITION BY n.tenant_id) - 1) / 32 AS batch
                        FROM new_rows AS n
                        JOIN old_rows AS o ON (o.tenant_id, o.id) = (n.tenant_id, n.id)
                        WHERE (o.title, o.content) IS DISTINCT FROM (n.title, n.content)
                       ) AS changed
                  GROUP BY tenant_id, batch) AS b;
        END IF;
        IF batches IS NOT NULL THEN
            INSERT INTO app.jobs (id, kind, payload, tenant_id)
            SELECT gen_random_uuid(), 'embed_posts', b, (b->>'tenant_id')::uuid
            FROM jsonb_array_elements(batches) AS b;
        END IF;
        RETURN NULL;
    END
    $$
    """,
)

# 0014's versions (and 0013's, as 0014 left them), for the downgrade.
PREVIOUS = (
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
    """,
    """
    CREATE OR REPLACE FUNCTION app.delete_personal_organizations() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM app.organizations AS o USING old_users AS u
        WHERE o.personal AND o.id = u.id;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE OR REPLACE FUNCTION app.queue_post_embeddings() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO app.jobs (id, kind, payload, tenant_id)
            SELECT gen_random_uuid(), 'embed_posts',
                   jsonb_build_object('tenant_id', tenant_id, 'post_ids', jsonb_agg(id)),
                   tenant_id
            FROM (SELECT n.id, n.tenant_id,
                         (row_number() OVER (PARTITION BY n.tenant_id) - 1) / 32 AS batch
                  FROM new_rows AS n) AS added
            GROUP BY tenant_id, batch;
        ELSE
            INSERT INTO app.jobs (id, kind, payload, tenant_id)
            SELECT gen_random_uuid(), 'embed_posts',
                   jsonb_build_object('tenant_id', tenant_id, 'post_ids', jsonb_agg(id)),
                   tenant_id
            FROM (SELECT n.id, n.tenant_id,
                         (row_number() OVER (PARTITION BY n.tenant_id) - 1) / 32 AS batch
                  FROM new_rows AS n
                  JOIN old_rows AS o ON (o.tenant_id, o.id) = (n.tenant_id, n.id)
                  WHERE (o.title, o.content) IS DISTINCT FROM (n.title, n.content)) AS added
            GROUP BY tenant_id, batch;
        END IF;
        RETURN NULL;
    END
    $$
    """,
)


def upgrade() -> None:
    for function in TRIGGER_FUNCTIONS:
        op.execute(function)


def downgrade() -> None:
    for function in PREVIOUS:
        op.execute(function)
