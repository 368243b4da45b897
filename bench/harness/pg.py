"""One embedded PostgreSQL per run, psql, pg_stat_statements and pgbench."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from uuid import UUID

from bench.harness.base import BenchError
from bench.harness.noise import CpuSplit, cpu_split
from keel.core.embedded import PORT, EmbeddedPostgres, bin_path


@contextlib.contextmanager
def embedded_cluster() -> Iterator[EmbeddedPostgres]:
    """A throwaway embedded PostgreSQL for the whole run (in a temp dir, stopped at the end).

    Its DATABASE_URL is `.url`; `.psql_argv()`, `.socket_dir` and `.pgdata` serve psql,
    pgbench and telling its processes apart from the rest of the machine.
    """
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        try:
            pg.ensure_running()
            yield pg
        finally:
            pg.stop()


def conn_args(pg: EmbeddedPostgres, user: str = "postgres") -> list[str]:
    """libpq command-line options (psql, pgbench) for the embedded server's socket."""
    return ["-h", str(pg.socket_dir), "-p", str(PORT), "-U", user]


def psql(
    pg: EmbeddedPostgres, sql: str, *, pgoptions: str | None = None, user: str | None = None
) -> str:
    """Run SQL (several statements allowed) with psql -XAtq; its output, tuples only."""
    env = {**os.environ, "PGOPTIONS": pgoptions} if pgoptions else None
    as_user = ["-U", user] if user else []  # the last -U wins
    argv = [*pg.psql_argv(), *as_user, "-XAtq", "-v", "ON_ERROR_STOP=1", "-f", "-"]
    proc = subprocess.run(argv, input=sql, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise BenchError(f"psql failed: {proc.stderr.strip()}\n--- SQL ---\n{sql[:2000]}")
    return proc.stdout.rstrip("\n")


def quote_literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def sql_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return quote_literal(str(value))


def explain(
    pg: EmbeddedPostgres, sql: str, *, analyze: bool = True, pgoptions: str | None = None
) -> str:
    opts = "ANALYZE, BUFFERS, SETTINGS" if analyze else "GENERIC_PLAN"
    return psql(pg, f"EXPLAIN ({opts}) {sql};", pgoptions=pgoptions)


def explain_prepared(
    pg: EmbeddedPostgres, statement: Mapping[str, Any], *, analyze: bool = True
) -> str:
    """EXPLAIN a read-path statement ($n parameters, `{"sql": ..., "args": [...]}`):
    executed with its arguments, or its generic plan (what a prepared statement settles
    on after five runs)."""
    if not analyze:
        return explain(pg, statement["sql"], analyze=False)
    args = ", ".join(sql_literal(a) for a in statement["args"])
    return psql(
        pg,
        f"PREPARE bench_read AS {statement['sql']};\n"
        f"EXPLAIN (ANALYZE, BUFFERS, SETTINGS) EXECUTE bench_read({args});",
    )


def postmaster_pid(pg: EmbeddedPostgres | None) -> int | None:
    if pg is None:
        return None
    try:
        return int((pg.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def pgss_reset(pg: EmbeddedPostgres) -> None:
    psql(pg, "SELECT pg_stat_statements_reset();")


def pgss_top(pg: EmbeddedPostgres, limit: int = 6) -> list[dict[str, Any]]:
    """The statements that took the most time since the last reset (this database only)."""
    sql = f"""
        SELECT calls, round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 3),
               rows, shared_blks_hit + shared_blks_read,
               regexp_replace(left(query, 200), '\\s+', ' ', 'g')
        FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND query NOT ILIKE '%pg_stat_statements%'
        ORDER BY total_exec_time DESC LIMIT {int(limit)};
    """  # noqa: S608 - limit is an int
    rows = []
    for line in psql(pg, sql).splitlines():
        calls, total, mean, nrows, blocks, query = line.split("|", 5)
        rows.append(
            {
                "calls": int(calls),
                "total_ms": float(total),
                "mean_ms": float(mean),
                "rows": int(nrows),
                "shared_blocks": int(blocks),
                "query": query,
            }
        )
    return rows


def pgss_calls(pg: EmbeddedPostgres) -> int:
    """Statements executed since the last reset (this database), the stats query excluded."""
    return int(
        psql(
            pg,
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE dbid = (SELECT oid "
            "FROM pg_database WHERE datname = current_database()) "
            "AND query NOT ILIKE '%pg_stat_statements%';",
        )
    )


# --- pgbench ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PgbenchResult:
    tps: float
    transactions: int
    failed: int
    latency_avg_ms: float
    # script file name -> {"transactions", "tps", "latency_avg_ms"}
    per_script: dict[str, dict[str, float]]
    cpu: CpuSplit | None = None


def parse_pgbench(output: str) -> PgbenchResult:
    def num(pattern: str, text: str = output) -> float:
        match = re.search(pattern, text, re.MULTILINE)
        if match is None:
            raise BenchError(f"pgbench output lacks /{pattern}/:\n{output}")
        return float(match[1])

    per_script: dict[str, dict[str, float]] = {}
    blocks = re.split(r"^SQL script \d+: ", output, flags=re.MULTILINE)[1:]
    for block in blocks:
        name = Path(block.split("\n", 1)[0].strip()).name
        stats = {
            "transactions": num(r"^ - (\d+) transactions", block),
            "tps": num(r"tps = ([0-9.]+)\)", block),
        }
        lat = re.search(r"^ - latency average = ([0-9.]+) ms", block, re.MULTILINE)
        if lat is not None:
            stats["latency_avg_ms"] = float(lat[1])
        per_script[name] = stats
    failed = re.search(r"^number of failed transactions: (\d+)", output, re.MULTILINE)
    return PgbenchResult(
        tps=num(r"^tps = ([0-9.]+)"),
        transactions=int(num(r"^number of transactions actually processed: (\d+)")),
        failed=int(failed[1]) if failed else 0,
        latency_avg_ms=num(r"^latency average = ([0-9.]+) ms"),
        per_script=per_script,
    )


def pgbench_argv(
    pg: EmbeddedPostgres,
    scripts: Sequence[Path],
    *,
    duration: int,
    clients: int,
    threads: int,
    user: str = "postgres",
    prepared: bool = False,
) -> list[str]:
    argv = [str(bin_path("pgbench")), *conn_args(pg, user), "-n", "-T", str(duration)]
    if prepared:
        argv += ["-M", "prepared"]
    argv += ["-c", str(clients), "-j", str(threads)]
    for script in scripts:
        argv += ["-f", f"{script}@1"]
    return [*argv, pg.database]


def run_pgbench(
    pg: EmbeddedPostgres,
    scripts: Sequence[Path],
    *,
    duration: int,
    clients: int,
    threads: int,
    pgoptions: str | None = None,
    user: str = "postgres",
    prepared: bool = False,
) -> tuple[PgbenchResult, str]:
    """pgbench -n -T duration -c clients -j threads -f s1@1 -f s2@1 ...; parsed, and raw output.

    With several scripts, each transaction runs one of them picked at random (equal weights).
    """
    env = {**os.environ, "PGOPTIONS": pgoptions} if pgoptions else None
    argv = pgbench_argv(
        pg,
        scripts,
        duration=duration,
        clients=clients,
        threads=threads,
        user=user,
        prepared=prepared,
    )
    with cpu_split(postmaster=postmaster_pid(pg)) as cpu:
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=duration + 120, check=False
        )
    if proc.returncode != 0:
        raise BenchError(f"pgbench failed (exit {proc.returncode}): {proc.stderr}{proc.stdout}")
    result = parse_pgbench(proc.stdout)
    if result.failed:
        raise BenchError(f"pgbench: {result.failed} failed transactions\n{proc.stdout}")
    return replace(result, cpu=cpu()), proc.stdout


def drop_queued_jobs(pg: EmbeddedPostgres) -> int:
    """Delete the jobs waiting in Keel's queue (e.g. embedding jobs queued by seeding).

    A job worker then idles as on a server in steady state, instead of embedding a
    backlog under the benchmark's load.
    """
    out = psql(
        pg,
        "SELECT CASE WHEN to_regclass('app.jobs') IS NULL THEN 0 ELSE 1 END;",
    )
    if out != "1":
        return 0
    return int(psql(pg, "WITH d AS (DELETE FROM app.jobs RETURNING 1) SELECT count(*) FROM d;"))


@dataclass(frozen=True)
class ReadFixture:
    """What the read scenarios need after seeding: a user to sign in as, published post ids
    in their organization (their personal one: its id is theirs)."""

    username: str
    user_id: str
    post_ids: list[str]
    dropped_queued_jobs: int

    @property
    def org_id(self) -> str:
        return self.user_id

    @property
    def posts_path(self) -> str:
        """`/api/v1/orgs/<org>/posts`: the reader's organization's posts."""
        return f"/api/v1/orgs/{self.org_id}/posts"


def read_fixture(pg: EmbeddedPostgres, ids: int, *, own_posts: bool = False) -> ReadFixture:
    """Drop the seed's queued embedding jobs, pick the reader, give their organization
    `ids` random published posts (the seed spreads posts over every personal
    organization), vacuum.

    With `own_posts`, nothing moves: the reader is the active user with the most published
    posts, and the posts are up to `ids` of theirs (already in their personal
    organization). That SQL reads the same before and after posts had a tenant, so it
    also serves a database of an older Keel (`tenant_read`).
    """
    dropped = drop_queued_jobs(pg)
    order = "u.username"
    if own_posts:
        published = "SELECT count(*) FROM app.posts p WHERE p.author_id = u.id AND p.is_published"
        order = f"({published}) DESC, u.username"
    viewer = psql(
        pg,
        "SELECT u.username || '|' || u.id FROM app.users u "  # noqa: S608 - constant SQL
        f"WHERE u.is_active AND NOT u.is_superuser ORDER BY {order} LIMIT 1;",
    )
    if "|" not in viewer:
        raise BenchError("no seeded user to sign in as")
    username, user_id = viewer.split("|")
    mine = f"""
        SELECT id FROM app.posts WHERE is_published AND author_id = '{UUID(user_id)}'
        ORDER BY md5(id::text) LIMIT {int(ids)};
    """  # noqa: S608 - an int and a parsed UUID
    moved = f"""
        WITH picked AS (
            SELECT tenant_id, id FROM app.posts WHERE is_published
            ORDER BY md5(id::text) LIMIT {int(ids)}
        ), unembedded AS (
            DELETE FROM app.post_embeddings e USING picked p
            WHERE (e.tenant_id, e.post_id) = (p.tenant_id, p.id)
        )
        UPDATE app.posts p SET tenant_id = '{UUID(user_id)}'
        FROM picked WHERE (p.tenant_id, p.id) = (picked.tenant_id, picked.id)
        RETURNING p.id;
    """  # noqa: S608 - an int and a parsed UUID
    post_ids = psql(pg, mine if own_posts else moved).splitlines()
    if not post_ids:
        raise BenchError("no published posts")
    psql(pg, "VACUUM (ANALYZE); CHECKPOINT;")
    return ReadFixture(username, user_id, post_ids, dropped)
