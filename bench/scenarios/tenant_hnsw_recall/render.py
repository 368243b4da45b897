"""The Markdown of `tenant_hnsw_recall`, from its JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.harness import results as res
from bench.harness.scenario import Results
from bench.scenarios.tenant_hnsw_recall.data import K

HEADER = ["figure", "value", "target"]


def _how(reply: Mapping[str, Any]) -> str:
    return (
        f"{reply.get('index')}, ef_search {reply.get('ef_search')}, "
        f"iterative {reply.get('iterative_scan')}"
    )


def _rows(data: Mapping[str, Any]) -> list[list[str]]:
    f, seeded, searches = data["figures"], data["seeded"], data["searches"]
    lat, sql = f["latency_ms"], f["sql_mean_ms"]
    small, big = seeded["tenant_documents"]
    share = small / (small + big)

    def ms(kind: str) -> str:
        mean = f", SQL {sql[kind]:.2f}" if sql.get(kind) is not None else ""
        return f"{lat[kind]['p50']:.2f} / {lat[kind]['p95']:.2f}{mean}"

    return [
        [
            f"recall@{K}, one tenant holding {small:,} of {small + big:,} documents "
            f"({share:.1%}), through the API ({_how(searches['small_tenant']['reply'])}; "
            f"the plan: {_plan(searches['small_tenant'].get('index_scans'))})",
            f"**{f['recall']:.3f}**",
            f"≥ {f['target']}: {res.verdict(f['pass'])}",
        ],
        [
            f"latency ms p50 / p95 (HTTP), the {share:.0%} tenant ÷ the {1 - share:.0%} "
            "tenant (≈ unfiltered)",
            f"{ms('small_tenant')} ÷ {ms('big_tenant')} = **{f['small_vs_big_p50']:.2f}×**",
            "report",
        ],
        [
            f"recall@{K} of the {share:.0%} tenant when the plan walks the HNSW graph "
            "(`enable_sort = off` for the server's connections): the filtered HNSW recall; "
            "ms p50 / p95",
            f"**{f['recall_hnsw_walk']:.3f}**; {ms('small_hnsw')}",
            f"≥ {f['target']}: {res.verdict(f['recall_hnsw_walk'] >= f['target'])}",
        ],
        *_ef_rows(data, share),
        [
            f"recall@{K} of the {1 - share:.0%} tenant; the {share:.0%} tenant's exact search "
            "(ms p50 / p95)",
            f"{f['recall_big_tenant']:.3f}; {ms('small_exact')}",
            "reference",
        ],
    ]


def _ef_rows(data: Mapping[str, Any], share: float) -> list[list[str]]:
    """Recall and latency at the other ef_search values asked for (request's `ef_search`)."""
    f = data["figures"]
    by_ef = f.get("recall_by_ef_search") or {}
    if not by_ef:
        return []
    lat, searches = f["latency_ms"], data["searches"]
    cells = [
        f"{ef}: **{value:.3f}**, {lat[f'small_ef{ef}']['p50']:.2f} ms p50 "
        f"({_plan(searches[f'small_ef{ef}'].get('index_scans'))})"
        for ef, value in by_ef.items()
    ]
    label = f"recall@{K} of the {share:.0%} tenant with `ef_search` in the request (plan)"
    return [[label, "; ".join(cells), "report"]]


def _plan(scans: Mapping[str, int] | None) -> str:
    """What the plan read: the HNSW graph or the tenant's btree (the most scanned index)."""
    if not scans:
        return "?"
    index = max(scans, key=lambda name: scans[name])
    return "HNSW walk" if "hnsw" in index else f"`{index}` + sort: exact"


def _scans(scans: Mapping[str, int] | None) -> str:
    if scans is None:
        return "not recorded"
    return ", ".join(f"`{name}` {count}" for name, count in scans.items()) or "none"


def render(data: Mapping[str, Any]) -> str:
    s, f, seeded = data["settings"], data["figures"], data["seeded"]
    lines = [
        f"### Filtered HNSW recall for one tenant ({data['timestamp']}, {data['commit'][:12]})",
        "",
        res.markdown_table(HEADER, _rows(data)),
        "",
        f"{s['documents']:,} documents, dimension {s['dimension']}, {s['clusters']} clusters "
        f"in {s['latent']} latent dimensions, {s['queries']} held-out queries. COPY "
        f"{seeded['load_seconds']:.1f} s, HNSW rebuild {seeded['hnsw_build_seconds']:.1f} s. "
        f"The exact SQL ground truth agrees with numpy at {f['exact_sql_vs_numpy']:.3f}; "
        f"`exact: true` through the API at {f['recall_exact_via_api']:.3f}. SQL = the search "
        f"statement's mean time in pg_stat_statements. {res.server_line(data)}.",
        "",
        "Index scans per kind of search (pg_stat_user_indexes, which plan ran): "
        + "; ".join(
            f"{kind}: {_scans(v.get('index_scans'))}" for kind, v in data["searches"].items()
        )
        + ".",
    ]
    return "\n".join(lines).rstrip()


def table(results: Results) -> str:
    stem, data = next(iter(results.items()))
    note = res.source_note(data, stem)
    return f"{res.markdown_table(HEADER, _rows(data))}\n\n{note}"


def headline(results: Results) -> list[list[str]]:
    f = next(iter(results.values()))["figures"]
    label = "filtered vector search recall@10 via the API, one tenant holding 1% of documents"
    walk = "the same tenant, the plan forced to walk the HNSW graph (filtered HNSW recall@10)"
    walked = f["recall_hnsw_walk"] >= f["target"]
    return [
        [label, f"{f['recall']:.3f}", f"≥ {f['target']} ({res.verdict(f['pass'])})"],
        [walk, f"{f['recall_hnsw_walk']:.3f}", f"≥ {f['target']} ({res.verdict(walked)})"],
    ]
