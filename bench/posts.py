"""Posts and full-text search on 100k seeded posts: GIN vs seq scan, reads, keyset vs offset.

    uv run python bench/posts.py [--duration 10] [--connections 64] [--threads 2] [--rounds 3]
                                 [--users 5000] [--posts 100000] [--seed 1]
                                 [--pgbench-duration 10] [--pgbench-clients 2]

One embedded PostgreSQL, seeded with `keel.seed` (fixed seed), then VACUUM ANALYZE.

1. Search, SQL level (pgbench, no HTTP): the app's search SQL (compiled from
   keel.search.repository.search_posts) for a few queries drawn from the seeded text, with
   the GIN index vs forced to a sequential scan (PGOPTIONS="-c enable_bitmapscan=off
   -c enable_indexscan=off"). Headline: QPS ratio of the ranked query (target >= 20).
2. `GET /api/v1/posts/{id}` (random published ids, wrk + Lua) ÷ `GET /health`, same server
   (target >= 0.5).
3. `GET /api/v1/posts?limit=20`: page 500 by keyset cursor ÷ first page (target >= 0.8),
   and page 500 by offset (offset=9980) ÷ first page next to it.

Servers run with RATE_LIMIT_ENABLED=false and ACCESS_TOKEN_MINUTES=120.
Results go to bench/results/posts.{json,md}; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import httpx

import _extra as x
import _harness as h

NAME = "posts"
APP = "keel.app:create_app"
HEALTH = "/health"
POSTS = f"{x.API}/posts"
LOGIN = f"{x.API}/auth/login"
SEARCH_CONFIG = "english"
SEEDED_PASSWORD = "seeded-password"  # noqa: S105 - keel.seed.SEEDED_PASSWORD, checked below
TARGETS = {"search_gin_vs_seq": 20.0, "post_by_id_vs_health": 0.5, "keyset_p500_vs_first": 0.8}
SEQ_OPTIONS = "-c enable_bitmapscan=off -c enable_indexscan=off"
GIN_INDEX, KEYSET_INDEX = "ix_posts_search", "ix_posts_created_at_id"


# --- child process: migrate + seed, and the app's SQL, with the served source tree ----------
# Run in a child so that with --ref the snapshot's keel (PYTHONPATH) is the one used.


def child_prepare(spec: Mapping[str, Any]) -> dict[str, Any]:
    from keel.config import Settings
    from keel.core.passwords import PasswordHasher
    from keel.migrations import runner
    from keel.seed import SEEDED_PASSWORD as PW
    from keel.seed import seed

    if PW != SEEDED_PASSWORD:
        raise h.BenchError(f"keel.seed.SEEDED_PASSWORD changed to {PW!r}: update bench/posts.py")
    runner.upgrade(spec["url"])
    report = asyncio.run(
        seed(
            spec["url"],
            passwords=PasswordHasher.from_settings(Settings()),
            users=spec["users"],
            posts=spec["posts"],
            seed=spec["seed"],
        )
    )
    return {
        "seed": report.seed,
        "users": report.users,
        "posts": report.posts,
        "users_seconds": round(report.users_seconds, 1),
        "posts_seconds": round(report.posts_seconds, 1),
        "total_seconds": round(report.total_seconds, 1),
    }


class _Empty:
    def unique(self) -> _Empty:
        return self

    def all(self) -> list[Any]:
        return []

    def first(self) -> None:
        return None


class _Capture:
    """A stand-in AsyncSession that records the statement the repository builds."""

    def __init__(self) -> None:
        self.statement: Any = None

    async def execute(self, statement: Any) -> _Empty:
        self.statement = statement
        return _Empty()

    async def scalars(self, statement: Any) -> _Empty:
        self.statement = statement
        return _Empty()


def child_sql(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The SQL the app runs, compiled from its repository code: literal and parameterised."""
    from types import SimpleNamespace
    from uuid import UUID

    from sqlalchemy.dialects import postgresql
    from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
    from sqlalchemy.sql.selectable import Subquery

    from keel.core.pagination import CursorCodec
    from keel.posts import repository as posts_repo
    from keel.search import repository as search_repo

    literal = postgresql.dialect()  # type: ignore[no-untyped-call]
    asyncpg = PGDialect_asyncpg()  # type: ignore[no-untyped-call]

    def sql(statement: Any) -> str:
        return str(statement.compile(dialect=literal, compile_kwargs={"literal_binds": True}))

    def capture(coro_fn: Any, *a: Any, **kw: Any) -> Any:
        session = _Capture()
        asyncio.run(coro_fn(session, *a, **kw))
        return session.statement

    def inner_select(statement: Any) -> Any:
        stack = list(statement.get_final_froms())
        while stack:
            node = stack.pop()
            if isinstance(node, Subquery):
                return node.element
            kids = (getattr(node, "left", None), getattr(node, "right", None))
            stack += [c for c in kids if c is not None]
        raise h.BenchError("no ranked subquery in the search statement: update bench/posts.py")

    viewer = SimpleNamespace(id=UUID(spec["viewer_id"]), is_superuser=False)
    full, ranked = [], []
    for q in spec["queries"]:
        stmt = capture(
            search_repo.search_posts, viewer, q, config=SEARCH_CONFIG, limit=20, offset=0
        )
        full.append(sql(stmt))
        ranked.append(sql(inner_select(stmt)))
    codec = CursorCodec(spec["secret"], purpose="posts")
    after = codec.decode(spec["cursor"])
    filters = posts_repo.PostFilters()
    limit = spec["limit"] + 1  # as the router asks for one more to know if there is a next page
    first = capture(posts_repo.list_visible, viewer, filters, limit=limit)
    keyset = capture(posts_repo.list_visible, viewer, filters, limit=limit, after=after)
    offset = capture(posts_repo.list_visible, viewer, filters, limit=limit, offset=spec["offset"])
    by_id = capture(posts_repo.get_visible, UUID(spec["post_id"]), viewer)
    return {
        "search_full": full,
        "search_ranked": ranked,
        "list_first": sql(first),
        "list_keyset": sql(keyset),
        "list_offset": sql(offset),
        "get_post": sql(by_id),
        "list_keyset_param": str(keyset.compile(dialect=asyncpg)),
        "list_offset_param": str(offset.compile(dialect=asyncpg)),
        "cursor_position": [after[0].isoformat(), str(after[1])],
    }


