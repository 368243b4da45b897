"""The imports scenario's Markdown."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.harness.base import SERVER_CPU
from bench.harness.noise import NOISY_OTHER_CPU_PCT
from bench.harness.results import markdown_table, server_line


def render(data: Mapping[str, Any]) -> str:
    f, med, s = data["figures"], data["medians"], data["settings"]
    targets = data["targets"]
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
            f"≥ {targets['posts_vs_copy']}",
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
            f"≥ {targets['posts_vs_naive']:g}×",
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
            if r["cpu"]["other_pct"] >= NOISY_OTHER_CPU_PCT
        ]
        warn = (
            f"**Warning: other processes used ≥ {NOISY_OTHER_CPU_PCT:.0f}% of a core during "
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
        f"not pinned). Server: {server_line(data)}. With the worker off, the imported posts "
        "are not embedded in the background (the insert trigger still queues their jobs).",
        "",
        markdown_table(["figure", "value", "target", ""], fig_rows),
        "",
        markdown_table(
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
        f"{SERVER_CPU}, the file streamed from disk by httpx (`Content-Length`, 1 MiB chunks), "
        "`on_conflict=error`, `atomic=true`; the request timed end to end (parse, validate, "
        "COPY into a temp staging table, checks, MERGE, commit). `psql \\copy` (psql pinned to "
        f"CPU {SERVER_CPU}): the same final rows (ids, hashes, author ids, created_at) into "
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
        markdown_table(["step", "wall", *phase_names, "outside SQL"], bd_rows),
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
