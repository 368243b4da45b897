"""The vector scenario's Markdown."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.harness.base import median
from bench.harness.results import markdown_table
from bench.scenarios.vectors.corpus import K
from bench.scenarios.vectors.search import ITERATIVE_MODES, plan_nodes


def pf(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render(data: Mapping[str, Any]) -> str:
    s, f, rec, idx = data["settings"], data["figures"], data["recall"], data["load"]["indexes"]
    targets = data["targets"]
    efs = s["ef_search"]
    ef = data["chosen_ef_search"]["halfvec"]
    qps = data["qps"]
    emb = data["embedding"]
    fil = data["filtered"]
    mib = 2**20

    def recalls(col: str) -> str:
        return " / ".join(f"{rec[col][str(e)]['recall']:.3f}" for e in efs)

    smallest = f["smallest_ef_search_reaching_target"]
    rows = [
        [
            f"recall@{K}, HNSW on `embedding_half` (app default),"
            f" ef_search {' / '.join(map(str, efs))}",
            f"**{recalls('halfvec')}**",
            f"≥ {s['target']} at some ef_search: {pf(f['recall_pass'])}"
            f" (smallest: {smallest['halfvec'] or 'none'})",
        ],
        [
            f"recall@{K}, HNSW on `embedding` (vector), same ef_search",
            f"{recalls('vector')}",
            f"reference (smallest reaching {s['target']}: {smallest['vector'] or 'none'})",
        ],
        [
            f"QPS halfvec HNSW (ef_search {ef}) ÷ exact scan",
            f"{qps['halfvec_hnsw']:,.0f} ÷ {qps['exact']:,.1f} = **{f['qps_ratio']:.0f}×**",
            f"≥ {targets['qps_ratio']:.0f}×: {pf(f['qps_ratio_pass'])}",
        ],
        [
            f"QPS vector HNSW (ef_search {data['chosen_ef_search']['vector']}) ÷ exact scan",
            f"{qps['vector_hnsw']:,.0f} ÷ {qps['exact']:,.1f} = {f['qps_ratio_vector']:.0f}×",
            "reference",
        ],
        [
            "index size halfvec ÷ vector",
            f"{idx['halfvec']['bytes'] / mib:,.1f} ÷ {idx['vector']['bytes'] / mib:,.1f} MiB"
            f" = **{f['size_ratio']:.3f}**",
            f"≤ {targets['size_ratio']}: {pf(f['size_ratio_pass'])}",
        ],
        [
            "build time halfvec / vector",
            f"{idx['halfvec']['build_s']:.1f} s / {idx['vector']['build_s']:.1f} s"
            f" (ratio {f['build_ratio']:.2f})",
            "report",
        ],
        [
            f"recall change halfvec − vector at ef_search {' / '.join(map(str, efs))}",
            " / ".join(
                f"**{v:+.4f}**" if int(e) == ef else f"{v:+.4f}"
                for e, v in f["recall_change"].items()
            ),
            f"≥ {targets['recall_change']} (at {ef}): {pf(f['recall_change_pass'])}",
        ],
    ]
    for mode in ITERATIVE_MODES:
        r = fil["halfvec"][mode]
        v = fil["vector"][mode]
        rows.append(
            [
                f"filtered (10% bucket), ef_search {s['filter_ef']}, iterative_scan = {mode}:"
                " recall / rows returned, halfvec (vector)",
                f"**{r['recall']:.3f}** / {r['returned']:.2f}"
                f" ({v['recall']:.3f} / {v['returned']:.2f});"
                f" {r['mean_ms']:.1f} ms",
                "on vs off: report",
            ]
        )
    planned = fil["halfvec"]["relaxed_order, planner's choice"]
    rows.append(
        [
            "filtered, relaxed_order, planner's own choice (not forced), halfvec",
            f"{planned['recall']:.3f} / {planned['returned']:.2f}; {planned['mean_ms']:.1f} ms",
            "reference",
        ]
    )
    src = "cached; measured " + emb["measured_at"] if emb["cached"] else "measured this run"
    rows.append(
        [
            f"embedding throughput, one single-threaded process, batch {emb['batch_size']}"
            f" (~{emb['mean_tokens']:.0f} tokens/text)",
            f"**{emb['single_process_texts_per_s']:,.0f} sentences/s**"
            f" ({emb['workers']} processes on {emb['workers']} cores together:"
            f" {emb['aggregate_texts_per_s']:,.0f}/s)",
            f"report ({src})",
        ]
    )
    lat_rows = []
    for col in ("halfvec", "vector"):
        for e in efs:
            r = rec[col][str(e)]
            lat_rows.append(
                [
                    col,
                    e,
                    f"{r['recall']:.4f}",
                    f"{r['mean_ms']:.2f}",
                    f"{r['p50_ms']:.2f}",
                    f"{r['p95_ms']:.2f}",
                ]
            )
    qps_rows = [
        [
            k,
            f"{qps[k]:,.1f}",
            ", ".join(f"{r['qps']:,.1f}" for r in v),
            f"{median([r['postgres_cpu_pct'] for r in v]):.0f}",
            f"{max(r['other_cpu_pct'] for r in v):.0f}",
        ]
        for k, v in data["qps_runs"].items()
    ]
    ld = data["load"]
    lines = [
        f"### Vectors ({data['timestamp']}, {data['commit'][:12]})",
        "",
        f"{s['documents']:,} documents, {s['queries']} held-out queries, all-MiniLM-L6-v2"
        f" (384 dims, cosine), PostgreSQL {data['pg_version']},"
        f" pgvector {data['pgvector_version']},"
        f" HNSW m={ld['hnsw_m']}, ef_construction={ld['hnsw_ef_construction']}.",
        "",
        markdown_table(["figure", "value", "target"], rows),
        "",
        "Recall and latency per query (one connection, sequential; the app's statement in a"
        " transaction with SET LOCAL):",
        "",
        markdown_table(
            ["index", "ef_search", f"recall@{K}", "mean ms", "p50 ms", "p95 ms"], lat_rows
        ),
        "",
        f"QPS (one connection, sequential, {s['rounds']} alternating rounds of"
        f" {s['qps_seconds']} s HNSW / {s['exact_seconds']} s exact; median):",
        "",
        markdown_table(
            ["variant", "median q/s", "per round", "PostgreSQL CPU %", "max other CPU %"], qps_rows
        ),
        "",
        "Plans (query 0, nodes top-down):"
        f" halfvec HNSW: {plan_nodes(data['plans']['halfvec_hnsw'])};"
        f" exact: {plan_nodes(data['plans']['exact'])};"
        f" filtered, forced: {plan_nodes(data['plans']['filtered_forced_relaxed'])};"
        f" filtered, planner's choice: {plan_nodes(data['plans']['filtered_planner_relaxed'])}"
        " (on `embedding`:"
        f" {plan_nodes(data['plans']['filtered_planner_relaxed_vector'])}).",
        "",
        f"Ground truth: numpy brute force (float64 dot products of the unit vectors); on the"
        f" first {data['truth_check_queries']} queries it matches the exact SQL"
        f" (`enable_indexscan = off`) at {data['truth_check']['unfiltered']:.3f} (unfiltered) and"
        f" {data['truth_check']['filtered']:.3f} (filtered) overlap.",
        f"Index builds: `maintenance_work_mem = {ld['maintenance_work_mem']}`,"
        f" `max_parallel_maintenance_workers = {ld['max_parallel_maintenance_workers']}`,"
        f" `shared_buffers = {ld['shared_buffers']}`; the migration built"
        f" {', '.join(ld['migration_hnsw_indexes']) or 'no HNSW index'} (dropped first)."
        f" Table {ld['table_total_bytes'] / mib:,.0f} MiB"
        f" (heap {ld['table_heap_bytes'] / mib:,.0f} MiB),"
        f" GIN on metadata {ld['gin_bytes'] / mib:,.1f} MiB;"
        f" COPY of the rows {ld['copy_s']:.1f} s.",
        f"Other processes used at most {data['max_other_cpu_pct']:.0f}% of a core during the"
        " measured phases.",
    ]
    if data["noisy"]:
        lines += [
            "",
            f"**Warning: other processes used up to {data['max_other_cpu_pct']:.0f}% of a core"
            " during the runs, so timings may be skewed (recall and sizes are not); re-run on a"
            " quiet machine.**",
        ]
    return "\n".join(lines)
