"""`python -m bench report`: the README tables and `results/*.md`, generated from the JSON.

In README.md and bench/README.md, everything between `<!-- bench:<name> -->` and
`<!-- /bench:<name> -->` is replaced by the table of scenario `<name>`, made from its
result files (`bench/results/<name>.json`, `<name>__*.json`); `<!-- bench:summary -->`
gets every scenario's headline figures. Nothing in those blocks is edited by hand.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from bench.harness.base import BENCH_DIR, REPO_ROOT, RESULTS_DIR, say
from bench.harness.results import load_results, markdown_table
from bench.scenarios import NAMES, all_scenarios, get

SUMMARY = "rewrite the README tables and results/*.md from the JSON results"
DOCS = (REPO_ROOT / "README.md", BENCH_DIR / "README.md")
BLOCK = re.compile(
    r"(?P<open><!-- bench:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)"
    r"(?P<close><!-- /bench:(?P=name) -->)",
    re.DOTALL,
)


def add_parser(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("report", help=SUMMARY, description=SUMMARY)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if anything is out of date"
    )


def summary_table(results_dir: Path) -> str:
    rows: list[list[str]] = []
    for scenario in all_scenarios():
        results = load_results(scenario.name, results_dir)
        if results:
            rows += [
                [f"`{scenario.name}`", *(cell.replace("**", "") for cell in row)]
                for row in scenario.headline(results)
            ]
    return markdown_table(["scenario", "figure", "measured", "target"], rows)


def block(name: str, results_dir: Path) -> str:
    if name == "summary":
        return summary_table(results_dir)
    if name not in NAMES:
        raise SystemExit(f"unknown scenario in a bench marker: {name!r}")
    results = load_results(name, results_dir)
    if not results:
        return f"_No results yet: run `python -m bench {name}`._"
    return get(name).table(results)


def render_doc(text: str, results_dir: Path) -> str:
    def replace(match: re.Match[str]) -> str:
        body = block(match["name"], results_dir).rstrip() + "\n"
        return f"{match['open']}{body}{match['close']}"

    return BLOCK.sub(replace, text)


def outputs(results_dir: Path) -> dict[Path, str]:
    """Every generated file and its content."""
    out = {doc: render_doc(doc.read_text(), results_dir) for doc in DOCS if doc.exists()}
    for scenario in all_scenarios():
        for stem, data in load_results(scenario.name, results_dir).items():
            out[results_dir / f"{stem}.md"] = scenario.render(data).rstrip() + "\n"
    return out


def main(args: argparse.Namespace) -> int:
    stale = []
    for path, content in outputs(args.results_dir).items():
        if path.exists() and path.read_text() == content:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(content)
    for path in stale:
        shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
        say(f"{'out of date' if args.check else 'rewrote'}: {shown}")
    return 1 if args.check and stale else 0
