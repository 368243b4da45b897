"""Bulk imports on 100k-row files: the app's COPY + MERGE path vs `psql \\copy` and vs the ORM.

    uv run python bench/imports.py [--rounds 3] [--users 100000] [--posts 100000]
                                   [--naive-rows 10000] [--naive-commit-rows 2000]
                                   [--plain-users 500] [--seed 1] [--ref HEAD]
                                   [--no-ndjson] [--no-cli] [--no-copy-breakdown]

One embedded PostgreSQL, migrated; one full app (one uvicorn worker pinned to CPU 0, as the
harness serves it) with an admin made from FIRST_SUPERUSER_*. Deterministic files in a temp
dir: users.csv (every row carries the SAME pre-hashed argon2id password: the import's cost is
measured, not hashing) and posts.csv (Faker text as `keel seed` makes it, authors named by
author_username, explicit ids and created_at), plus NDJSON twins.

Each of --rounds rounds, from the same starting state (only the admin; app.posts empty):

1. users.csv through `POST /api/v1/admin/import/users?on_conflict=error` (streamed from
   disk; parse, validate, COPY to staging, checks, MERGE, commit: the request end to end),
   then the same rows by `psql \\copy` into an empty `LIKE app.users INCLUDING ALL` table.
2. posts.csv through `POST .../import/posts`, then `psql \\copy` of the same final rows (id,
   title, content, is_published, author_id, created_at) into an empty
   `LIKE app.posts INCLUDING ALL` table (generated tsvector, GIN and other indexes) with the
   same foreign key to app.users.
3. posts.csv again with on_conflict=update (identical rows: MERGE counts them unchanged),
   and a copy where every title changed (true updates): ÷ the first import.
4. The NDJSON twins through HTTP, and `keel import posts posts.csv` (the CLI) as a
   subprocess: other ways into the same path.

Each round also runs the naive baseline into the same starting states: --naive-rows ORM
objects added one at a time (`session.add(obj); await session.flush()`, one transaction,
commit at the end), extrapolated to 100k, and --naive-commit-rows committing every row; and
(--copy-breakdown) the posts `\\copy` again into the same table without its GIN index, its
generated tsvector and its foreign key, one more piece at a time, to price each piece.
Then --plain-users users with plain passwords (hashed by the import, argon2id defaults),
with the server pinned to one core and unpinned.

Before every timed step: VACUUM (ANALYZE) and CHECKPOINT (so autovacuum and checkpoints
stay out of the measurement), then wait for other benchmarks and an idle machine.
Results go to bench/results/imports.{json,md}; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import httpx
import orjson

import _extra as x
import _harness as h

NAME = "imports"
APP = "keel.app:create_app"
IMPORT = f"{x.API}/admin/import"
LOGIN = f"{x.API}/auth/login"
ADMIN_EMAIL, ADMIN_USERNAME = "bench.admin@example.com", "bench.admin"
ADMIN_PASSWORD = "bench-admin-password"  # noqa: S105 - a throwaway benchmark account
SHARED_PASSWORD = "bench-import-password"  # noqa: S105 - hashed once, shared by every row
# Why a fresh server before the re-import that changes every title (--fresh-server, on by
# default): app.queue_post_embeddings() (migration 0005), the AFTER UPDATE statement trigger,
# joins its transition tables `new_rows JOIN old_rows USING (id)` in a static PL/pgSQL
# statement. PL/pgSQL caches that statement's plan per database connection, made for the
# transition tables' sizes on its first call there. The identical re-import runs the
# trigger with 0 rows first, so that connection keeps a Nested Loop, and 100k changed rows
# then take > 10 min (the import's statement_timeout: a 500). Measured here: 20k rows,
# 0.2 s after a big first call, 35 s after an empty one; with `EXECUTE` (planned per call)
# 0.2 s both ways. A fresh server means fresh connections: this step's figure is the cost
# once the trigger is fixed, not what a long-running server does today.
TARGETS = {"posts_vs_copy": 0.5, "posts_vs_naive": 50.0}
FIXED_NOW = datetime(2026, 1, 1, tzinfo=UTC)  # "now" of the generated data: files repeat
CONTENT_TYPES = {"csv": "text/csv", "ndjson": "application/x-ndjson"}
CHUNK = 1 << 20

USER_APP_COLUMNS = (
    "email",
    "username",
    "full_name",
    "hashed_password",
    "is_active",
    "is_verified",
    "metadata",
    "created_at",
)
USER_COPY_COLUMNS = (
    "id",
    "email",
    "username",
    "full_name",
    "hashed_password",
    "is_active",
    "is_verified",
    "is_superuser",
    "metadata",
    "created_at",
)
POST_APP_COLUMNS = ("id", "title", "content", "is_published", "author_username", "created_at")
POST_COPY_COLUMNS = ("id", "title", "content", "is_published", "author_id", "created_at")
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
# The posts \copy again, taking one more piece away each time (cumulative).
COPY_VARIANTS = {
    "posts_copy_minus_triggers": _DROP_TRIGGERS,
    "posts_copy_minus_gin": _DROP_TRIGGERS + _DROP_GIN,
    "posts_copy_minus_tsvector": _DROP_TRIGGERS + _DROP_SEARCH,
    "posts_copy_minus_fk": _DROP_TRIGGERS + _DROP_SEARCH + _DROP_FK,
}


# --- child processes: migrate, hash, naive ORM, with the served source tree ---------------
# Run in a child so that with --ref the snapshot's keel (PYTHONPATH) is the one used.


def child_prepare(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Migrate; one argon2id hash for every row; the raw hash cost (run pinned to CPU 0)."""
    from keel.config import Settings
    from keel.core.passwords import PasswordHasher
    from keel.migrations import runner

    runner.upgrade(spec["url"])
    settings = Settings()
    hasher = PasswordHasher.from_settings(settings)
    hashed = hasher.hash_sync(SHARED_PASSWORD)
    hash_ms = []
    for _ in range(spec["hash_repeats"]):
        t0 = time.perf_counter()
        hasher.hash_sync(SHARED_PASSWORD)
        hash_ms.append((time.perf_counter() - t0) * 1e3)
    return {
        "hashed": hashed,
        "hash_ms": hash_ms,
        "params": {
            "memory_kib": settings.argon2_memory_kib,
            "time_cost": settings.argon2_time_cost,
            "parallelism": settings.argon2_parallelism,
        },
        "hash_workers": settings.import_hash_workers or os.cpu_count() or 1,
    }


