"""The imports scenario's timed steps: HTTP imports, `psql \\copy`, the CLI, the naive ORM."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.harness.base import API, SERVER_CPU, BenchError, median, say
from bench.harness.keel_api import LOGIN
from bench.harness.noise import CpuSplit, cpu_split, settle
from bench.harness.pg import pgss_reset, postmaster_pid, psql
from bench.harness.proc import child_env, pinned, run_child, set_affinity
from bench.harness.server import Server, stop_server
from bench.scenarios.imports.data import (
    POST_COPY_COLUMNS,
    USER_APP_COLUMNS,
    USER_COPY_COLUMNS,
    Data,
    write_csv,
)
from bench.scenarios.imports.db import (
    COPY_VARIANTS,
    count_rows,
    create_copy_table,
    empty_posts,
    pgss_phases,
    reset,
    table_size,
    user_ids,
)
from keel.core.embedded import EmbeddedPostgres

IMPORT = f"{API}/admin/import"
ADMIN_EMAIL, ADMIN_USERNAME = "bench.admin@example.com", "bench.admin"
ADMIN_PASSWORD = "bench-admin-password"  # noqa: S105 - a throwaway benchmark account
CONTENT_TYPES = {"csv": "text/csv", "ndjson": "application/x-ndjson"}
CHUNK = 1 << 20


@dataclass
class Run:
    """One timed step."""

    seconds: float
    rows: int
    cpu: CpuSplit
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
    server: Server,
    pg: EmbeddedPostgres,
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
    pgss_reset(pg)
    with (
        httpx.Client(base_url=server.url(), timeout=httpx.Timeout(1800.0)) as client,
        cpu_split((server.pid,), postmaster_pid(pg)) as cpu,
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
        raise BenchError(
            f"import {kind} {path.name}: {reply.status_code} {reply.text[:1500]}\n"
            f"--- tail of the server log ---\n" + "\n".join(log)
        )
    report = reply.json()
    got = {k: report[k] for k in expect}
    if got != dict(expect) or report["rejected_count"] or not report["committed"]:
        raise BenchError(f"import {kind} {path.name}: expected {dict(expect)}, got {report}")
    return Run(seconds, report["rows"], cpu(), report, pgss_phases(pg))


def psql_copy(
    pg: EmbeddedPostgres, table: str, columns: Sequence[str], path: Path, expect: int
) -> Run:
    """`psql \\copy table (columns) FROM path (FORMAT csv, HEADER)`, psql on the server's core."""
    command = f"\\copy {table} ({', '.join(columns)}) FROM '{path}' WITH (FORMAT csv, HEADER true)"
    argv = pinned(SERVER_CPU, [*pg.psql_argv(), "-XAtq", "-v", "ON_ERROR_STOP=1"])
    pgss_reset(pg)
    with cpu_split((), postmaster_pid(pg)) as cpu:
        t0 = time.perf_counter()
        proc = subprocess.run([*argv, "-c", command], capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(f"psql \\copy into {table} failed: {proc.stderr.strip()}")
    rows = count_rows(pg, table)
    if rows != expect:
        raise BenchError(f"psql \\copy into {table}: {rows} rows, expected {expect}")
    return Run(seconds, rows, cpu(), {}, pgss_phases(pg))


def cli_import(
    pg: EmbeddedPostgres,
    src: Path | None,
    server_env: Mapping[str, str],
    kind: str,
    path: Path,
    expect: int,
) -> Run:
    """`python -m keel import KIND FILE` as a subprocess pinned to the server's core."""
    env = child_env(src, {**server_env, "COLUMNS": "160"})
    argv = pinned(SERVER_CPU, [sys.executable, "-m", "keel", "import", kind, str(path)])
    pgss_reset(pg)
    with cpu_split((), postmaster_pid(pg)) as cpu:
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(f"keel import {kind} failed ({proc.returncode}):\n{proc.stdout}")
    rows = count_rows(pg, f"app.{kind}")
    if rows != expect:
        raise BenchError(f"keel import {kind}: {rows} rows, expected {expect}")
    return Run(seconds, rows, cpu(), {}, pgss_phases(pg))


def cli_startup(src: Path | None, server_env: Mapping[str, str]) -> float:
    """Seconds for `python -m keel import posts --help`: the CLI's fixed start-up cost."""
    env = child_env(src, server_env)
    argv = pinned(SERVER_CPU, [sys.executable, "-m", "keel", "import", "posts", "--help"])
    samples = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)
        samples.append(time.perf_counter() - t0)
    return median(samples)


