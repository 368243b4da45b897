"""`python -m bench <scenario> [options]`, `python -m bench --list`, `python -m bench report`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench import report
from bench.harness.base import RESULTS_DIR, now_iso, say
from bench.harness.proc import git_commit
from bench.harness.results import load_json, write_json
from bench.harness.scenario import Scenario
from bench.scenarios import NAMES, all_scenarios


def add_common_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("every scenario")
    group.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help="where <scenario>.json and .md go (default: bench/results; use a temp dir for "
        "trial runs so the committed figures stay)",
    )
    group.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="before each run, wait up to this many seconds for the machine to go idle",
    )
    group.add_argument(
        "--other-wait",
        type=float,
        default=600.0,
        help="before each run, wait up to this many seconds for other benchmarks and wrk",
    )
    group.add_argument(
        "--ref",
        default=None,
        help="serve src/ as committed at this git ref (e.g. HEAD) instead of the working tree",
    )


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    skip = {"scenario", "results_dir"}
    return {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in skip
    }


def run_scenario(scenario: Scenario, args: argparse.Namespace) -> int:
    commit = git_commit(args.ref)  # now: src may be committed to while this runs
    started = now_iso()
    data = scenario.run(args)
    data = {
        "scenario": scenario.name,
        "timestamp": started,
        "commit": commit,
        **data,
        "settings": {**settings_of(args), **data.get("settings", {})},
    }
    stem = scenario.stem(args)
    path = write_json(stem, data, args.results_dir)
    markdown = scenario.render(load_json(path))  # what `report` will render from the file
    path.with_suffix(".md").write_text(markdown.rstrip() + "\n")
    print(markdown)
    say(f"wrote {path} and {path.with_suffix('.md').name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Keel's benchmarks: one harness, one entry point. See bench/README.md.",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    sub = parser.add_subparsers(dest="scenario", metavar="SCENARIO")
    scenarios = {s.name: s for s in all_scenarios()}
    for scenario in scenarios.values():
        p = sub.add_parser(scenario.name, help=scenario.summary, description=scenario.summary)
        scenario.add_arguments(p)
        add_common_args(p)
    report.add_parser(sub)
    args = parser.parse_args(argv)
    if args.list or args.scenario is None:
        width = max(map(len, NAMES))
        for name in NAMES:
            print(f"{name:<{width}}  {scenarios[name].summary}")
        print(f"{'report':<{width}}  {report.SUMMARY}")
        return 0
    if args.scenario == "report":
        return report.main(args)
    return run_scenario(scenarios[args.scenario], args)


if __name__ == "__main__":
    sys.exit(main())