def run_child(mode: str, spec: Mapping[str, Any], src: Path | None) -> dict[str, Any]:
    env = dict(os.environ)
    paths = [str(src) if src else None, str(h.BENCH_DIR), os.environ.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode],
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


# --- data ---------------------------------------------------------------------------------


def data_facts(pg: Any) -> dict[str, Any]:
    row = x.psql(
        pg,
        """
        SELECT count(*), count(*) FILTER (WHERE is_published),
               (SELECT count(*) FROM app.users),
               round(avg(length(content))), round(avg(pg_column_size(search))),
               pg_size_pretty(pg_table_size('app.posts')),
               pg_size_pretty(pg_relation_size('app.ix_posts_search')),
               pg_size_pretty(pg_relation_size('app.ix_posts_created_at_id'))
        FROM app.posts;
        """,
    ).split("|")
    keys = (
        "posts",
        "published",
        "users",
        "avg_content_chars",
        "avg_search_tsvector_bytes",
        "posts_table_size_incl_toast",
        "ix_posts_search_size",
        "ix_posts_created_at_id_size",
    )
    return {k: (int(v) if v.isdigit() else v) for k, v in zip(keys, row, strict=True)}


def word_stats(pg: Any) -> list[tuple[str, int]]:
    """Every lexeme in app.posts.search with the number of posts holding it, commonest first."""
    out = x.psql(
        pg,
        "SELECT word, ndoc FROM ts_stat('SELECT search FROM app.posts') ORDER BY ndoc DESC, word;",
    )
    return [(w, int(n)) for w, n in (line.split("|") for line in out.splitlines())]


