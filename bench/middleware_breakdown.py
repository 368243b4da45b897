"""Price each piece of Keel's middleware stack on GET /health, one removal at a time.

    uv run python bench/middleware_breakdown.py [--duration 8] [--rounds 3]
                                                [--only full,bare,full_no_access_log]

Each variant (see bench/apps.py) is the full stack minus one piece. "saves µs/req" is
1e6/req_s(full) - 1e6/req_s(variant): the server CPU time per request that piece costs.
Results go to bench/results/middleware_breakdown.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import _harness as h

NAME = "middleware_breakdown"
PATH = "/health"
VARIANTS = (
    h.Variant("full", "keel.app:create_app"),
    h.Variant("bare", "bench.apps:bare_app", has_request_id=False),
    h.Variant(
        "full_without_request_context",
        "bench.apps:full_without_request_context",
        has_request_id=False,
    ),
    h.Variant("full_without_security_headers", "bench.apps:full_without_security_headers"),
    h.Variant("full_without_body_limit", "bench.apps:full_without_body_limit"),
    h.Variant("full_without_gzip", "bench.apps:full_without_gzip"),
    h.Variant("full_no_access_log", "bench.apps:full_no_access_log"),
    h.Variant("full_no_metrics", "bench.apps:full_no_metrics"),
    h.Variant("full_no_log_no_metrics", "bench.apps:full_no_log_no_metrics"),
)


def render(data: dict[str, Any], variants: tuple[h.Variant, ...]) -> str:
    medians = data["medians"]
    full_us = 1e6 / medians["full"]["requests_per_sec"]
    bare_rps = medians["bare"]["requests_per_sec"]
    rows = []
    for v in variants:
        rps = medians[v.key]["requests_per_sec"]
        rows.append(
            [
                f"`{v.key}`",
                f"{rps:,.0f}",
                f"{1e6 / rps:.1f}",
                f"{rps / bare_rps:.3f}",
                f"{full_us - 1e6 / rps:+.1f}",
                f"{medians[v.key]['p50_ms']:.2f}",
                f"{medians[v.key]['p99_ms']:.2f}",
                f"{medians[v.key]['other_cpu_pct']:.0f}",
            ]
        )
    header = [
        "variant",
        "median req/s",
        "µs/req",
        "÷ bare",
        "saves µs/req",
        "p50 ms",
        "p99 ms",
        "other CPU %",
    ]
    s = data["settings"]
    return "\n".join(
        [
            f"### Middleware breakdown: GET {PATH} ({data['timestamp']}, {data['commit'][:12]})",
            "",
            h.markdown_table(header, rows),
            "",
            f"wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s"
            + "".join(f" -H '{header}'" for header in s["header"])
            + f", {s['rounds']} "
            f"alternating rounds, {s['warmup']}s warm-up, medians over rounds.",
            "",
            h.noise_warning(medians),
        ]
    ).rstrip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    h.add_load_args(parser)
    parser.set_defaults(duration=8)
    parser.add_argument("--only", default="", help="comma-separated variant keys to run")
    args = parser.parse_args(argv)
    wanted = {"full", "bare", *filter(None, args.only.split(","))} if args.only else None
    variants = tuple(v for v in VARIANTS if wanted is None or v.key in wanted)
    h.require_wrk()
    runs = h.run_alternating(variants, PATH, args)
    data: dict[str, Any] = {
        "benchmark": NAME,
        "timestamp": h.now_iso(),
        "commit": h.git_commit(args.ref),
        "settings": {**vars(args), "path": PATH, "variants": {v.key: v.app for v in variants}},
        "rounds": runs,
        "medians": h.summarise(runs),
    }
    markdown = render(data, variants)
    h.write_results(h.results_name(NAME, args.header), data, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
