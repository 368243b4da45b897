"""Where each of Keel's tables goes on Citus, and which of its triggers run where.

(The trigger functions themselves are written for Citus in migration 0016: the schema
is the same on plain PostgreSQL.)

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

# A trigger on a distributed table's shard runs on a worker; queueing embedding jobs
# there writes `app.jobs` on the coordinator, a nested distributed query that Citus
# refuses unless this is on for the role (Citus propagates ALTER ROLE to every node).
NESTED_EXECUTION = "ALTER ROLE CURRENT_USER SET citus.allow_nested_distributed_execution = on"
