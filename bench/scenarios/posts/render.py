"""The posts scenario's Markdown."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.harness.base import CLIENT_CPU, SERVER_CPU
from bench.harness.noise import noise_warning
from bench.harness.results import markdown_table, server_line, verdict
from bench.scenarios.posts.search import SEQ_OPTIONS, search_noise

APP = "keel.app:create_app"
GIN_INDEX = "ix_posts_tenant_id_search"


def render(data: Mapping[str, Any]) -> str:
    s, f = data["settings"], data["figures"]
    targets = data["targets"]
    med = data["http"]["medians"]
    srch = data["search"]
    queries = data["search_queries"]

    fig_rows = [
        [
            "search: GIN ÷ forced seq scan (QPS, ranked query)",
            f"{f['search_gin_vs_seq']:.1f}×",
            f"≥ {targets['search_gin_vs_seq']:g}×",
            verdict(f["search_gin_vs_seq"] >= targets["search_gin_vs_seq"]),
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
            f"≥ {targets['post_by_id_vs_health']}",
            verdict(f["post_by_id_vs_health"] >= targets["post_by_id_vs_health"]),
        ],
        [
            f"keyset page {s['page']} ÷ first page (req/s)",
            f"{f['keyset_p500_vs_first']:.3f}",
            f"≥ {targets['keyset_p500_vs_first']}",
            verdict(f["keyset_p500_vs_first"] >= targets["keyset_p500_vs_first"]),
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
                " / ".join(f"{r['requests_per_sec']:,.0f}" for r in data["http"]["rounds"][key]),
                f"{1e6 / m['requests_per_sec']:.0f}",
                f"{m['p50_ms']:.2f}",
                f"{m['p99_ms']:.2f}",
                f"{m['server_cpu_pct']:.0f} / {m['postgres_cpu_pct']:.0f}",
                f"{m['other_cpu_pct']:.0f}",
                f"{data['http']['main_sql_ms'].get(key, 0):.3f}",
            ]
        )
    noisy = "\n\n".join(
        w
        for w in (noise_warning(max(m["other_cpu_pct"] for m in med.values())), search_noise(srch))
        if w
    )
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
        markdown_table(["figure", "value", "target", ""], fig_rows),
        "",
        "#### 1. Search at the SQL level (pgbench)",
        "",
        markdown_table(
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
        markdown_table(
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
        markdown_table(
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
        f"One full app (`{s.get('app', APP)}`), one uvicorn worker on CPU {SERVER_CPU}, wrk on CPU "
        f"{CLIENT_CPU}, PostgreSQL not pinned: `wrk -t{s['threads']} -c{s['connections']} "
        f"-d{s['duration']}s --latency -H 'Authorization: Bearer …' URL` (posts/{{id}}: "
        f"`-s` Lua script picking one of {s['ids']:,} random published ids per request), "
        f"{s['rounds']} alternating rounds, {s['warmup']}s warm-up before each run, medians. "
        f"Server: {server_line(data)}. "
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
