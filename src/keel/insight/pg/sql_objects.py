"""Space, index, bloat and I/O queries (see `sql.py` for the ground rules)."""

from __future__ import annotations

from sqlalchemy import text

# User relations only: system catalogs and TOAST tables are counted with their owner.
_USER_RELATION = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'"
    " AND n.nspname NOT LIKE 'pg_temp%'"
)

TABLE_SPACE = text(
    f"""
    SELECT n.nspname || '.' || c.relname AS "table",
           pg_total_relation_size(c.oid)::bigint AS total_bytes,
           pg_relation_size(c.oid)::bigint AS table_bytes,
           pg_indexes_size(c.oid)::bigint AS index_bytes,
           coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0)::bigint AS toast_bytes,
           greatest(c.reltuples, 0)::bigint AS estimated_rows
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'm', 'p') AND {_USER_RELATION}
    ORDER BY total_bytes DESC, 1
    LIMIT :limit
    """  # noqa: S608 - a constant fragment
)

INDEX_SPACE = text(
    f"""
    SELECT n.nspname || '.' || i.relname AS "index", n.nspname || '.' || t.relname AS "table",
           pg_relation_size(i.oid)::bigint AS bytes
    FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
    JOIN pg_namespace n ON n.oid = i.relnamespace
    WHERE {_USER_RELATION}
    ORDER BY bytes DESC, 1
    LIMIT :limit
    """  # noqa: S608 - a constant fragment
)

# Every user index with what the checks need: scans since the stats reset, size, key.
INDEXES = text(
    f"""
    SELECT n.nspname || '.' || i.relname AS "index", n.nspname || '.' || t.relname AS "table",
           x.indrelid::bigint AS table_oid,
           x.indkey::text AS key, x.indnkeyatts::int AS key_columns,
           x.indclass::text AS opclasses,
           x.indcollation::text AS collations, coalesce(x.indoption::text, '') AS options,
           pg_get_expr(x.indexprs, x.indrelid) AS expressions,
           pg_get_expr(x.indpred, x.indrelid) AS predicate,
           am.amname AS method, x.indisunique AS is_unique, x.indisprimary AS is_primary,
           x.indisexclusion AS is_exclusion, x.indisvalid AS is_valid,
           EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid)
               AS backs_constraint,
           coalesce(s.idx_scan, 0)::bigint AS scans, s.last_idx_scan AS last_scan,
           pg_relation_size(i.oid)::bigint AS bytes,
           pg_get_indexdef(i.oid) AS definition
    FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
    JOIN pg_namespace n ON n.oid = i.relnamespace JOIN pg_am am ON am.oid = i.relam
    LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = x.indexrelid
    WHERE {_USER_RELATION}
    ORDER BY 2, 1
    """  # noqa: S608 - a constant fragment
)

STATS_RESET = text("SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()")

# Tables read mostly by sequential scans, weighted by the rows those scans read.
SEQ_SCAN_HEAVY = text(
    """
    SELECT schemaname || '.' || relname AS "table", seq_scan::bigint AS seq_scans,
           seq_tup_read::bigint AS rows_read, coalesce(idx_scan, 0)::bigint AS index_scans,
           n_live_tup::bigint AS live_tuples,
           (seq_tup_read / greatest(seq_scan, 1))::bigint AS rows_per_scan
    FROM pg_stat_user_tables
    WHERE seq_scan > 0 AND n_live_tup >= :min_rows
      AND seq_tup_read / greatest(seq_scan, 1) >= :min_rows
    ORDER BY seq_tup_read DESC
    LIMIT :limit
    """
)

# Statistics-based bloat estimate (pg_stats, readable without superuser, unlike
# pg_statistic): expected pages from rows x average width, against actual pages.
TABLE_BLOAT_ESTIMATE = text(
    f"""
    WITH widths AS (
      SELECT schemaname, tablename, sum((1 - null_frac) * avg_width) AS row_width,
             max(null_frac) > 0 AS has_nulls
      FROM pg_stats WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
      GROUP BY 1, 2
    )
    SELECT n.nspname || '.' || c.relname AS "table",
           c.relpages::bigint * current_setting('block_size')::bigint AS bytes,
           greatest(c.relpages - ceil(c.reltuples * (24 + 4 + w.row_width)
             / ((current_setting('block_size')::int - 24)
                * coalesce((SELECT substring(o FROM 'fillfactor=(\\d+)')::int
                            FROM unnest(c.reloptions) o WHERE o LIKE 'fillfactor=%'), 100)
                / 100.0)), 0)::bigint * current_setting('block_size')::bigint
             AS bloat_bytes,
           NULL::float8 AS dead_tuple_percent, 'estimate' AS method
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN widths w ON w.schemaname = n.nspname AND w.tablename = c.relname
    WHERE c.relkind IN ('r', 'm') AND c.reltuples > 0 AND {_USER_RELATION}
    ORDER BY bloat_bytes DESC
    LIMIT :limit
    """  # noqa: S608 - a constant fragment
)