def pick_queries(pg: Any, words: Sequence[tuple[str, int]]) -> list[str]:
    """Queries drawn from the seeded text, reproducibly for a given seed.

    Words are those of median-ish document frequency (the middle half of the lexemes by
    frequency, so neither the handful of very common nor the rarest), in md5 order. The
    phrase is the start of a seeded title. Kinds: 1 word, 2 words, 3 words, "phrase",
    word or word.
    """
    if len(words) < 40:
        raise h.BenchError(f"only {len(words)} distinct lexemes in the seeded posts")
    middle = [w for w, _ in words[len(words) // 4 : 3 * len(words) // 4] if w.isalpha()]
    middle.sort(key=lambda w: hashlib.sha256(w.encode()).hexdigest())
    # Two leading title words that both survive as lexemes, so the tsquery is a real phrase.
    phrase = x.psql(
        pg,
        f"""
        SELECT p FROM (
            SELECT DISTINCT array_to_string((string_to_array(lower(title), ' '))[1:2], ' ') AS p
            FROM app.posts WHERE title ~ '^[A-Za-z]+ [A-Za-z]+ '
        ) s
        WHERE websearch_to_tsquery('{SEARCH_CONFIG}', '"' || p || '"')::text LIKE '%<->%'
        ORDER BY md5(p) LIMIT 1;
        """,  # noqa: S608 - a constant
    )
    return [
        middle[0],
        f"{middle[1]} {middle[2]}",
        f"{middle[3]} {middle[4]} {middle[5]}",
        f'"{phrase}"',
        f"{middle[6]} or {middle[7]}",
    ]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def query_matches(pg: Any, queries: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for q in queries:
        tsq = f"websearch_to_tsquery('{SEARCH_CONFIG}', {_quote(q)})"
        row = x.psql(
            pg,
            f"SELECT {tsq}::text, count(*), count(*) FILTER (WHERE is_published) "  # noqa: S608
            f"FROM app.posts WHERE search @@ {tsq};",
        )
        tsquery, matches, published = row.rsplit("|", 2)
        out.append(
            {"query": q, "tsquery": tsquery, "matches": int(matches), "published": int(published)}
        )
    return out


def explain(pg: Any, sql: str, *, analyze: bool = True, pgoptions: str | None = None) -> str:
    opts = "ANALYZE, BUFFERS, SETTINGS" if analyze else "GENERIC_PLAN"
    return x.psql(pg, f"EXPLAIN ({opts}) {sql};", pgoptions=pgoptions)


# --- part 1: search with pgbench ----------------------------------------------------------


def search_bench(
    pg: Any, statements: Mapping[str, Sequence[str]], args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """For each variant (ranked, full) alternate GIN and seq-scan pgbench runs, args.rounds."""
    scripts: dict[str, list[Path]] = {}
    for variant, sqls in statements.items():
        scripts[variant] = []
        for i, sql in enumerate(sqls, 1):
            path = workdir / f"search_{variant}_q{i}.sql"
            path.write_text(sql.replace("\n", " ") + ";\n")
            scripts[variant].append(path)
    modes = {"gin": None, "seq": SEQ_OPTIONS}
    runs: dict[str, dict[str, list[x.PgbenchResult]]] = {
        v: {m: [] for m in modes} for v in statements
    }
    others: list[str] = []
    for round_no in range(1, args.rounds + 1):
        for variant in statements:
            for mode, pgoptions in modes.items():
                others += x.settle(args)
                result, _ = x.run_pgbench(
                    pg,
                    scripts[variant],
                    duration=args.pgbench_duration,
                    clients=args.pgbench_clients,
                    threads=args.pgbench_threads,
                    pgoptions=pgoptions,
                )
                runs[variant][mode].append(result)
                cpu = result.cpu or x.CpuSplit(0, 0, 0)
                print(
                    f"round {round_no} search {variant:>6} {mode}: {result.tps:>9,.1f} tps"
                    f"  avg {result.latency_avg_ms:.2f} ms  CPU pg {cpu.postgres_pct:.0f}%"
                    f" other {cpu.other_pct:.0f}%",
                    file=sys.stderr,
                )
    summary: dict[str, Any] = {}
    for variant, by_mode in runs.items():
        med = {
            m: {
                "tps": h.median([r.tps for r in rs]),
                "latency_avg_ms": h.median([r.latency_avg_ms for r in rs]),
                "other_cpu_pct": h.median([(r.cpu or x.CpuSplit(0, 0, 0)).other_pct for r in rs]),
                "postgres_cpu_pct": h.median(
                    [(r.cpu or x.CpuSplit(0, 0, 0)).postgres_pct for r in rs]
                ),
            }
            for m, rs in by_mode.items()
        }
        per_query = []
        for path in scripts[variant]:
            lat = {
                m: h.median([r.per_script[path.name].get("latency_avg_ms", 0.0) for r in rs])
                for m, rs in by_mode.items()
            }
            per_query.append(
                {
                    "script": path.name,
                    "gin_latency_ms": lat["gin"],
                    "seq_latency_ms": lat["seq"],
                    "ratio": lat["seq"] / lat["gin"] if lat["gin"] else 0.0,
                }
            )
        summary[variant] = {
            "medians": med,
            "ratio": med["gin"]["tps"] / med["seq"]["tps"],
            "per_query": per_query,
            "rounds": {
                m: [
                    {
                        "tps": r.tps,
                        "transactions": r.transactions,
                        "latency_avg_ms": r.latency_avg_ms,
                        "per_script": r.per_script,
                        "cpu": asdict(r.cpu) if r.cpu else None,
                    }
                    for r in rs
                ]
                for m, rs in by_mode.items()
            },
        }
    summary["others_seen"] = sorted(set(others))
    summary["command"] = " ".join(
        x.pgbench_argv(
            pg,
            [Path(f"search_{{variant}}_q{i}.sql") for i in range(1, 6)],
            duration=args.pgbench_duration,
            clients=args.pgbench_clients,
            threads=args.pgbench_threads,
        )
    ).replace(str(pg.socket_dir), "<socket dir>")
    return summary


# --- part 2 and 3: HTTP -------------------------------------------------------------------


def pick_viewer(pg: Any) -> dict[str, Any]:
    """An active, ordinary seeded user with the median number of posts (a typical reader)."""
    row = x.psql(
        pg,
        """
        SELECT u.username, u.id, count(p.id), count(p.id) FILTER (WHERE NOT p.is_published)
        FROM app.users u LEFT JOIN app.posts p ON p.author_id = u.id
        WHERE u.is_active AND NOT u.is_superuser
        GROUP BY u.id
        ORDER BY count(p.id), u.username
        OFFSET (SELECT count(*) / 2 FROM app.users WHERE is_active AND NOT is_superuser)
        LIMIT 1;
        """,
    )
    username, user_id, posts, drafts = row.split("|")
    return {"username": username, "id": user_id, "posts": int(posts), "drafts": int(drafts)}


def walk_cursor(
    client: httpx.Client, auth: Mapping[str, str], page: int, limit: int
) -> tuple[str, list[str], float]:
    """Follow next_cursor from page 1; the cursor for `page`, its item ids, seconds taken."""
    t0 = time.perf_counter()
    cursor: str | None = None
    items: list[str] = []
    for n in range(1, page + 1):
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        reply = client.get(POSTS, params=params, headers=auth)
        if reply.status_code != 200:
            raise h.BenchError(f"page {n} answered {reply.status_code}: {reply.text[:300]}")
        body = reply.json()
        if n == page:
            items = [item["id"] for item in body["items"]]
            break
        cursor = body["next_cursor"]
        if not cursor:
            raise h.BenchError(f"no next_cursor after page {n}")
    if cursor is None:
        raise h.BenchError("page must be > 1")
    return cursor, items, time.perf_counter() - t0


def page_ids(client: httpx.Client, auth: Mapping[str, str], path: str) -> list[str]:
    reply = client.get(path, headers=auth)
    if reply.status_code != 200:
        raise h.BenchError(f"GET {path} answered {reply.status_code}: {reply.text[:300]}")
    return [item["id"] for item in reply.json()["items"]]


def posts_scan(plan: str) -> str:
    """How a plan reads app.posts: its first scan node on posts (or one of its indexes)."""
    match = re.search(
        r"(Bitmap Index Scan on ix_posts_\w+|Index (?:Only )?Scan(?: Backward)? using \w+ on posts"
        r"|Seq Scan on posts|Parallel Seq Scan on posts)",
        plan,
    )
    return match[1] if match else "?"


def plan_uses(plan: str, index: str) -> bool:
    return f" {index} " in plan or plan.rstrip().endswith(f" {index}")


# --- report -------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render(data: dict[str, Any]) -> str:
    s, f = data["settings"], data["figures"]
    med = data["http"]["medians"]
    srch = data["search"]
    queries = data["search_queries"]

    fig_rows = [
        [
            "search: GIN ÷ forced seq scan (QPS, ranked query)",
            f"{f['search_gin_vs_seq']:.1f}×",
            f"≥ {TARGETS['search_gin_vs_seq']:g}×",
            verdict(f["search_gin_vs_seq"] >= TARGETS["search_gin_vs_seq"]),
        ],
        [
            "search, only the queries whose GIN-mode plan uses the index (from latencies)",
            f"{f['search_gin_vs_seq_index_queries']:.1f}×",
            "(reference)",
            "",
        ],
        [
            "search, full app statement (headlines + author): GIN ÷ seq",
            f"{f['search_full_gin_vs_seq']:.1f}×",
            "(reference)",
            "",
        ],
        [
            "`GET /posts/{id}` ÷ `GET /health` (req/s)",
            f"{f['post_by_id_vs_health']:.3f}",
            f"≥ {TARGETS['post_by_id_vs_health']}",
            verdict(f["post_by_id_vs_health"] >= TARGETS["post_by_id_vs_health"]),
        ],
        [
            f"keyset page {s['page']} ÷ first page (req/s)",
            f"{f['keyset_p500_vs_first']:.3f}",
            f"≥ {TARGETS['keyset_p500_vs_first']}",
            verdict(f["keyset_p500_vs_first"] >= TARGETS["keyset_p500_vs_first"]),
        ],
        [
            f"offset page {s['page']} (`offset={(s['page'] - 1) * s['limit']}`) ÷ first page",
            f"{f['offset_p500_vs_first']:.3f}",
            "(reference)",
            "",
        ],
    ]
    search_rows = []
    for variant in ("ranked", "full"):
        m = srch[variant]["medians"]
        search_rows.append(
            [
                variant,
                f"{m['gin']['tps']:,.1f}",
                f"{m['seq']['tps']:,.1f}",
                f"{m['gin']['latency_avg_ms']:.2f}",
                f"{m['seq']['latency_avg_ms']:.2f}",
                f"{srch[variant]['ratio']:.1f}×",
                f"{m['gin']['other_cpu_pct']:.0f} / {m['seq']['other_cpu_pct']:.0f}",
            ]
        )
    q_rows = []
    for i, q in enumerate(queries):
        pq_r, pq_f = srch["ranked"]["per_query"][i], srch["full"]["per_query"][i]
        q_rows.append(
            [
                f"`{q['query']}`",
                f"`{q['tsquery']}`",
                f"{q['matches']:,} ({q['matches'] / data['data']['posts']:.1%})",
                f"{pq_r['gin_latency_ms']:.2f} / {pq_r['seq_latency_ms']:.2f}",
                f"{pq_r['ratio']:.1f}×",
                f"{pq_f['gin_latency_ms']:.2f} / {pq_f['seq_latency_ms']:.2f}",
                f"{pq_f['ratio']:.1f}×",
                f"{data['plans_ok']['search'][i]['gin_mode_scan']} / "
                f"{data['plans_ok']['search'][i]['seq_mode_scan']}",
            ]
        )
    http_rows = []
    for key, label in data["http"]["labels"].items():
        m = med[key]
        http_rows.append(
            [
                label,
                f"{m['requests_per_sec']:,.0f}",
                " / ".join(f"{r.requests_per_sec:,.0f}" for r in data["http"]["rounds"][key]),
                f"{1e6 / m['requests_per_sec']:.0f}",
                f"{m['p50_ms']:.2f}",
                f"{m['p99_ms']:.2f}",
                f"{m['server_cpu_pct']:.0f} / {m['postgres_cpu_pct']:.0f}",
                f"{m['other_cpu_pct']:.0f}",
                f"{data['http']['main_sql_ms'].get(key, 0):.3f}",
            ]
        )
    noisy = "\n\n".join(w for w in (h.noise_warning(med), search_noise(srch)) if w)
    d, v = data["data"], data["viewer"]
    plans = data["plans"]
    lines = [
        f"### Posts and full-text search ({data['timestamp']}, {data['commit'][:12]})",
        "",
        f"Data: `keel.seed` users={s['users']:,} posts={s['posts']:,} seed={s['seed']} "
        f"({d['published']:,} published; avg content {d['avg_content_chars']} chars, avg "
        f"tsvector {d['avg_search_tsvector_bytes']} B; table {d['posts_table_size_incl_toast']}, "
        f"GIN {d['ix_posts_search_size']}, (created_at, id) index "
        f"{d['ix_posts_created_at_id_size']}), then VACUUM ANALYZE + CHECKPOINT. Viewer: a "
        f"median seeded user ({v['posts']} posts, {v['drafts']} drafts).",
        "",
        h.markdown_table(["figure", "value", "target", ""], fig_rows),
        "",
        "#### 1. Search at the SQL level (pgbench)",
        "",
        h.markdown_table(
            [
                "statement",
                "GIN QPS",
                "seq QPS",
                "GIN ms",
                "seq ms",
                "GIN ÷ seq",
                "other CPU % gin / seq",
            ],
            search_rows,
        ),
        "",
        "`ranked` is the app's ranking subquery (`search @@ websearch_to_tsquery(...)`, "
        "visibility, `ORDER BY ts_rank_cd(...) DESC, created_at DESC, id DESC LIMIT 20`), the "
        "part the GIN index serves; `full` is the whole statement `search_posts` runs (plus "
        "`ts_headline` ×2 and the author join for the 20 hits). Both compiled from "
        "`keel.search.repository.search_posts` with the queries inlined. Per query (pgbench "
        "per-script average latency, ms GIN / seq):",
        "",
        h.markdown_table(
            [
                "query",
                "tsquery",
                "matching posts",
                "ranked ms",
                "ranked ×",
                "full ms",
                "full ×",
                "scan on posts (ranked): GIN mode / seq mode",
            ],
            q_rows,
        ),
        "",
        f"`{srch['command']}` (`{{variant}}` = ranked | full; five scripts, equal weights, "
        "picked at random per transaction), each variant GIN then seq, "
        f"{s['rounds']} alternating rounds, medians. Seq: the same with "
        f'`PGOPTIONS="{SEQ_OPTIONS}"`. EXPLAIN (ANALYZE, BUFFERS) of every query in both '
        "modes is in the JSON (`plans.search`); the last column gives the scan on posts each "
        "mode's plan uses (the seq mode must show `Seq Scan on posts`; the GIN mode is the "
        f"planner's own choice, normally a Bitmap Index Scan on `{GIN_INDEX}`).",
        "",
        "#### 2 and 3. HTTP, one server",
        "",
        h.markdown_table(
            [
                "endpoint",
                "median req/s",
                "req/s per round",
                "µs/req",
                "p50 ms",
                "p99 ms",
                "CPU % server / pg",
                "other CPU %",
                "main SQL mean ms",
            ],
            http_rows,
        ),
        "",
        f"One full app (`{APP}`), one uvicorn worker on CPU {h.SERVER_CPU}, wrk on CPU "
        f"{h.CLIENT_CPU}, PostgreSQL not pinned: `wrk -t{s['threads']} -c{s['connections']} "
        f"-d{s['duration']}s --latency -H 'Authorization: Bearer …' URL` (posts/{{id}}: "
        f"`-s` Lua script picking one of {s['ids']:,} random published ids per request), "
        f"{s['rounds']} alternating rounds, {s['warmup']}s warm-up before each run, medians. "
        "Server env: `RATE_LIMIT_ENABLED=false` (the per-user/IP limits would throttle wrk), "
        "`ACCESS_TOKEN_MINUTES=120`, `ENVIRONMENT=testing`, `LOG_JSON=true`. "
        '"main SQL mean ms": pg_stat_statements mean execution time of the endpoint\'s '
        "posts query during the run. "
        f"Keyset page {s['page']} reached by following `next_cursor` {s['page'] - 1} times "
        f"({data['http']['walk_seconds']:.1f} s); its items equal the offset page's: "
        f"{data['http']['keyset_equals_offset']}.",
        "",
        "Plans (EXPLAIN (ANALYZE, BUFFERS), literal values; full text in the JSON):",
        "",
        f"- keyset page {s['page']}: {plans['summary']['list_keyset']}",
        f"- offset page {s['page']}: {plans['summary']['list_offset']}",
        f"- first page: {plans['summary']['list_first']}",
        f"- post by id: {plans['summary']['get_post']}",
        f"- keyset, generic plan (prepared statement): {plans['summary']['list_keyset_generic']}",
        "",
        noisy,
    ]
    seen = sorted(set(data["http"]["others_seen"] + srch["others_seen"]))
    if seen:
        lines.append(f"Other benchmarks were still running at some point: {seen}")
    return "\n".join(lines).rstrip()


def search_noise(search: Mapping[str, Any]) -> str:
    """A warning if other processes took noticeable CPU during any pgbench run, else ""."""
    worst = max(
        (r["cpu"] or {}).get("other_pct", 0.0)
        for variant in ("ranked", "full")
        for runs in search[variant]["rounds"].values()
        for r in runs
    )
    if worst < h.NOISY_OTHER_CPU_PCT:
        return ""
    return (
        f"**Warning: other processes used up to {worst:.0f}% of a core during a pgbench run "
        "(per-round figures in the JSON, `search.*.rounds`): the search figures may be skewed.**"
    )


def plan_summary(plan: str) -> str:
    """The plan's node lines (no buffers/settings), joined, for a one-line Markdown summary."""
    keep = []
    for line in plan.splitlines():
        text = line.strip().removeprefix("->").strip()
        if not text or text.startswith(("Buffers:", "Settings:", "Planning", "I/O Timings")):
            continue
        if text.startswith("Execution Time"):
            keep.append(text)
            continue
        if "(cost=" in text or text.startswith(("Index Cond", "Filter", "Rows Removed")):
            keep.append(text.split("  (cost=")[0].split(" (cost=")[0])
    return "`" + " → ".join(keep) + "`"


def main_sql_ms(rows: Sequence[Mapping[str, Any]]) -> float:
    """Mean ms of the busiest statement on app.posts (the endpoint's main query)."""
    for row in rows:
        if "app.posts" in row["query"]:
            return float(row["mean_ms"])
    return 0.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    others = x.settle(args)
    commit = h.git_commit(args.ref)  # now: src may be committed to while this runs
    with (
        h.source_tree(args.ref) as src,
        x.embedded_cluster() as pg,
        tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp,
    ):
        workdir = Path(tmp)
        print(f"seeding {args.users:,} users and {args.posts:,} posts ...", file=sys.stderr)
        spec = {"url": pg.url, "users": args.users, "posts": args.posts, "seed": args.seed}
        seeded = run_child("prepare", spec, src)
        x.psql(pg, "VACUUM (ANALYZE) app.posts, app.users; CHECKPOINT;")
        facts = data_facts(pg)
        print(f"seeded: {seeded}; {facts}", file=sys.stderr)
        viewer = pick_viewer(pg)
        words = word_stats(pg)
        queries = pick_queries(pg, words)
        matches = query_matches(pg, queries)
        n_ids = int(args.ids)
        ids = x.psql(
            pg,
            f"SELECT id FROM app.posts WHERE is_published ORDER BY md5(id::text) LIMIT {n_ids};",  # noqa: S608
        ).splitlines()

        secret = secrets.token_urlsafe(48)
        env = x.server_env(pg.url, tmp, src, secret)
        env["KEEL_AUTO_MIGRATE"] = "false"  # migrated by the prepare step
        with h.uvicorn_server("full", APP, env=env, log_path=workdir / "full.log") as server:
            with httpx.Client(base_url=server.url(""), timeout=60) as client:
                login = client.post(
                    LOGIN, data={"username": viewer["username"], "password": SEEDED_PASSWORD}
                )
                if login.status_code != 200:
                    raise h.BenchError(f"login answered {login.status_code}: {login.text[:300]}")
                auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
                page_path = f"{POSTS}?limit={args.limit}"
                cursor, keyset_items, walk_s = walk_cursor(client, auth, args.page, args.limit)
                offset = (args.page - 1) * args.limit
                offset_path = f"{POSTS}?offset={offset}&limit={args.limit}"
                offset_items = page_ids(client, auth, offset_path)
                for post_id in ids[:5]:
                    page_ids_check = client.get(f"{POSTS}/{post_id}", headers=auth)
                    if page_ids_check.status_code != 200:
                        raise h.BenchError(f"GET post {post_id}: {page_ids_check.status_code}")
            sql = run_child(
                "sql",
                {
                    "viewer_id": viewer["id"],
                    "queries": queries,
                    "secret": secret,
                    "cursor": cursor,
                    "offset": offset,
                    "limit": args.limit,
                    "post_id": ids[0],
                },
                src,
            )
            targets = (
                x.Target("health", HEALTH, auth=False),
                x.Target("post_by_id", f"{POSTS}/{{id}}", paths=tuple(f"{POSTS}/{i}" for i in ids)),
                x.Target("list_first", page_path),
                x.Target("list_keyset_p500", f"{page_path}&cursor={cursor}"),
                x.Target("list_offset_p500", offset_path),
            )
            rounds = x.run_rounds(server, pg, targets, auth, args, workdir)

        # Plans after the HTTP runs (caches as warm as the app had them), then pgbench.
        plans: dict[str, Any] = {
            "list_keyset": explain(pg, sql["list_keyset"]),
            "list_offset": explain(pg, sql["list_offset"]),
            "list_first": explain(pg, sql["list_first"]),
            "get_post": explain(pg, sql["get_post"]),
            "list_keyset_generic": explain(pg, sql["list_keyset_param"], analyze=False),
            "list_offset_generic": explain(pg, sql["list_offset_param"], analyze=False),
            "search": [],
        }
        search_ok: list[dict[str, Any]] = []
        for i, q in enumerate(queries):
            entry = {"query": q}
            for variant in ("ranked", "full"):
                stmt = sql[f"search_{variant}"][i]
                entry[f"{variant}_gin"] = explain(pg, stmt)
                entry[f"{variant}_seq"] = explain(pg, stmt, pgoptions=SEQ_OPTIONS)
            search_ok.append(
                {
                    "gin_mode_scan": posts_scan(entry["ranked_gin"]),
                    "seq_mode_scan": posts_scan(entry["ranked_seq"]),
                    "full_gin_mode_uses_index": plan_uses(entry["full_gin"], GIN_INDEX),
                    "full_seq_mode_uses_index": plan_uses(entry["full_seq"], GIN_INDEX),
                }
            )
            plans["search"].append(entry)
        plans["summary"] = {
            k: plan_summary(v) for k, v in plans.items() if isinstance(v, str) and k != "search"
        }
        search = search_bench(
            pg, {"ranked": sql["search_ranked"], "full": sql["search_full"]}, args, workdir
        )

    medians = x.summarise(rounds)
    rps = {k: m["requests_per_sec"] for k, m in medians.items()}
    # Equal-weight mix of only the queries whose GIN-mode plan uses the index, from the
    # per-script mean latencies (QPS of an equal mix = 1 / mean latency).
    on_index = [i for i, ok in enumerate(search_ok) if GIN_INDEX in ok["gin_mode_scan"]]
    per_q = search["ranked"]["per_query"]
    gin_ms = sum(per_q[i]["gin_latency_ms"] for i in on_index)
    seq_ms = sum(per_q[i]["seq_latency_ms"] for i in on_index)
    figures = {
        "search_gin_vs_seq": search["ranked"]["ratio"],
        "search_gin_vs_seq_index_queries": seq_ms / gin_ms if gin_ms else 0.0,
        "search_full_gin_vs_seq": search["full"]["ratio"],
        "post_by_id_vs_health": rps["post_by_id"] / rps["health"],
        "keyset_p500_vs_first": rps["list_keyset_p500"] / rps["list_first"],
        "offset_p500_vs_first": rps["list_offset_p500"] / rps["list_first"],
    }
    passes = {k: figures[k] >= t for k, t in TARGETS.items()}
    labels = {
        "health": f"`GET {HEALTH}`",
        "post_by_id": f"`GET {POSTS}/{{id}}` (random of {len(ids):,})",
        "list_first": f"`GET {POSTS}?limit={args.limit}` (first page)",
        "list_keyset_p500": f"keyset page {args.page} (`&cursor=…`)",
        "list_offset_p500": f"offset page {args.page} (`offset={offset}&limit={args.limit}`)",
    }
    return {
        "benchmark": NAME,
        "timestamp": h.now_iso(),
        "commit": commit,
        "settings": {
            **vars(args),
            "app": APP,
            "server_env": {k: v for k, v in env.items() if k not in ("SECRET_KEY", "PYTHONPATH")},
            "seq_pgoptions": SEQ_OPTIONS,
        },
        "seeded": seeded,
        "data": facts,
        "viewer": viewer,
        "search_queries": matches,
        "figures": figures,
        "targets": TARGETS,
        "pass": passes,
        "noisy": bool(h.noise_warning(medians)) or bool(search_noise(search)),
        "search": search,
        "http": {
            "labels": labels,
            "rounds": rounds.runs,
            "cpu_rounds": {k: [asdict(c) for c in v] for k, v in rounds.cpu.items()},
            "medians": medians,
            "sql_top": {k: v[-1] for k, v in rounds.sql.items()},
            "main_sql_ms": {
                k: h.median([main_sql_ms(r) for r in v]) for k, v in rounds.sql.items()
            },
            "walk_seconds": walk_s,
            "keyset_equals_offset": keyset_items == offset_items and bool(keyset_items),
            "post_ids_sample": ids[:5],
            "others_seen": sorted(set(others + rounds.others_seen)),
        },
        "sql": sql,
        "plans": plans,
        "plans_ok": {
            "search": search_ok,
            "keyset_uses_created_at_id": plan_uses(plans["list_keyset"], KEYSET_INDEX),
            "offset_uses_created_at_id": plan_uses(plans["list_offset"], KEYSET_INDEX),
        },
        "top_words": words[:10],
        "distinct_lexemes": len(words),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    h.add_load_args(parser)
    x.add_extra_args(parser)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1, help="keel.seed random seed")
    parser.add_argument("--ids", type=int, default=1_000, help="post ids wrk picks from")
    parser.add_argument("--page", type=int, default=500, help="the deep page to compare")
    parser.add_argument("--limit", type=int, default=20, help="page size")
    parser.add_argument("--pgbench-duration", type=int, default=10)
    parser.add_argument("--pgbench-clients", type=int, default=2)
    parser.add_argument("--pgbench-threads", type=int, default=2)
    parser.add_argument("--child", choices=("prepare", "sql"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(sys.stdin.read())
        out = child_prepare(spec) if args.child == "prepare" else child_sql(spec)
        print(json.dumps(out))
        return 0
    h.require_wrk()
    data = run(args)
    markdown = render(data)
    h.write_results(h.results_name(NAME, args.header), data, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