def naive(
    pg: EmbeddedPostgres,
    src: Path | None,
    server_env: Mapping[str, str],
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
    with cpu_split((), postmaster_pid(pg)) as cpu:
        out = run_child(
            "bench.scenarios.imports.data:child_naive",
            spec,
            src=src,
            cpu=SERVER_CPU,
            env=server_env,
        )
    added = count_rows(pg, f"app.{kind}") - before
    if added != len(rows):
        raise BenchError(f"naive {kind}: {added} rows landed, expected {len(rows)}")
    return Run(out["seconds"], out["rows"], cpu())


def log_run(label: str, run: Run) -> None:
    say(
        f"{label:>34}: {run.rows:>7,} rows {run.seconds:>7.2f} s {run.rows_per_sec:>9,.0f} rows/s"
        f"  CPU server {run.cpu.server_pct:.0f}% pg {run.cpu.postgres_pct:.0f}%"
        f" client {run.cpu.client_pct:.0f}% other {run.cpu.other_pct:.0f}%"
    )


def login(server: Server) -> str:
    with httpx.Client(base_url=server.url(), timeout=60) as client:
        reply = client.post(LOGIN, data={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD})
    if reply.status_code != 200:
        raise BenchError(f"admin login answered {reply.status_code}: {reply.text[:300]}")
    return str(reply.json()["access_token"])


@dataclass
class Bench:
    """What every timed step needs: the server, the database, the files, the results."""

    args: argparse.Namespace
    pg: EmbeddedPostgres
    src: Path | None
    env: Mapping[str, str]  # the server's, also given to the CLI and the naive child
    server: Server
    token: str
    admin_id: str
    data: Data
    workdir: Path
    start_server: Callable[[], Server]
    runs: dict[str, list[Run]] = field(default_factory=dict)
    others: list[str] = field(default_factory=list)
    structure: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, str] = field(default_factory=dict)

    def step(self, key: str, round_no: int, measure: Callable[[], Run]) -> Run:
        """Settle, then measure one step and keep the result."""
        # Nothing left for autovacuum or the checkpointer, no other benchmark, a quiet box.
        psql(self.pg, "VACUUM (ANALYZE); CHECKPOINT;")
        self.others += settle(self.args.quiet_wait, self.args.other_wait)
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
        """A fresh server process, so fresh database connections (see TRIGGER_NOTE)."""
        stop_server(self.server)
        self.server = self.start_server()

    def round(self, r: int) -> None:
        """One round of every variant, each from the state it needs."""
        pg, data, f, wd = self.pg, self.data, self.data.files, self.workdir
        n_users, n_posts = len(data.users), len(data.posts)
        n = min(self.args.naive_rows, n_users, n_posts)
        reset(pg, self.admin_id)
        # 1. users: naive ORM, app, \copy; each into a users table holding only the admin
        naive_users = [{k: u[k] for k in USER_APP_COLUMNS} for u in data.users[:n]]
        self.step("users_naive", r, lambda: naive(pg, self.src, self.env, "users", naive_users, wd))
        reset(pg, self.admin_id)
        if nc := min(self.args.naive_commit_rows, n):
            few = naive_users[:nc]
            self.step(
                "users_naive_commit_each",
                r,
                lambda: naive(pg, self.src, self.env, "users", few, wd, commit_each=True),
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
        psql(pg, "DROP TABLE public.bench_users;")
        # 2. posts: naive ORM, app, \copy; each into an empty posts table, 100k users there
        ids = user_ids(pg)
        final = [{**p, "author_id": ids[p["author_username"]]} for p in data.posts]
        copy_posts = write_csv(wd / "posts_copy.csv", POST_COPY_COLUMNS, final)
        naive_posts = [{k: p[k] for k in POST_COPY_COLUMNS} for p in final[:n]]
        self.step("posts_naive", r, lambda: naive(pg, self.src, self.env, "posts", naive_posts, wd))
        empty_posts(pg)
        if nc := min(self.args.naive_commit_rows, n):
            few_posts = naive_posts[:nc]
            self.step(
                "posts_naive_commit_each",
                r,
                lambda: naive(pg, self.src, self.env, "posts", few_posts, wd, commit_each=True),
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
        psql(pg, "DROP TABLE public.bench_posts;")
        if self.args.copy_breakdown:  # what the \copy's time is made of
            for key, strip in COPY_VARIANTS.items():
                create_copy_table(pg, "posts")
                psql(pg, strip)
                self.step(
                    key,
                    r,
                    lambda: psql_copy(
                        pg, "public.bench_posts", POST_COPY_COLUMNS, copy_posts, n_posts
                    ),
                )
                psql(pg, "DROP TABLE public.bench_posts;")
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
            self.step(
                "posts_cli",
                r,
                lambda: cli_import(pg, self.src, self.env, "posts", posts_csv, n_posts),
            )
        if self.args.ndjson:
            reset(pg, self.admin_id)
            ndjson = self.http("users", "users_ndjson", "error", inserted=n_users)
            self.step("users_app_ndjson", r, ndjson)

    def plain_passwords(self, r: int) -> None:
        """Plain passwords hashed by the import: the server on one core, then on all."""
        every_cpu = f"0-{(os.cpu_count() or 1) - 1}"
        n = self.args.plain_users
        for key, cpus in (("plain_pinned", None), ("plain_unpinned", every_cpu)):
            psql(self.pg, "DELETE FROM app.users WHERE username LIKE 'plain.user.%';")
            if cpus:
                set_affinity(self.server.proc.pid, cpus)
            try:
                self.step(key, r, self.http("users", "plain_csv", "error", inserted=n))
            finally:
                set_affinity(self.server.proc.pid, str(SERVER_CPU))
