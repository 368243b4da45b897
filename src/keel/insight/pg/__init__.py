"""Database insight: PgHero-class checks and reports on the PostgreSQL Keel runs on.

Everything here reads catalog and statistics views with a short statement_timeout in
a read-only transaction; the only writes are cancel/terminate of a backend (audited),
the pg_stat_statements reset, and the snapshot job's own tables.
"""
