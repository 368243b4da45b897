"""Where each of Keel's tables goes on Citus, and the trigger functions Citus needs.

Reference tables are small and joined from everywhere: replicated to every node.
Scoped tables are distributed by `tenant_id` and colocated with `app.posts`, so a
tenant's rows of every scoped table sit in shards on the same node and its joins stay
local. The job queue stays one table on the coordinator (see `QUEUE`).
"""

from __future__ import annotations

REFERENCE_TABLES = ("app.organizations", "app.users", "app.memberships", "app.invitations")
DISTRIBUTION_COLUMN = "tenant_id"
COLOCATE_WITH = "app.posts"
# In order: each one colocates with the first. `app.imports` joins when it exists.
DISTRIBUTED_TABLES = ("app.posts", "app.post_embeddings", "app.documents", "app.imports")
# Claiming a job is a cross-tenant `FOR UPDATE SKIP LOCKED`, which Citus can't run over
# shards, so the queue is a Citus local table: it lives on the coordinator and keeps its
# foreign key to the (reference) organizations table.
QUEUE = "app.jobs"

# post_embeddings -> posts: Citus can't distribute posts while a non-distributed table
# references it, so the key is dropped and added back around the two calls.
EMBEDDINGS_FK = "fk_post_embeddings_tenant_id_posts"
EMBEDDINGS_FK_SQL = (
    f"ALTER TABLE app.post_embeddings ADD CONSTRAINT {EMBEDDINGS_FK} "
    "FOREIGN KEY (tenant_id, post_id) REFERENCES app.posts (tenant_id, id) ON DELETE CASCADE"
)

# Keel's triggers on reference tables NOTIFY (viewer invalidation) or write other tables
# (personal organizations, ending sessions, the last-owner check). A write to a reference
# table runs on every placement, so they would fire once per node; on a worker a NOTIFY
# forbids the two-phase commit ("cannot PREPARE a transaction that has executed ...
# NOTIFY") and a write to another table is a nested distributed query. They run on the
# coordinator's placement only: `enable` disables them on the workers' placements.
# `set_updated_at` (a BEFORE ROW trigger that only sets NEW.updated_at) stays everywhere.
PLACEMENT_LOCAL_FUNCTIONS = ("set_updated_at",)

# The shard's triggers other than those above, disabled on a worker (run there by
# run_command_on_workers; `{shard}` is the placement's qualified name).
DISABLE_ON_WORKER = """
DO $do$
DECLARE t record;
BEGIN
    FOR t IN
        SELECT tg.tgname FROM pg_trigger AS tg JOIN pg_proc AS p ON p.oid = tg.tgfoid
        WHERE tg.tgrelid = '{shard}'::regclass AND NOT tg.tgisinternal
          AND tg.tgenabled <> 'D' AND p.proname <> ALL (ARRAY[{keep}])
    LOOP
        EXECUTE format('ALTER TABLE {shard} DISABLE TRIGGER %I', t.tgname);
    END LOOP;
END
$do$
"""

# Statement triggers with transition tables: Citus plans a statement that reads
# `new_users` and writes a Citus table as a distributed query and ships its text to other
# nodes, where the transition table doesn't exist ("executor could not find named
# tuplestore"). These versions read the transition table alone first, then write from
# the values. They behave the same on plain PostgreSQL (and could replace 0013's and
# 0014's in a migration).
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

# A trigger on a distributed table's shard runs on a worker; queueing embedding jobs
# there writes `app.jobs` on the coordinator, a nested distributed query that Citus
# refuses unless this is on for the role (Citus propagates ALTER ROLE to every node).
NESTED_EXECUTION = "ALTER ROLE CURRENT_USER SET citus.allow_nested_distributed_execution = on"
