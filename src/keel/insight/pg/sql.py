"""The catalog and statistics queries behind insight, as SQL text (no identifier from input).

Each works on PostgreSQL 17 and 18; where their views differ (pg_stat_io) there are two.
Every statement is scoped to the current database where the view spans the cluster.
"""

from __future__ import annotations

from sqlalchemy import TextClause, text

SERVER = text(
    """
    SELECT current_setting('server_version_num')::int AS version_num,
           current_setting('server_version') AS version,
           current_database() AS database,
           pg_is_in_recovery() AS in_recovery,
           pg_backend_pid() AS own_pid,
           EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')
               AS has_pg_stat_statements,
           EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgstattuple') AS has_pgstattuple
    """
)

CACHE_HIT = text(
    """
    SELECT blks_hit::bigint AS hit, blks_read::bigint AS read,
           deadlocks::bigint AS deadlocks, temp_bytes::bigint AS temp_bytes,
           xact_commit::bigint AS commits, xact_rollback::bigint AS rollbacks
    FROM pg_stat_database WHERE datname = current_database()
    """
)

CONNECTIONS = text(
    """
    SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')
               AS used,
           current_setting('max_connections')::int
             - current_setting('superuser_reserved_connections')::int
             - current_setting('reserved_connections')::int AS available,
           current_setting('max_connections')::int AS max_connections
    """
)

CONNECTIONS_BY_STATE = text(
    """
    SELECT coalesce(state, 'unknown') AS state, count(*)::int AS connections
    FROM pg_stat_activity
    WHERE backend_type = 'client backend' AND datname = current_database()
    GROUP BY 1 ORDER BY 1
    """
)

# Client backends of this database, never our own; durations in seconds.
ACTIVITY = text(
    """
    SELECT pid, usename AS "user", application_name, client_addr::text AS client_addr,
           state, wait_event_type, wait_event, backend_type,
           extract(epoch FROM now() - xact_start)::float8 AS transaction_seconds,
           extract(epoch FROM now() - query_start)::float8 AS query_seconds,
           extract(epoch FROM now() - state_change)::float8 AS state_seconds,
           pg_blocking_pids(pid) AS blocked_by,
           left(query, :query_chars) AS query
    FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND backend_type = 'client backend'
    ORDER BY xact_start NULLS LAST, pid
    """
)

LONGEST = text(
    """
    SELECT
      coalesce(max(extract(epoch FROM now() - query_start))
               FILTER (WHERE state = 'active'), 0)::float8 AS longest_query_seconds,
      coalesce(max(extract(epoch FROM now() - state_change))
               FILTER (WHERE state LIKE 'idle in transaction%'), 0)::float8
               AS longest_idle_in_transaction_seconds,
      coalesce(max(extract(epoch FROM now() - xact_start)), 0)::float8
               AS longest_transaction_seconds,
      count(*) FILTER (WHERE cardinality(pg_blocking_pids(pid)) > 0)::int AS blocked
    FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND backend_type = 'client backend'
    """
)

# A backend Keel may signal: a client of this database that is not the caller's own.
SIGNALLABLE = text(
    """
    SELECT pid FROM pg_stat_activity
    WHERE pid = :pid AND datname = current_database() AND backend_type = 'client backend'
    """
)
CANCEL = text("SELECT pg_cancel_backend(:pid)")
TERMINATE = text("SELECT pg_terminate_backend(:pid, :wait_ms)")

DATABASE_AGE = text(
    """
    SELECT age(datfrozenxid)::bigint AS xid_age, mxid_age(datminmxid)::bigint AS mxid_age,
           current_setting('autovacuum_freeze_max_age')::bigint AS freeze_max_age,
           current_setting('autovacuum_multixact_freeze_max_age')::bigint AS mxid_freeze_max_age,
           pg_database_size(current_database())::bigint AS database_bytes
    FROM pg_database WHERE datname = current_database()
    """
)

# Sequences against the limit of the column they feed (an int4 column caps a bigint sequence).
SEQUENCES = text(
    """
    SELECT s.schemaname || '.' || s.sequencename AS sequence,
           coalesce(tc.relnamespace::regnamespace::text || '.' || tc.relname || '.' || a.attname,
                    '') AS "column",
           s.last_value::numeric AS last_value,
           least(s.max_value::numeric,
                 CASE a.atttypid WHEN 'int2'::regtype THEN 32767
                                 WHEN 'int4'::regtype THEN 2147483647
                                 ELSE s.max_value END) AS max_value,
           s.increment_by::bigint AS increment_by
    FROM pg_sequences s
    JOIN pg_class c ON c.relname = s.sequencename
    JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schemaname
    LEFT JOIN pg_depend d ON d.objid = c.oid AND d.classid = 'pg_class'::regclass
                          AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
    LEFT JOIN pg_class tc ON tc.oid = d.refobjid
    LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    WHERE s.schemaname NOT IN ('pg_catalog', 'information_schema') AND s.increment_by > 0
    """
)

REPLICATION_SLOTS = text(
    """
    SELECT slot_name, slot_type, active, wal_status, coalesce(database, '') AS database,
           CASE WHEN pg_is_in_recovery() OR restart_lsn IS NULL THEN NULL
                ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
           END AS retained_bytes,
           inactive_since
    FROM pg_replication_slots
    ORDER BY slot_name
    """
)

REPLICATION_LAG = text(
    """
    SELECT application_name, client_addr::text AS client_addr, state, sync_state,
           extract(epoch FROM replay_lag)::float8 AS replay_lag_seconds,
           pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS replay_lag_bytes
    FROM pg_stat_replication
    ORDER BY application_name
    """
)