def child_naive(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Insert the rows one ORM object at a time: seconds.

    Each row is flushed (one INSERT ... RETURNING round trip) inside one transaction committed
    at the end; with spec["commit_each"], each row is committed instead (autocommit style).
    """
    from sqlalchemy import text

    import keel.models  # noqa: F401 - registers every mapper
    from keel.config import Settings
    from keel.core.db import create_database
    from keel.posts.models import Post
    from keel.users.models import User

    rows = orjson.loads(Path(spec["rows"]).read_bytes())
    commit_each = bool(spec.get("commit_each"))
    kwargs: list[dict[str, Any]] = []
    model: Any
    if spec["kind"] == "posts":
        model = Post
        for r in rows:
            kwargs.append(
                {
                    "id": UUID(r["id"]),
                    "title": r["title"],
                    "content": r["content"],
                    "is_published": r["is_published"],
                    "author_id": UUID(r["author_id"]),
                    "created_at": datetime.fromisoformat(r["created_at"]),
                }
            )
    else:
        model = User
        for r in rows:
            kwargs.append(
                {
                    "email": r["email"],
                    "username": r["username"],
                    "full_name": r.get("full_name"),
                    "hashed_password": r["hashed_password"],
                    "is_active": r["is_active"],
                    "is_verified": r["is_verified"],
                    "metadata_": r["metadata"],
                    "created_at": datetime.fromisoformat(r["created_at"]),
                }
            )

    async def go() -> float:
        database = create_database(Settings(), spec["url"])
        try:
            async with database.sessionmaker() as session:
                await session.execute(text("SELECT 1"))  # connected, transaction open
                t0 = time.perf_counter()
                for kw in kwargs:
                    session.add(model(**kw))
                    if commit_each:
                        await session.commit()
                    else:
                        await session.flush()
                await session.commit()
                return time.perf_counter() - t0
        finally:
            await database.dispose()

    seconds = asyncio.run(go())
    return {"rows": len(kwargs), "seconds": seconds}


def run_child(
    mode: str, spec: Mapping[str, Any], src: Path | None, *, pin: bool = True
) -> dict[str, Any]:
    env = {**os.environ, "ENVIRONMENT": "testing"}
    paths = [str(src) if src else None, str(h.BENCH_DIR), os.environ.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    argv = [sys.executable, __file__, "--child", mode]
    proc = subprocess.run(
        h.pinned(h.SERVER_CPU, argv) if pin else argv,
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        env=env,
        cwd=h.REPO_ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise h.BenchError(f"child {mode} failed:\n{proc.stderr[-3000:]}")
    return cast(dict[str, Any], json.loads(proc.stdout.strip().splitlines()[-1]))


# --- data -------------------------------------------------------------------------------


@dataclass
class Data:
    """The generated rows (in memory) and the files made from them."""

    users: list[dict[str, Any]]
    posts: list[dict[str, Any]]  # author as "author_username"
    files: dict[str, Path] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


def _iso(value: datetime) -> str:
    return value.isoformat()


def generate(n_users: int, n_posts: int, seed: int, hashed: str) -> Data:
    """Users and posts with keel.seed's Faker pools; ids and times from `seed` as well."""
    from keel.seed.fake import FakeRows, seeded_uuid7

    fake = FakeRows(seed)
    fake.now_us = (FIXED_NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    id_rng = random.Random(seed + 1)  # noqa: S311 - fake data
    times = fake.user_times(n_users)
    users = []
    for serial, created_us in enumerate(times, 1):
        row = fake.user(created_us, serial, hashed)
        users.append(
            {
                "id": str(seeded_uuid7(created_us // 1000, id_rng)),  # for \copy only
                "email": row[1],
                "username": row[2],
                "full_name": row[3],
                "hashed_password": hashed,
                "is_active": row[5],
                "is_verified": row[6],
                "is_superuser": False,
                "metadata": orjson.loads(row[8]),
                "created_at": _iso(row[9]),
            }
        )
    authors = cast(Any, list(range(n_users)))  # FakeRows.posts hands these back per post
    posts = []
    for row in fake.posts(n_posts, authors, times, 0.8):
        created: datetime = row[5]
        created_us = (created - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        posts.append(
            {
                "id": str(seeded_uuid7(created_us // 1000, id_rng)),
                "title": row[1],
                "content": row[2],
                "is_published": row[3],
                "author_username": users[row[4]]["username"],
                "created_at": _iso(created),
            }
        )
    return Data(users, posts)


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return "" if value is None else value


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
    return path


def write_ndjson(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    with path.open("wb") as handle:
        for row in rows:
            handle.write(orjson.dumps({c: row[c] for c in columns if row.get(c) is not None}))
            handle.write(b"\n")
    return path


def changed_titles(posts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every title different (and still at most 255 characters)."""
    return [{**p, "title": ("Revised: " + p["title"])[:255]} for p in posts]


def plain_users(count: int) -> list[dict[str, Any]]:
    return [
        {
            "email": f"plain.{i}@example.com",
            "username": f"plain.user.{i}",
            "password": f"plain-password-{i:06d}",
        }
        for i in range(count)
    ]


# --- database helpers -------------------------------------------------------------------


def count_rows(pg: Any, table: str) -> int:
    return int(x.psql(pg, f"SELECT count(*) FROM {table};"))  # noqa: S608 - our own names


def user_ids(pg: Any) -> dict[str, str]:
    out = x.psql(pg, "SELECT username, id FROM app.users;")
    return dict(line.split("|", 1) for line in out.splitlines())


def reset(pg: Any, admin_id: str) -> None:
    """Back to the starting state: only the admin, no posts, compact tables."""
    x.psql(
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


def empty_posts(pg: Any) -> None:
    """No posts (nor what hangs off them: embeddings) and no queued jobs."""
    x.psql(
        pg,
        """
        TRUNCATE app.posts CASCADE;
        DO $$ BEGIN
            IF to_regclass('app.jobs') IS NOT NULL THEN TRUNCATE app.jobs; END IF;
        END $$;
        """,
    )


def settle(pg: Any, args: argparse.Namespace, others: list[str]) -> None:
    """Before a timed step: nothing left for autovacuum or the checkpointer, a quiet box."""
    x.psql(pg, "VACUUM (ANALYZE); CHECKPOINT;")
    others += wait_for_others(args)


# --- noise: whose CPU is whose ------------------------------------------------------------
# `_extra._own_family` also counts every descendant of every ancestor, i.e. (through init)
# every process on the box: `_extra.other_benchmarks()` then never sees another benchmark and
# `_extra.cpu_split` counts as "other" only processes started during the run. Here the
# family is this process, its ancestor chain (not init) and its own descendants.


def own_family() -> set[int]:
    parents = x._parents()
    family = {os.getpid()}
    pid = os.getpid()
    while parents.get(pid, 0) > 1:
        pid = parents[pid]
        family.add(pid)
    mine = {os.getpid()}
    while kids := {p for p, pp in parents.items() if pp in mine and p not in mine}:
        mine |= kids
    return family | mine


def other_benchmarks() -> list[str]:
    """`pgrep -af` lines of bench/ scripts and wrk processes that are not ours."""
    lines: list[str] = []
    for argv in (["pgrep", "-af", "bench/"], ["pgrep", "-a", "wrk"]):
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        lines += [line for line in out.splitlines() if line.strip()]
    family = own_family()
    return sorted({line for line in lines if int(line.split(maxsplit=1)[0]) not in family})


def wait_for_others(args: argparse.Namespace) -> list[str]:
    """Wait (up to --other-wait s) for other benchmarks, then (--quiet-wait) an idle box."""
    deadline = time.monotonic() + args.other_wait
    while (others := other_benchmarks()) and time.monotonic() < deadline:
        print(f"other benchmark running, waiting: {others[0][:120]}", file=sys.stderr)
        time.sleep(10.0)
    if others:
        print(f"still running, going ahead: {others}", file=sys.stderr)
    h.wait_for_quiet(args.quiet_wait)
    return others


@dataclass(frozen=True)
class Cpu:
    """CPU used during a step, in % of one core."""

    server_pct: float  # the uvicorn worker
    postgres_pct: float  # postmaster and backends (and their reaped children)
    client_pct: float  # this process and its children: psql, the CLI, the naive child
    other_pct: float  # everything else on the box: noise


@contextlib.contextmanager
def cpu_split(server_pid: int | None, pg: Any) -> Iterator[Callable[[], Cpu]]:
    """Split the CPU used during the block: server, PostgreSQL, our client side, the rest.

    "Other" is the machine's busy time (/proc/stat) minus the three others, so a process
    elsewhere that reaps a long-running child meanwhile can't inflate it, and short-lived
    processes and kernel threads still count.
    """
    pm = x.postmaster_pid(pg)
    t0, busy0, before = time.monotonic(), h._busy_seconds(), x._cpu_seconds()
    result: list[Cpu] = []
    yield lambda: result[0] if result else Cpu(0.0, 0.0, 0.0, 0.0)
    wall = time.monotonic() - t0
    # A backend whose client just left may still be exiting: once the postmaster has reaped
    # it, its CPU is in the postmaster's children time; mid-way it would be nobody's.
    time.sleep(0.25)
    after, busy1 = x._cpu_seconds(), h._busy_seconds()
    window = time.monotonic() - t0  # what the busy time spans, the wait included
    own = own_family() - ({server_pid} if server_pid else set())
    used = {"server": 0.0, "postgres": 0.0, "client": 0.0}
    for pid, (ppid, seconds) in after.items():
        delta = seconds - before.get(pid, (0, 0.0))[1]
        if pid == server_pid:
            used["server"] += delta
        elif pm is not None and pm in (pid, ppid):
            used["postgres"] += delta
        elif pid in own:
            used["client"] += delta
    pct = {k: max(0.0, v / wall * 100) for k, v in used.items()}
    pct["other"] = max(0.0, (busy1 - busy0 - sum(used.values())) / window * 100)
    result.append(Cpu(pct["server"], pct["postgres"], pct["client"], pct["other"]))


def create_copy_table(pg: Any, kind: str) -> dict[str, Any]:
    """An empty public.bench_<kind> LIKE app.<kind> INCLUDING ALL (+ the FK for posts)."""
    table = f"public.bench_{kind}"
    ddl = f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (LIKE app.{kind} INCLUDING ALL);"
    if kind == "posts":  # LIKE copies no foreign keys; the real table has this one
        ddl += (
            f" ALTER TABLE {table} ADD FOREIGN KEY (author_id)"
            " REFERENCES app.users (id) ON DELETE CASCADE;"
        )
    # LIKE copies no triggers either: the same ones (updated_at, queued embedding jobs).
    triggers = x.psql(
        pg,
        f"SELECT pg_get_triggerdef(oid) FROM pg_trigger "  # noqa: S608 - our own names
        f"WHERE tgrelid = 'app.{kind}'::regclass AND NOT tgisinternal ORDER BY tgname;",
    ).splitlines()
    for trigger in triggers:
        ddl += " " + trigger.replace(f" ON app.{kind} ", f" ON {table} ") + ";"
    x.psql(pg, ddl)
    facts = x.psql(
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
        raise h.BenchError(f"{table} does not match app.{kind}: {same}")
    if kind == "posts" and (
        same["generated_columns"] != "search=s" or same["generated_expressions"] != "1/2"
    ):
        raise h.BenchError(f"{table} lacks the stored generated search column: {same}")
    return same


def table_size(pg: Any, table: str) -> str:
    """Heap + TOAST, and indexes, e.g. "226 MB + 60 MB of indexes"."""
    return x.psql(
        pg,
        f"SELECT pg_size_pretty(pg_table_size('{table}')) || ' + ' || "  # noqa: S608
        f"pg_size_pretty(pg_indexes_size('{table}')) || ' of indexes';",
    )


def index_defs(pg: Any, schema: str, table: str) -> list[str]:
    out = x.psql(
        pg,
        f"SELECT indexdef FROM pg_indexes WHERE schemaname = '{schema}' "  # noqa: S608
        f"AND tablename = '{table}' ORDER BY indexname;",
    )
    return out.splitlines()


# --- pg_stat_statements: where the SQL time goes ----------------------------------------

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


def pgss_phases(pg: Any) -> dict[str, dict[str, float]]:
    """Executed SQL since the last reset, summed per import phase (ms, calls)."""
    out = x.psql(
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


# --- measurements -----------------------------------------------------------------------


@dataclass
class Run:
    """One timed step."""

    seconds: float
    rows: int
    cpu: Cpu
    report: dict[str, Any] = field(default_factory=dict)
    sql: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def rows_per_sec(self) -> float:
        return self.rows / self.seconds

    def as_json(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "rows": self.rows,
            "rows_per_sec": self.rows_per_sec,
            "cpu": asdict(self.cpu),
            "report": self.report,
            "sql_ms": self.sql,
        }


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def http_import(
    server: h.Server,
    pg: Any,
    token: str,
    kind: str,
    path: Path,
    on_conflict: str,
    expect: Mapping[str, int],
) -> Run:
    """POST the file (streamed from disk) and time the request end to end."""
    fmt = path.suffix.lstrip(".")
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": CONTENT_TYPES[fmt],
        "Content-Length": str(path.stat().st_size),
    }
    x.pgss_reset(pg)
    with (
        httpx.Client(base_url=server.url(""), timeout=httpx.Timeout(1800.0)) as client,
        cpu_split(server.proc.pid, pg) as cpu,
    ):
        t0 = time.perf_counter()
        reply = client.post(
            f"{IMPORT}/{kind}",
            params={"on_conflict": on_conflict},
            content=_file_chunks(path),
            headers=headers,
        )
        seconds = time.perf_counter() - t0
    if reply.status_code != 200:
        log = server.log_path.read_text(errors="replace").splitlines()[-60:]
        raise h.BenchError(
            f"import {kind} {path.name}: {reply.status_code} {reply.text[:1500]}\n"
            f"--- tail of the server log ---\n" + "\n".join(log)
        )
    report = reply.json()
    got = {k: report[k] for k in expect}
    if got != dict(expect) or report["rejected_count"] or not report["committed"]:
        raise h.BenchError(f"import {kind} {path.name}: expected {dict(expect)}, got {report}")
    return Run(seconds, report["rows"], cpu(), report, pgss_phases(pg))


def psql_copy(pg: Any, table: str, columns: Sequence[str], path: Path, expect: int) -> Run:
    """`psql \\copy table (columns) FROM path (FORMAT csv, HEADER)`, psql on the server's core."""
    command = f"\\copy {table} ({', '.join(columns)}) FROM '{path}' WITH (FORMAT csv, HEADER true)"
    argv = h.pinned(h.SERVER_CPU, [*pg.psql_argv(), "-XAtq", "-v", "ON_ERROR_STOP=1"])
    x.pgss_reset(pg)
    with cpu_split(None, pg) as cpu:
        t0 = time.perf_counter()
        proc = subprocess.run([*argv, "-c", command], capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise h.BenchError(f"psql \\copy into {table} failed: {proc.stderr.strip()}")
    rows = count_rows(pg, table)
    if rows != expect:
        raise h.BenchError(f"psql \\copy into {table}: {rows} rows, expected {expect}")
    return Run(seconds, rows, cpu(), {}, pgss_phases(pg))


def cli_import(pg: Any, src: Path | None, kind: str, path: Path, expect: int) -> Run:
    """`python -m keel import KIND FILE` as a subprocess pinned to the server's core."""
    env = {
        **os.environ,
        "DATABASE_URL": pg.url,
        "ENVIRONMENT": "testing",
        "LOG_JSON": "true",
        "KEEL_AUTO_MIGRATE": "false",
        "COLUMNS": "160",
    }
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))
    argv = h.pinned(h.SERVER_CPU, [sys.executable, "-m", "keel", "import", kind, str(path)])
    x.pgss_reset(pg)
    with cpu_split(None, pg) as cpu:
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise h.BenchError(f"keel import {kind} failed ({proc.returncode}):\n{proc.stdout}")
    rows = count_rows(pg, f"app.{kind}")
    if rows != expect:
        raise h.BenchError(f"keel import {kind}: {rows} rows, expected {expect}")
    return Run(seconds, rows, cpu(), {}, pgss_phases(pg))


def cli_startup(src: Path | None) -> float:
    """Seconds for `python -m keel import posts --help`: the CLI's fixed start-up cost."""
    env = {**os.environ, "ENVIRONMENT": "testing"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    argv = h.pinned(h.SERVER_CPU, [sys.executable, "-m", "keel", "import", "posts", "--help"])
    samples = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)
        samples.append(time.perf_counter() - t0)
    return h.median(samples)


def set_affinity(pid: int, cpus: str) -> None:
    """Pin (or unpin) every thread of a running process; new threads inherit it."""
    taskset = shutil.which("taskset")
    if taskset is not None:
        subprocess.run([taskset, "-a", "-p", "-c", cpus, str(pid)], capture_output=True, check=True)


def naive(
    pg: Any,
    src: Path | None,
    kind: str,
    rows: Sequence[Mapping[str, Any]],
    workdir: Path,
    *,
    commit_each: bool = False,
) -> Run:
    path = workdir / f"naive_{kind}.json"
    path.write_bytes(orjson.dumps(list(rows)))
    before = count_rows(pg, f"app.{kind}")
    spec = {"url": pg.url, "kind": kind, "rows": str(path), "commit_each": commit_each}
    with cpu_split(None, pg) as cpu:
        out = run_child("naive", spec, src)
    added = count_rows(pg, f"app.{kind}") - before
    if added != len(rows):
        raise h.BenchError(f"naive {kind}: {added} rows landed, expected {len(rows)}")
    return Run(out["seconds"], out["rows"], cpu())


# --- the run ----------------------------------------------------------------------------


def log_run(label: str, run: Run) -> None:
    print(
        f"{label:>34}: {run.rows:>7,} rows {run.seconds:>7.2f} s {run.rows_per_sec:>9,.0f} rows/s"
        f"  CPU server {run.cpu.server_pct:.0f}% pg {run.cpu.postgres_pct:.0f}%"
        f" client {run.cpu.client_pct:.0f}% other {run.cpu.other_pct:.0f}%",
        file=sys.stderr,
    )


def login(server: h.Server) -> str:
    with httpx.Client(base_url=server.url(""), timeout=60) as client:
        reply = client.post(LOGIN, data={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD})
    if reply.status_code != 200:
        raise h.BenchError(f"admin login answered {reply.status_code}: {reply.text[:300]}")
    return str(reply.json()["access_token"])


@dataclass
class Bench:
    """What every timed step needs: the server, the database, the files, the results."""

    args: argparse.Namespace
    pg: Any
    src: Path | None
    server: h.Server
    token: str
    admin_id: str
    data: Data
    workdir: Path
    start_server: Callable[[], h.Server]
    runs: dict[str, list[Run]] = field(default_factory=dict)
    others: list[str] = field(default_factory=list)
    structure: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, str] = field(default_factory=dict)

    def step(self, key: str, round_no: int, measure: Callable[[], Run]) -> Run:
        """Settle, then measure one step and keep the result."""
        settle(self.pg, self.args, self.others)
        result = measure()
        self.runs.setdefault(key, []).append(result)
        log_run(f"round {round_no} {key}", result)
        return result

    def http(self, kind: str, file: str, on_conflict: str, **expect: int) -> Callable[[], Run]:
        path = self.data.files[file]
        return lambda: http_import(
            self.server, self.pg, self.token, kind, path, on_conflict, expect
        )

    def restart_server(self) -> None:
        """A fresh server process, so fresh database connections (see the note above TARGETS)."""
        h.stop_server(self.server)
        self.server = self.start_server()

    def round(self, r: int) -> None:
        """One round of every variant, each from the state it needs."""
        pg, data, f, wd = self.pg, self.data, self.data.files, self.workdir
        n_users, n_posts = len(data.users), len(data.posts)
        n = min(self.args.naive_rows, n_users, n_posts)
        reset(pg, self.admin_id)
        # 1. users: naive ORM, app, \copy; each into a users table holding only the admin
        naive_users = [{k: u[k] for k in USER_APP_COLUMNS} for u in data.users[:n]]
        self.step("users_naive", r, lambda: naive(pg, self.src, "users", naive_users, wd))
        reset(pg, self.admin_id)
        if nc := min(self.args.naive_commit_rows, n):
            few = naive_users[:nc]
            self.step(
                "users_naive_commit_each",
                r,
                lambda: naive(pg, self.src, "users", few, wd, commit_each=True),
            )
            reset(pg, self.admin_id)
        self.step("users_app", r, self.http("users", "users_csv", "error", inserted=n_users))
        self.sizes["users"] = table_size(pg, "app.users")
        self.structure["users"] = create_copy_table(pg, "users")
        copy_users = f["users_copy"]
        self.step(
            "users_copy",
            r,
            lambda: psql_copy(pg, "public.bench_users", USER_COPY_COLUMNS, copy_users, n_users),
        )
        x.psql(pg, "DROP TABLE public.bench_users;")
        # 2. posts: naive ORM, app, \copy; each into an empty posts table, 100k users there
        ids = user_ids(pg)
        final = [{**p, "author_id": ids[p["author_username"]]} for p in data.posts]
        copy_posts = write_csv(wd / "posts_copy.csv", POST_COPY_COLUMNS, final)
        naive_posts = [{k: p[k] for k in POST_COPY_COLUMNS} for p in final[:n]]
        self.step("posts_naive", r, lambda: naive(pg, self.src, "posts", naive_posts, wd))
        empty_posts(pg)
        if nc := min(self.args.naive_commit_rows, n):
            few_posts = naive_posts[:nc]
            self.step(
                "posts_naive_commit_each",
                r,
                lambda: naive(pg, self.src, "posts", few_posts, wd, commit_each=True),
            )
            empty_posts(pg)
        self.step("posts_app", r, self.http("posts", "posts_csv", "error", inserted=n_posts))
        self.sizes["posts"] = table_size(pg, "app.posts")
        self.structure["posts"] = create_copy_table(pg, "posts")
        self.step(
            "posts_copy",
            r,
            lambda: psql_copy(pg, "public.bench_posts", POST_COPY_COLUMNS, copy_posts, n_posts),
        )
        x.psql(pg, "DROP TABLE public.bench_posts;")
        if self.args.copy_breakdown:  # what the \copy's time is made of
            for key, strip in COPY_VARIANTS.items():
                create_copy_table(pg, "posts")
                x.psql(pg, strip)
                self.step(
                    key,
                    r,
                    lambda: psql_copy(
                        pg, "public.bench_posts", POST_COPY_COLUMNS, copy_posts, n_posts
                    ),
                )
                x.psql(pg, "DROP TABLE public.bench_posts;")
        # 3. re-imports with on_conflict=update, over the first import's rows
        same = self.http("posts", "posts_csv", "update", unchanged=n_posts, inserted=0, updated=0)
        self.step("posts_reimport_same", r, same)
        changed = self.http("posts", "posts_changed", "update", updated=n_posts, inserted=0)
        if self.args.fresh_server:
            self.restart_server()
        self.step("posts_reimport_changed", r, changed)
        # 4. other ways in: NDJSON over HTTP, the CLI
        if self.args.ndjson:
            empty_posts(pg)
            ndjson = self.http("posts", "posts_ndjson", "error", inserted=n_posts)
            self.step("posts_app_ndjson", r, ndjson)
        if self.args.cli:
            empty_posts(pg)
            posts_csv = f["posts_csv"]
            self.step("posts_cli", r, lambda: cli_import(pg, self.src, "posts", posts_csv, n_posts))
        if self.args.ndjson:
            reset(pg, self.admin_id)
            ndjson = self.http("users", "users_ndjson", "error", inserted=n_users)
            self.step("users_app_ndjson", r, ndjson)

    def plain_passwords(self, r: int) -> None:
        """Plain passwords hashed by the import: the server on one core, then on all."""
        every_cpu = f"0-{(os.cpu_count() or 1) - 1}"
        n = self.args.plain_users
        for key, cpus in (("plain_pinned", None), ("plain_unpinned", every_cpu)):
            x.psql(self.pg, "DELETE FROM app.users WHERE username LIKE 'plain.user.%';")
            if cpus:
                set_affinity(self.server.proc.pid, cpus)
            try:
                self.step(key, r, self.http("users", "plain_csv", "error", inserted=n))
            finally:
                set_affinity(self.server.proc.pid, str(h.SERVER_CPU))


def write_files(args: argparse.Namespace, data: Data, workdir: Path) -> None:
    f = data.files
    f["users_csv"] = write_csv(workdir / "users.csv", USER_APP_COLUMNS, data.users)
    f["users_copy"] = write_csv(workdir / "users_copy.csv", USER_COPY_COLUMNS, data.users)
    f["posts_csv"] = write_csv(workdir / "posts.csv", POST_APP_COLUMNS, data.posts)
    changed = changed_titles(data.posts)
    f["posts_changed"] = write_csv(workdir / "posts_changed.csv", POST_APP_COLUMNS, changed)
    if args.ndjson:
        f["users_ndjson"] = write_ndjson(workdir / "users.ndjson", USER_APP_COLUMNS, data.users)
        f["posts_ndjson"] = write_ndjson(workdir / "posts.ndjson", POST_APP_COLUMNS, data.posts)
    plain = plain_users(args.plain_users)
    f["plain_csv"] = write_csv(
        workdir / "plain_users.csv", ("email", "username", "password"), plain
    )
    data.sizes = {k: p.stat().st_size for k, p in f.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    others = wait_for_others(args)
    commit = h.git_commit(args.ref)  # now: src may be committed to while this runs
    with (
        h.source_tree(args.ref) as src,
        x.embedded_cluster() as pg,
        tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp,
    ):
        workdir = Path(tmp)
        prep = run_child("prepare", {"url": pg.url, "hash_repeats": args.hash_repeats}, src)
        t0 = time.perf_counter()
        data = generate(args.users, args.posts, args.seed, prep["hashed"])
        write_files(args, data, workdir)
        print(
            f"generated in {time.perf_counter() - t0:.1f} s: "
            + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in data.sizes.items()),
            file=sys.stderr,
        )
        env = x.server_env(pg.url, tmp, src, secrets.token_urlsafe(48))
        env |= {
            "KEEL_AUTO_MIGRATE": "false",
            "FIRST_SUPERUSER_EMAIL": ADMIN_EMAIL,
            "FIRST_SUPERUSER_USERNAME": ADMIN_USERNAME,
            "FIRST_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
            "IMPORT_MAX_BYTES": str(1 << 30),
            # The import's cost, not the embedding of the imported posts afterwards: the
            # job worker would embed them in this process between (and during) steps.
            "WORKER_ENABLED": "false",
        }
        with contextlib.ExitStack() as servers:

            def start() -> h.Server:
                log_path = workdir / "full.log"
                return servers.enter_context(
                    h.uvicorn_server("full", APP, env=env, log_path=log_path)
                )

            server = start()
            admin_sql = f"SELECT id FROM app.users WHERE username = '{ADMIN_USERNAME}';"  # noqa: S608
            bench = Bench(
                args, pg, src, server, login(server), x.psql(pg, admin_sql), data, workdir, start
            )
            bench.others += others
            for r in range(1, args.rounds + 1):
                bench.round(r)
            for r in range(1, args.rounds + 1):
                bench.plain_passwords(r)
            stored = x.psql(
                pg, "SELECT hashed_password FROM app.users WHERE username = 'plain.user.0';"
            )
            facts = {
                "plain_hash_params": stored.rsplit("$", 2)[0],
                "avg_content_chars": round(
                    sum(len(p["content"]) for p in data.posts) / max(1, len(data.posts))
                ),
                "avg_title_chars": round(
                    sum(len(p["title"]) for p in data.posts) / max(1, len(data.posts))
                ),
                "posts_table_after_import": bench.sizes.get("posts"),
                "users_table_after_import": bench.sizes.get("users"),
                "posts_indexes": index_defs(pg, "app", "posts"),
                "users_indexes": index_defs(pg, "app", "users"),
                "pg_version": x.psql(pg, "SHOW server_version;"),
            }
        startup = cli_startup(src) if args.cli else None
    return assemble(args, commit, prep, bench, facts, startup)


def assemble(
    args: argparse.Namespace,
    commit: str,
    prep: Mapping[str, Any],
    bench: Bench,
    facts: Mapping[str, Any],
    startup: float | None,
) -> dict[str, Any]:
    data, runs, others, structure = bench.data, bench.runs, bench.others, bench.structure
    med = {
        k: {
            "seconds": h.median([r.seconds for r in rs]),
            "rows_per_sec": h.median([r.rows_per_sec for r in rs]),
            "server_cpu_pct": h.median([r.cpu.server_pct for r in rs]),
            "postgres_cpu_pct": h.median([r.cpu.postgres_pct for r in rs]),
            "client_cpu_pct": h.median([r.cpu.client_pct for r in rs]),
            "other_cpu_pct": h.median([r.cpu.other_pct for r in rs]),
        }
        for k, rs in runs.items()
    }
    rate = {k: m["rows_per_sec"] for k, m in med.items()}
    secs = {k: m["seconds"] for k, m in med.items()}
    n_posts = len(data.posts)
    hash_ms = h.median(prep["hash_ms"])
    figures: dict[str, Any] = {
        "posts_vs_copy": rate["posts_app"] / rate["posts_copy"],
        "users_vs_copy": rate["users_app"] / rate["users_copy"],
        "posts_vs_naive": rate["posts_app"] / rate["posts_naive"],
        "users_vs_naive": rate["users_app"] / rate["users_naive"],
        # The ceiling for any import path: psql's COPY over the same naive ORM loop.
        "posts_copy_vs_naive": rate["posts_copy"] / rate["posts_naive"],
        "users_copy_vs_naive": rate["users_copy"] / rate["users_naive"],
        "reimport_same_vs_first": secs["posts_reimport_same"] / secs["posts_app"],
        "reimport_changed_vs_first": secs["posts_reimport_changed"] / secs["posts_app"],
        "naive_posts_100k_seconds": n_posts / rate["posts_naive"],
        "naive_users_100k_seconds": len(data.users) / rate["users_naive"],
        "per_round_posts_vs_copy": [
            a.rows_per_sec / b.rows_per_sec
            for a, b in zip(runs["posts_app"], runs["posts_copy"], strict=True)
        ],
        "per_round_users_vs_copy": [
            a.rows_per_sec / b.rows_per_sec
            for a, b in zip(runs["users_app"], runs["users_copy"], strict=True)
        ],
        "raw_hash_ms": hash_ms,
    }
    for key in ("plain_pinned", "plain_unpinned"):
        figures[f"{key}_ms_per_row"] = 1e3 / rate[key]
        figures[f"{key}_100k_minutes"] = 1e5 / rate[key] / 60
    if "posts_app_ndjson" in rate:
        figures["posts_ndjson_vs_csv"] = rate["posts_app_ndjson"] / rate["posts_app"]
        figures["users_ndjson_vs_csv"] = rate["users_app_ndjson"] / rate["users_app"]
    for kind in ("posts", "users"):
        if f"{kind}_naive_commit_each" in rate:
            figures[f"{kind}_vs_naive_commit_each"] = (
                rate[f"{kind}_app"] / rate[f"{kind}_naive_commit_each"]
            )
    if "posts_copy_minus_fk" in rate:
        # µs per row each piece adds to the posts \copy (the variants take one more away each)
        us = {k: 1e6 / rate[k] for k in ("posts_copy", *COPY_VARIANTS)}
        figures["posts_copy_us_per_row"] = {
            "total": us["posts_copy"],
            "triggers": us["posts_copy"] - us["posts_copy_minus_triggers"],
            "gin_index": us["posts_copy_minus_triggers"] - us["posts_copy_minus_gin"],
            "tsvector": us["posts_copy_minus_gin"] - us["posts_copy_minus_tsvector"],
            "foreign_key": us["posts_copy_minus_tsvector"] - us["posts_copy_minus_fk"],
            "rest": us["posts_copy_minus_fk"],
        }
    if "posts_cli" in rate:
        figures["posts_cli_vs_http"] = rate["posts_cli"] / rate["posts_app"]
        figures["posts_cli_minus_startup_vs_http"] = (
            n_posts / (secs["posts_cli"] - (startup or 0.0)) / rate["posts_app"]
        )
        figures["cli_startup_seconds"] = startup
    # Where the app's time goes: median per phase over the rounds (ms), SQL vs the rest.
    breakdown = {}
    for key in ("users_app", "posts_app", "posts_reimport_same", "posts_reimport_changed"):
        phases = sorted({p for r in runs[key] for p in r.sql})
        per = {p: h.median([r.sql.get(p, {}).get("ms", 0.0) for r in runs[key]]) for p in phases}
        sql_ms = h.median([top_level_sql_ms(r.sql) for r in runs[key]])
        breakdown[key] = {
            "wall_ms": secs[key] * 1e3,
            "sql_ms": sql_ms,
            "outside_sql_ms": secs[key] * 1e3 - sql_ms,
            "phases_ms": per,
        }
    for key in ("users_copy", "posts_copy"):
        breakdown[key] = {
            "wall_ms": secs[key] * 1e3,
            "sql_ms": h.median([top_level_sql_ms(r.sql) for r in runs[key]]),
            "phases_ms": {
                p: h.median([r.sql.get(p, {}).get("ms", 0.0) for r in runs[key]])
                for p in sorted({p for r in runs[key] for p in r.sql})
            },
        }
    passes = {k: figures[k] >= t for k, t in TARGETS.items()}
    worst_other = max(r.cpu.other_pct for rs in runs.values() for r in rs)
    return {
        "benchmark": NAME,
        "timestamp": h.now_iso(),
        "commit": commit,
        "settings": {**vars(args), "app": APP, "server_pinned_cpu": h.SERVER_CPU},
        "data": {
            "users": len(data.users),
            "posts": n_posts,
            "file_bytes": data.sizes,
            "shared_hash_params": prep["hashed"].rsplit("$", 2)[0],
            **facts,
        },
        "copy_tables": structure,
        "hasher": {**prep, "hashed": "(omitted)"},
        "figures": figures,
        "targets": TARGETS,
        "pass": passes,
        "medians": med,
        "breakdown": breakdown,
        "rounds": {k: [r.as_json() for r in rs] for k, rs in runs.items()},
        "noisy": worst_other >= h.NOISY_OTHER_CPU_PCT,
        "worst_other_cpu_pct": worst_other,
        "others_seen": sorted(set(others)),
    }


# --- report -----------------------------------------------------------------------------


def render(data: Mapping[str, Any]) -> str:
    f, med, s = data["figures"], data["medians"], data["settings"]
    rounds = data["rounds"]

    def verdict(key: str) -> str:
        return "PASS" if data["pass"][key] else "FAIL"

    def per_round(key: str) -> str:
        return " / ".join(f"{r['rows_per_sec']:,.0f}" for r in rounds[key])

    fig_rows = [
        [
            "posts: app (HTTP, CSV) ÷ `psql \\copy`, rows/s",
            f"{med['posts_app']['rows_per_sec']:,.0f} ÷ {med['posts_copy']['rows_per_sec']:,.0f}"
            f" = **{f['posts_vs_copy']:.2f}**",
            f"≥ {TARGETS['posts_vs_copy']}",
            verdict("posts_vs_copy"),
        ],
        [
            "users (pre-hashed): app ÷ `psql \\copy`",
            f"{med['users_app']['rows_per_sec']:,.0f} ÷ {med['users_copy']['rows_per_sec']:,.0f}"
            f" = **{f['users_vs_copy']:.2f}**",
            "report",
            "",
        ],
        [
            f"posts: app ÷ naive ORM (flush per row, {s['naive_rows']:,} rows)",
            f"{med['posts_app']['rows_per_sec']:,.0f} ÷ {med['posts_naive']['rows_per_sec']:,.0f}"
            f" = **{f['posts_vs_naive']:.1f}×**",
            f"≥ {TARGETS['posts_vs_naive']:g}×",
            verdict("posts_vs_naive"),
        ],
        [
            "ceiling: `psql \\copy` ÷ naive ORM (posts; users)",
            f"{f['posts_copy_vs_naive']:.1f}×; {f['users_copy_vs_naive']:.1f}×",
            "reference",
            "",
        ],
        [
            "users: app ÷ naive ORM",
            f"{med['users_app']['rows_per_sec']:,.0f} ÷ {med['users_naive']['rows_per_sec']:,.0f}"
            f" = **{f['users_vs_naive']:.1f}×**",
            "report",
            "",
        ],
        [
            "posts re-import, `on_conflict=update`, identical rows ÷ first import (time)",
            f"{med['posts_reimport_same']['seconds']:.1f} s ÷ {med['posts_app']['seconds']:.1f} s"
            f" = **{f['reimport_same_vs_first']:.2f}**",
            "report",
            "",
        ],
        [
            "posts re-import, every title changed ÷ first import (time)",
            f"{med['posts_reimport_changed']['seconds']:.1f} s ÷ "
            f"{med['posts_app']['seconds']:.1f} s = **{f['reimport_changed_vs_first']:.2f}**",
            "report",
            "",
        ],
    ]
    if "posts_vs_naive_commit_each" in f:
        fig_rows.insert(
            4,
            [
                "app ÷ naive ORM committing every row (posts; users)",
                f"{f['posts_vs_naive_commit_each']:.1f}×; {f['users_vs_naive_commit_each']:.1f}×",
                "reference",
                "",
            ],
        )
    if "posts_ndjson_vs_csv" in f:
        fig_rows.append(
            [
                "NDJSON ÷ CSV over HTTP, rows/s (posts; users)",
                f"{f['posts_ndjson_vs_csv']:.2f}; {f['users_ndjson_vs_csv']:.2f}",
                "report",
                "",
            ]
        )
    if "posts_cli_vs_http" in f:
        fig_rows.append(
            [
                "posts: `keel import posts` (CLI subprocess) ÷ HTTP, rows/s",
                f"{f['posts_cli_vs_http']:.2f} ({f['posts_cli_minus_startup_vs_http']:.2f} "
                f"without the CLI's {f['cli_startup_seconds']:.1f} s start-up)",
                "report",
                "",
            ]
        )
    labels = {
        "users_app": "users.csv → `POST /admin/import/users` (pre-hashed)",
        "users_copy": "users → `psql \\copy` into `LIKE app.users INCLUDING ALL`",
        "users_app_ndjson": "users.ndjson → HTTP",
        "users_naive": f"users, naive ORM ({s['naive_rows']:,} rows)",
        "users_naive_commit_each": f"users, naive ORM committing every row "
        f"({s['naive_commit_rows']:,} rows)",
        "posts_app": "posts.csv → `POST /admin/import/posts`",
        "posts_copy": "posts → `psql \\copy` into `LIKE app.posts INCLUDING ALL` + FK + triggers",
        "posts_app_ndjson": "posts.ndjson → HTTP",
        "posts_cli": "posts.csv → `keel import posts` (subprocess)",
        "posts_reimport_same": "posts.csv again, `on_conflict=update` (all unchanged)",
        "posts_reimport_changed": "posts, every title changed, `on_conflict=update`",
        "posts_naive": f"posts, naive ORM ({s['naive_rows']:,} rows)",
        "posts_naive_commit_each": f"posts, naive ORM committing every row "
        f"({s['naive_commit_rows']:,} rows)",
        "posts_copy_minus_triggers": "posts `\\copy`, same table without its triggers",
        "posts_copy_minus_gin": "… and without the GIN index",
        "posts_copy_minus_tsvector": "… and without the generated tsvector",
        "posts_copy_minus_fk": "… and without the foreign key",
        "plain_pinned": f"{s['plain_users']} users, plain passwords, server on 1 core",
        "plain_unpinned": f"{s['plain_users']} users, plain passwords, server unpinned",
    }
    run_rows = [
        [
            label,
            f"{med[key]['seconds']:.2f}",
            f"{med[key]['rows_per_sec']:,.0f}",
            per_round(key),
            f"{med[key]['server_cpu_pct']:.0f} / {med[key]['postgres_cpu_pct']:.0f}"
            f" / {med[key]['client_cpu_pct']:.0f}",
            f"{med[key]['other_cpu_pct']:.0f}",
        ]
        for key, label in labels.items()
        if key in med
    ]
    bd = data["breakdown"]
    phase_names = (
        "copy_to_staging",
        "checks",
        "merge",
        "create_staging",
        "count_discard_drop",
        "commit",
        "other",
    )
    bd_rows = []
    for key in ("users_app", "posts_app", "posts_reimport_same", "posts_reimport_changed"):
        b = bd[key]
        bd_rows.append(
            [
                labels[key].split(" →")[0].split(",")[0] if key.endswith("_app") else key,
                f"{b['wall_ms'] / 1e3:.2f}",
                *(f"{b['phases_ms'].get(p, 0.0) / 1e3:.2f}" for p in phase_names),
                f"{b['outside_sql_ms'] / 1e3:.2f}",
            ]
        )
    for key in ("users_copy", "posts_copy"):
        b = bd[key]
        copy_ms = b["phases_ms"].get("copy_to_staging", 0.0)  # the \copy's COPY statement
        bd_rows.append(
            [
                key,
                f"{b['wall_ms'] / 1e3:.2f}",
                f"{copy_ms / 1e3:.2f} (COPY)",
                *([""] * (len(phase_names) - 1)),
                f"{max(0.0, b['wall_ms'] - b['sql_ms']) / 1e3:.2f}",
            ]
        )
    hz = data["hasher"]
    p = hz["params"]
    d = data["data"]
    warn = ""
    if data["noisy"]:
        noisy = [
            f"{key} round {i} ({r['cpu']['other_pct']:.0f}%)"
            for key, runs in rounds.items()
            for i, r in enumerate(runs, 1)
            if r["cpu"]["other_pct"] >= h.NOISY_OTHER_CPU_PCT
        ]
        warn = (
            f"**Warning: other processes used ≥ {h.NOISY_OTHER_CPU_PCT:.0f}% of a core during "
            f"{len(noisy)} timed step(s): {', '.join(noisy)}. Check that those rounds' figures "
            "agree with the others (the medians), or re-run.**"
        )
    lines = [
        f"### Bulk imports ({data['timestamp']}, {data['commit'][:12]})",
        "",
        f"Files: {d['users']:,} users ({d['file_bytes']['users_csv'] / 1e6:.1f} MB CSV, one "
        f"shared argon2id hash `{d['shared_hash_params']}`), {d['posts']:,} posts "
        f"({d['file_bytes']['posts_csv'] / 1e6:.1f} MB CSV, avg content "
        f"{d['avg_content_chars']} chars, Faker text as `keel seed` makes it, authors by "
        f"`author_username`). After one import: app.posts {d['posts_table_after_import']}, "
        f"app.users {d['users_table_after_import']}. PostgreSQL {d['pg_version']} (embedded, "
        "not pinned); the server runs with `WORKER_ENABLED=false` (no embedding of the "
        "imported posts in the background: the insert trigger still queues their jobs).",
        "",
        h.markdown_table(["figure", "value", "target", ""], fig_rows),
        "",
        h.markdown_table(
            [
                "step",
                "median s",
                "median rows/s",
                "rows/s per round",
                "CPU % server / pg / client",
                "other CPU %",
            ],
            run_rows,
        ),
        "",
        f"{s['rounds']} rounds, each from the same state (only the admin, no posts), medians. "
        "App: one uvicorn worker pinned to CPU "
        f"{h.SERVER_CPU}, the file streamed from disk by httpx (`Content-Length`, 1 MiB chunks), "
        "`on_conflict=error`, `atomic=true`; the request timed end to end (parse, validate, "
        "COPY into a temp staging table, checks, MERGE, commit). `psql \\copy` (psql pinned to "
        f"CPU {h.SERVER_CPU}): the same final rows (ids, hashes, author ids, created_at) into "
        "an empty table built `LIKE ... INCLUDING ALL` (same indexes, generated tsvector, "
        "check constraints; plus app.posts' FK to app.users and the tables' triggers, which LIKE "
        "does not copy). Naive: "
        "`session.add(obj); await session.flush()` per row in one transaction, commit at the "
        "end, rows already parsed (no validation, no author lookups: a lower bound on the naive "
        f"cost), extrapolated: 100k posts ≈ {f['naive_posts_100k_seconds'] / 60:.1f} min, "
        f"100k users ≈ {f['naive_users_100k_seconds'] / 60:.1f} min. Before each step: "
        "VACUUM (ANALYZE), CHECKPOINT, idle machine.",
        "",
        'Where the time goes (seconds; SQL from pg_stat_statements, medians; "outside SQL" '
        "is the wall time minus all top-level SQL: HTTP, CSV parsing, validation, building "
        "the COPY records, waiting between statements):",
        "",
        h.markdown_table(["step", "wall", *phase_names, "outside SQL"], bd_rows),
        "",
        composition(f),
        "",
        TRIGGER_NOTE if s.get("fresh_server") else "",
        "",
        f"Plain passwords (argon2id m={p['memory_kib']} KiB, t={p['time_cost']}, "
        f"p={p['parallelism']}; stored `{d['plain_hash_params']}`): "
        f"{f['plain_pinned_ms_per_row']:.1f} ms/row with the server on one core "
        f"({hz['hash_workers']} hash threads sharing it), "
        f"{f['plain_unpinned_ms_per_row']:.1f} ms/row unpinned; 100k rows ≈ "
        f"{f['plain_pinned_100k_minutes']:.0f} / {f['plain_unpinned_100k_minutes']:.0f} min. "
        f"One `hash_sync` in-process on one core: {f['raw_hash_ms']:.1f} ms.",
        "",
        warn,
    ]
    if data["others_seen"]:
        lines.append(f"Other benchmarks were still running at some point: {data['others_seen']}")
    return "\n".join(lines).rstrip()


TRIGGER_NOTE = (
    "**Found by this benchmark:** on a server that has been running, the re-import that "
    "changes every title fails after 10 min (statement timeout, HTTP 500). The AFTER UPDATE "
    "trigger `app.queue_post_embeddings()` joins its transition tables in a static PL/pgSQL "
    "statement whose plan is cached per connection from its first call; after a call with "
    "0 rows (the identical re-import) that plan is a Nested Loop, quadratic in the rows "
    "updated. So that step runs on a freshly started server each round (`--no-fresh-server` "
    "to see the failure); running the statement with `EXECUTE` (planned per call) fixes it."
)


def composition(f: Mapping[str, Any]) -> str:
    """One sentence: what a posts row costs PostgreSQL in the \\copy, piece by piece."""
    parts = f.get("posts_copy_us_per_row")
    if not parts:
        return ""
    return (
        f"The posts `\\copy` costs {parts['total']:.0f} µs/row: the triggers (statement-level: "
        f"transition table, queued embedding jobs) {parts['triggers']:.0f}, the GIN index "
        f"{parts['gin_index']:.0f}, the generated tsvector {parts['tsvector']:.0f}, the foreign "
        f"key {parts['foreign_key']:.0f}, the rest (heap, TOAST, 3 b-tree indexes, WAL, parsing) "
        f"{parts['rest']:.0f} (each from a `\\copy` into the same table with one more piece "
        "taken away; medians)."
    )


def summary_line(data: Mapping[str, Any]) -> str:
    f = data["figures"]
    return (
        f"posts app÷copy {f['posts_vs_copy']:.2f}, users app÷copy {f['users_vs_copy']:.2f}, "
        f"posts app÷naive {f['posts_vs_naive']:.1f}×, users app÷naive {f['users_vs_naive']:.1f}×, "
        f"re-import same {f['reimport_same_vs_first']:.2f} / changed "
        f"{f['reimport_changed_vs_first']:.2f} of the first import's time"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--naive-rows", type=int, default=10_000)
    parser.add_argument(
        "--naive-commit-rows",
        type=int,
        default=2_000,
        help="rows for the naive variant that commits every row (0: skip it)",
    )
    parser.add_argument(
        "--copy-breakdown",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also \\copy posts without the GIN index / the tsvector / the FK",
    )
    parser.add_argument(
        "--fresh-server",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="restart the server before the changed-titles re-import (see the note above TARGETS)",
    )
    parser.add_argument("--plain-users", type=int, default=500)
    parser.add_argument("--hash-repeats", type=int, default=10, help="raw hasher calls")
    parser.add_argument("--seed", type=int, default=1, help="data generator seed")
    parser.add_argument("--ndjson", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--cli", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="before each step, wait up to this many seconds for other processes to go idle",
    )
    parser.add_argument(
        "--ref", default=None, help="serve src/ as committed at this git ref (e.g. HEAD)"
    )
    x.add_extra_args(parser)
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite results/imports.md from results/imports.json, measure nothing",
    )
    parser.add_argument("--child", choices=("prepare", "naive"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(sys.stdin.read())
        children: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
            "prepare": child_prepare,
            "naive": child_naive,
        }
        print(json.dumps(children[args.child](spec)))
        return 0
    if args.render_only:
        data = json.loads((h.RESULTS_DIR / f"{NAME}.json").read_text())
        markdown = render(data)
        (h.RESULTS_DIR / f"{NAME}.md").write_text(markdown.rstrip() + "\n")
        print(markdown)
        return 0
    data = run(args)
    markdown = render(data)
    h.write_results(NAME, data, markdown)
    print(markdown)
    print(summary_line(data), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
