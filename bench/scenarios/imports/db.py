"""The imports scenario's database side: resets, the `\\copy` twin tables, SQL phases."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bench.harness.base import BenchError
from bench.harness.pg import psql
from keel.core.embedded import EmbeddedPostgres

_DROP_TRIGGERS = """
    DO $$ DECLARE t text; BEGIN
        FOR t IN SELECT tgname FROM pg_trigger
                 WHERE tgrelid = 'public.bench_posts'::regclass AND NOT tgisinternal LOOP
            EXECUTE 'DROP TRIGGER ' || quote_ident(t) || ' ON public.bench_posts';
        END LOOP;
    END $$;
"""
_DROP_GIN = """
    DO $$ BEGIN EXECUTE (
        SELECT 'DROP INDEX public.' || quote_ident(c.relname) FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
        WHERE i.indrelid = 'public.bench_posts'::regclass AND a.amname = 'gin');
    END $$;
"""
_DROP_SEARCH = "ALTER TABLE public.bench_posts DROP COLUMN search;"  # and its GIN index
_DROP_FK = """
    DO $$ BEGIN EXECUTE (
        SELECT 'ALTER TABLE public.bench_posts DROP CONSTRAINT ' || quote_ident(conname)
        FROM pg_constraint WHERE conrelid = 'public.bench_posts'::regclass AND contype = 'f');
    END $$;