CHECKPOINTER = text(
    """
    SELECT num_timed::bigint AS timed, num_requested::bigint AS requested,
           buffers_written::bigint AS buffers_written, stats_reset
    FROM pg_stat_checkpointer
    """
)

# Tables past autovacuum's own trigger points (per-table reloptions not included).
MAINTENANCE = text(
    """
    SELECT t.schemaname || '.' || t.relname AS "table",
           t.n_live_tup::bigint AS live_tuples, t.n_dead_tup::bigint AS dead_tuples,
           t.n_mod_since_analyze::bigint AS modified_since_analyze,
           greatest(t.last_vacuum, t.last_autovacuum) AS last_vacuum,
           greatest(t.last_analyze, t.last_autoanalyze) AS last_analyze,
           (t.vacuum_count + t.autovacuum_count)::bigint AS vacuums,
           age(c.relfrozenxid)::bigint AS freeze_age,
           coalesce(c.reloptions::text[] @> ARRAY['autovacuum_enabled=false'], false)
               AS autovacuum_disabled,
           t.n_dead_tup > current_setting('autovacuum_vacuum_threshold')::float8
               + current_setting('autovacuum_vacuum_scale_factor')::float8
                 * greatest(c.reltuples, 0) AS vacuum_overdue,
           t.n_mod_since_analyze > current_setting('autovacuum_analyze_threshold')::float8
               + current_setting('autovacuum_analyze_scale_factor')::float8
                 * greatest(c.reltuples, 0) AS analyze_overdue
    FROM pg_stat_user_tables t JOIN pg_class c ON c.oid = t.relid
    ORDER BY t.n_dead_tup DESC, 1
    LIMIT :limit
    """
)

VACUUM_PROGRESS = text(
    """
    SELECT p.pid, p.relid::regclass::text AS "table", p.phase,
           p.heap_blks_total::bigint AS heap_blocks, p.heap_blks_scanned::bigint AS scanned,
           p.heap_blks_vacuumed::bigint AS vacuumed, p.index_vacuum_count::bigint AS index_passes,
           extract(epoch FROM now() - a.xact_start)::float8 AS seconds
    FROM pg_stat_progress_vacuum p LEFT JOIN pg_stat_activity a USING (pid)
    WHERE p.datname = current_database()
    """
)

SETTINGS = text(
    """
    SELECT name, setting, unit, source, short_desc AS description
    FROM pg_settings WHERE name = ANY(:names)
    """
)


def query_stats(order: str) -> TextClause:
    """Top statements of this database; `order` is one of ORDER_COLUMNS' keys, not input."""
    column = QUERY_ORDER[order]
    return text(
        f"""
        SELECT s.queryid::text AS queryid, s.calls::bigint AS calls, s.rows::bigint AS rows,
               s.total_exec_time::float8 AS total_ms, s.mean_exec_time::float8 AS mean_ms,
               s.max_exec_time::float8 AS max_ms, s.stddev_exec_time::float8 AS stddev_ms,
               CASE WHEN s.shared_blks_hit + s.shared_blks_read = 0 THEN NULL
                    ELSE s.shared_blks_hit::float8 / (s.shared_blks_hit + s.shared_blks_read)
               END AS hit_ratio,
               s.wal_bytes::bigint AS wal_bytes,
               (s.temp_blks_read + s.temp_blks_written)::bigint AS temp_blocks,
               r.rolname AS "user", left(s.query, :query_chars) AS query
        FROM pg_stat_statements(true) s
        LEFT JOIN pg_roles r ON r.oid = s.userid
        WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND s.toplevel
        ORDER BY {column} DESC NULLS LAST
        LIMIT :limit
        """  # noqa: S608 - the column comes from QUERY_ORDER, a fixed whitelist
    )


QUERY_ORDER = {
    "total_time": "s.total_exec_time",
    "mean_time": "s.mean_exec_time",
    "calls": "s.calls",
}

RESET_QUERY_STATS = text(
    "SELECT pg_stat_statements_reset(0, "
    "(SELECT oid FROM pg_database WHERE datname = current_database()), 0)"
)

# Everything /metrics reports, in one round trip (no pg_database_size: it stats every file).
METRICS = text(
    """
    SELECT
      (SELECT coalesce(json_object_agg(state, n), '{}')
       FROM (SELECT coalesce(state, 'unknown') AS state, count(*) AS n FROM pg_stat_activity
             WHERE backend_type = 'client backend' AND datname = current_database()
             GROUP BY 1) s) AS connections,
      (SELECT coalesce(max(extract(epoch FROM now() - xact_start)), 0)::float8
       FROM pg_stat_activity
       WHERE datname = current_database() AND backend_type = 'client backend'
         AND pid <> pg_backend_pid()) AS longest_transaction_seconds,
      (SELECT count(*) FROM pg_stat_activity
       WHERE datname = current_database() AND cardinality(pg_blocking_pids(pid)) > 0)::int
         AS blocked,
      d.deadlocks::bigint AS deadlocks, d.temp_bytes::bigint AS temp_bytes,
      d.blks_hit::bigint AS blocks_hit, d.blks_read::bigint AS blocks_read,
      age(db.datfrozenxid)::bigint AS xid_age, mxid_age(db.datminmxid)::bigint AS mxid_age,
      CASE WHEN pg_is_in_recovery() THEN '[]'::json ELSE
        (SELECT coalesce(json_agg(json_build_object(
            'name', coalesce(nullif(application_name, ''), client_addr::text, pid::text),
            'seconds', coalesce(extract(epoch FROM replay_lag), 0),
            'bytes', coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0))), '[]')
         FROM pg_stat_replication) END AS replicas
    FROM pg_stat_database d JOIN pg_database db ON db.datname = d.datname
    WHERE d.datname = current_database()
    """
)
