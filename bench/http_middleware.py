"""Middleware overhead: GET /health req/s with Keel's full middleware stack vs none.

    uv run python bench/http_middleware.py [--duration 10] [--connections 64] [--threads 2]
                                           [--rounds 3]

Headline: full ÷ bare median req/s (target >= 0.9). Results go to
bench/results/http_middleware.{json,md}; see bench/README.md.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import _harness as h

NAME = "http_middleware"
PATH = "/health"
TARGET_RATIO = 0.9
VARIANTS = (
    h.Variant("full", "keel.app:create_app", has_request_id=True),
    h.Variant("bare", "bench.apps:bare_app", has_request_id=False),
)


def render(data: dict[str, Any]) -> str:
    medians = data["medians"]
    rows = [
        [
            f"`{v.key}` ({v.app})",
            f"{medians[v.key]['requests_per_sec']:,.0f}",
            " / ".join(f"{r.requests_per_sec:,.0f}" for r in data["rounds"][v.key]),
            f"{medians[v.key]['p50_ms']:.2f}",
            f"{medians[v.key]['p99_ms']:.2f}",
            int(medians[v.key]["errors"]),
            f"{medians[v.key]['other_cpu_pct']:.0f}",
        ]
        for v in VARIANTS
    ]
    header = [
        "variant",
        "median req/s",
        "req/s per round",
        "p50 ms",
        "p99 ms",
        "socket errors",
        "other CPU %",
    ]
    s = data["settings"]
    verdict = "PASS" if data["pass"] else "FAIL"
    if data["noisy"]:
        verdict += " (noisy run, see below)"
    return "\n".join(
        [
            f"### Middleware overhead: GET {PATH} ({data['timestamp']}, {data['commit'][:12]})",
            "",
            h.markdown_table(header, rows),
            "",
            f"**full ÷ bare = {data['ratio']:.3f}** (target ≥ {data['target']}): {verdict}",
            "",
            f"wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s"
            + "".join(f" -H '{header}'" for header in s["header"])
            + f", {s['rounds']} "
            f"alternating rounds, {s['warmup']}s warm-up, medians over rounds; "
            f"server on CPU {h.SERVER_CPU}, wrk on CPU {h.CLIENT_CPU}.",
            "",
            h.noise_warning(medians),
        ]
    ).rstrip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    h.add_load_args(parser)
    args = parser.parse_args(argv)
    h.require_wrk()
    runs = h.run_alternating(VARIANTS, PATH, args)
    medians = h.summarise(runs)
    ratio = medians["full"]["requests_per_sec"] / medians["bare"]["requests_per_sec"]
    data: dict[str, Any] = {
        "benchmark": NAME,
        "timestamp": h.now_iso(),
        "commit": h.git_commit(args.ref),
        "settings": {**vars(args), "path": PATH, "variants": {v.key: v.app for v in VARIANTS}},
        "rounds": runs,
        "medians": medians,
        "ratio": ratio,
        "target": TARGET_RATIO,
        "pass": ratio >= TARGET_RATIO,
        "noisy": bool(h.noise_warning(medians)),
    }
    markdown = render(data)
    h.write_results(h.results_name(NAME, args.header), data, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