# pgstattuple_approx: reads the pages the visibility map doesn't vouch for; the largest
# tables only, and the statement_timeout bounds it.
TABLE_BLOAT_PGSTATTUPLE = text(
    f"""
    WITH biggest AS (
      SELECT c.oid, n.nspname || '.' || c.relname AS "table"
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'm') AND {_USER_RELATION}
      ORDER BY pg_relation_size(c.oid) DESC LIMIT :limit
    )
    SELECT b."table", a.table_len::bigint AS bytes,
           (a.dead_tuple_len + a.approx_free_space)::bigint AS bloat_bytes,
           a.dead_tuple_percent::float8 AS dead_tuple_percent, 'pgstattuple_approx' AS method
    FROM biggest b, LATERAL pgstattuple_approx(b.oid) a
    ORDER BY bloat_bytes DESC
    """  # noqa: S608 - a constant fragment
)

# B-tree index bloat, estimated from the indexed columns' average widths in pg_stats.
INDEX_BLOAT_ESTIMATE = text(
    f"""
    WITH cols AS (
      SELECT x.indexrelid, sum(s.avg_width) AS key_width, count(s.avg_width) = x.indnkeyatts
               AS complete
      FROM pg_index x
      JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
      CROSS JOIN LATERAL unnest(x.indkey[0:x.indnkeyatts - 1]) AS k(attnum)
      JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
      LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = t.relname
                          AND s.attname = a.attname
      GROUP BY x.indexrelid, x.indnkeyatts
    )
    SELECT n.nspname || '.' || i.relname AS "index",
           i.relpages::bigint * current_setting('block_size')::bigint AS bytes,
           greatest(i.relpages - 1 - ceil(i.reltuples * (8 + 4 + ceil(c.key_width / 8.0) * 8)
             / ((current_setting('block_size')::int - 40) * 0.9)), 0)::bigint
             * current_setting('block_size')::bigint AS bloat_bytes,
           'estimate' AS method
    FROM cols c JOIN pg_class i ON i.oid = c.indexrelid
    JOIN pg_namespace n ON n.oid = i.relnamespace JOIN pg_am am ON am.oid = i.relam
    WHERE c.complete AND am.amname = 'btree' AND i.reltuples > 0 AND {_USER_RELATION}
    ORDER BY bloat_bytes DESC
    LIMIT :limit
    """  # noqa: S608 - a constant fragment
)

# pg_stat_io: 17 counts operations of op_bytes each; 18 reports bytes and WAL I/O itself.
_IO_COMMON = """
    backend_type, object, context,
    coalesce(reads, 0)::bigint AS reads, coalesce(writes, 0)::bigint AS writes,
    coalesce(extends, 0)::bigint AS extends, coalesce(hits, 0)::bigint AS hits,
    coalesce(evictions, 0)::bigint AS evictions, coalesce(reuses, 0)::bigint AS reuses,
    coalesce(fsyncs, 0)::bigint AS fsyncs,
    coalesce(read_time, 0)::float8 AS read_ms, coalesce(write_time, 0)::float8 AS write_ms,
"""
IO_17 = text(
    f"""
    SELECT {_IO_COMMON}
           (coalesce(reads, 0) * op_bytes)::bigint AS read_bytes,
           (coalesce(writes, 0) * op_bytes)::bigint AS write_bytes,
           (coalesce(extends, 0) * op_bytes)::bigint AS extend_bytes
    FROM pg_stat_io
    WHERE coalesce(reads, 0) + coalesce(writes, 0) + coalesce(extends, 0) + coalesce(hits, 0)
          + coalesce(fsyncs, 0) > 0
    ORDER BY read_bytes + write_bytes DESC, 1, 2, 3
    """  # noqa: S608 - a constant fragment
)
IO_18 = text(
    f"""
    SELECT {_IO_COMMON}
           coalesce(read_bytes, 0)::bigint AS read_bytes,
           coalesce(write_bytes, 0)::bigint AS write_bytes,
           coalesce(extend_bytes, 0)::bigint AS extend_bytes
    FROM pg_stat_io
    WHERE coalesce(reads, 0) + coalesce(writes, 0) + coalesce(extends, 0) + coalesce(hits, 0)
          + coalesce(fsyncs, 0) > 0
    ORDER BY read_bytes + write_bytes DESC, 1, 2, 3
    """  # noqa: S608 - a constant fragment
)