"""
COPY_VARIANTS = {
    "posts_copy_minus_triggers": _DROP_TRIGGERS,
    "posts_copy_minus_gin": _DROP_TRIGGERS + _DROP_GIN,
    "posts_copy_minus_tsvector": _DROP_TRIGGERS + _DROP_SEARCH,
    "posts_copy_minus_fk": _DROP_TRIGGERS + _DROP_SEARCH + _DROP_FK,
}


def count_rows(pg: EmbeddedPostgres, table: str) -> int:
    return int(psql(pg, f"SELECT count(*) FROM {table};"))  # noqa: S608 - our own names


def user_ids(pg: EmbeddedPostgres) -> dict[str, str]:
    out = psql(pg, "SELECT username, id FROM app.users;")
    return dict(line.split("|", 1) for line in out.splitlines())


def reset(pg: EmbeddedPostgres, admin_id: str) -> None:
    """Back to the starting state: only the admin, no posts, compact tables."""
    psql(
        pg,
        f"""
        TRUNCATE app.posts CASCADE;
        DO $$ BEGIN
            IF to_regclass('app.jobs') IS NOT NULL THEN TRUNCATE app.jobs; END IF;
        END $$;
        DELETE FROM app.users WHERE id <> '{admin_id}';
        VACUUM FULL app.users;
        DROP TABLE IF EXISTS public.bench_posts;
        DROP TABLE IF EXISTS public.bench_users;
        """,  # noqa: S608 - admin_id is a uuid we read back
    )


def empty_posts(pg: EmbeddedPostgres) -> None:
    """No posts (nor what hangs off them: embeddings) and no queued jobs."""
    psql(
        pg,
        """
        TRUNCATE app.posts CASCADE;
        DO $$ BEGIN
            IF to_regclass('app.jobs') IS NOT NULL THEN TRUNCATE app.jobs; END IF;
        END $$;
        """,
    )


def create_copy_table(pg: EmbeddedPostgres, kind: str) -> dict[str, Any]:
    """An empty public.bench_<kind> LIKE app.<kind> INCLUDING ALL (+ the FK for posts)."""
    table = f"public.bench_{kind}"
    ddl = f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (LIKE app.{kind} INCLUDING ALL);"
    if kind == "posts":  # LIKE copies no foreign keys; the real table has this one
        ddl += (
            f" ALTER TABLE {table} ADD FOREIGN KEY (author_id)"
            " REFERENCES app.users (id) ON DELETE CASCADE;"
        )
    # LIKE copies no triggers either: the same ones (updated_at, queued embedding jobs).
    triggers = psql(
        pg,
        f"SELECT pg_get_triggerdef(oid) FROM pg_trigger "  # noqa: S608 - our own names
        f"WHERE tgrelid = 'app.{kind}'::regclass AND NOT tgisinternal ORDER BY tgname;",
    ).splitlines()
    for trigger in triggers:
        ddl += " " + trigger.replace(f" ON app.{kind} ", f" ON {table} ") + ";"
    psql(pg, ddl)
    facts = psql(
        pg,
        f"""
        SELECT (SELECT count(*) FROM pg_index WHERE indrelid = 'app.{kind}'::regclass),
               (SELECT count(*) FROM pg_index WHERE indrelid = '{table}'::regclass),
               (SELECT string_agg(attname || '=' || attgenerated::text, ',')
                  FROM pg_attribute
                  WHERE attrelid = '{table}'::regclass AND attgenerated IN ('s', 'v')),
               (SELECT count(*) FROM pg_constraint
                  WHERE conrelid = 'app.{kind}'::regclass AND contype IN ('f', 'c')),
               (SELECT count(*) FROM pg_constraint
                  WHERE conrelid = '{table}'::regclass AND contype IN ('f', 'c')),
               (SELECT count(DISTINCT pg_get_expr(d.adbin, d.adrelid))
                  || '/' || count(*)
                  FROM pg_attrdef d JOIN pg_attribute a
                    ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                  WHERE d.adrelid IN ('app.{kind}'::regclass, '{table}'::regclass)
                    AND a.attgenerated = 's'),
               (SELECT count(*) FROM pg_trigger
                  WHERE tgrelid = 'app.{kind}'::regclass AND NOT tgisinternal),
               (SELECT count(*) FROM pg_trigger
                  WHERE tgrelid = '{table}'::regclass AND NOT tgisinternal);
        """,  # noqa: S608 - our own names
    ).split("|")
    same = {
        "indexes_real": int(facts[0]),
        "indexes_copy": int(facts[1]),
        "generated_columns": facts[2],
        "fk_check_constraints_real": int(facts[3]),
        "fk_check_constraints_copy": int(facts[4]),
        # distinct generation expressions / generated columns, over both tables: 1/2 = same
        "generated_expressions": facts[5],
        "triggers_real": int(facts[6]),
        "triggers_copy": int(facts[7]),
        "trigger_defs": triggers,
    }
    if (
        same["indexes_real"] != same["indexes_copy"]
        or same["fk_check_constraints_real"] != same["fk_check_constraints_copy"]
        or same["triggers_real"] != same["triggers_copy"]
    ):
        raise BenchError(f"{table} does not match app.{kind}: {same}")
    if kind == "posts" and (
        same["generated_columns"] != "search=s" or same["generated_expressions"] != "1/2"
    ):
        raise BenchError(f"{table} lacks the stored generated search column: {same}")
    return same


def table_size(pg: EmbeddedPostgres, table: str) -> str:
    """Heap + TOAST, and indexes, e.g. "226 MB + 60 MB of indexes"."""
    return psql(
        pg,
        f"SELECT pg_size_pretty(pg_table_size('{table}')) || ' + ' || "  # noqa: S608
        f"pg_size_pretty(pg_indexes_size('{table}')) || ' of indexes';",
    )


def index_defs(pg: EmbeddedPostgres, schema: str, table: str) -> list[str]:
    out = psql(
        pg,
        f"SELECT indexdef FROM pg_indexes WHERE schemaname = '{schema}' "  # noqa: S608
        f"AND tablename = '{table}' ORDER BY indexname;",
    )
    return out.splitlines()


PHASES = (
    ("copy_to_staging", re.compile(r"^COPY ")),
    ("merge", re.compile(r"MERGE INTO")),
    ("checks", re.compile(r"^SELECT (s\.)?line\b")),
    ("create_staging", re.compile(r"^CREATE TEMP TABLE")),
    ("count_discard_drop", re.compile(r"keel_import_|^DROP TABLE")),
    # Nested statements, already counted in the statement that ran them (MERGE, COPY):
    ("fk_checks_nested", re.compile(r"FROM ONLY ")),  # RI triggers
    ("embedding_jobs_nested", re.compile(r"INSERT INTO app\.jobs")),  # AFTER INSERT/UPDATE
    ("commit", re.compile(r"^COMMIT", re.IGNORECASE)),
)


def pgss_phases(pg: EmbeddedPostgres) -> dict[str, dict[str, float]]:
    """Executed SQL since the last reset, summed per import phase (ms, calls)."""
    out = psql(
        pg,
        """
        SELECT calls, total_exec_time, regexp_replace(left(query, 300), '\\s+', ' ', 'g')
        FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND query NOT ILIKE '%pg_stat_statements%';
        """,
    )
    phases: dict[str, dict[str, float]] = {}
    for line in out.splitlines():
        calls, total, query = line.split("|", 2)
        query = query.strip()
        name = next((n for n, pattern in PHASES if pattern.search(query)), "other")
        slot = phases.setdefault(name, {"ms": 0.0, "calls": 0.0})
        slot["ms"] += float(total)
        slot["calls"] += int(calls)
    return phases


def top_level_sql_ms(phases: Mapping[str, Mapping[str, float]]) -> float:
    return sum(v["ms"] for k, v in phases.items() if not k.endswith("_nested"))
