"""What a scenario is: a name, its options, a run that returns JSON, and its Markdown."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bench.harness.results import results_name

Results = Mapping[str, Mapping[str, Any]]  # result file stem -> its JSON


def no_headline(_: Results) -> list[list[str]]:
    return []


@dataclass(frozen=True)
class Scenario:
    """One benchmark, run as `python -m bench <name>`.

    - `add_arguments` adds its own options (the common ones are added for it);
    - `run` measures and returns the JSON-able result (the entry point adds the scenario
      name, timestamp, commit and settings);
    - `render` turns one result into the Markdown written next to it
      (`results/<stem>.md`);
    - `table` turns all of the scenario's results (`<name>.json`, `<name>__*.json`) into the
      block `python -m bench report` writes between `<!-- bench:<name> -->` markers;
    - `headline` gives rows (figure, measured, target) for the README's summary table.
    """

    name: str
    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict[str, Any]]
    render: Callable[[Mapping[str, Any]], str]
    table: Callable[[Results], str]
    headline: Callable[[Results], list[list[str]]] = no_headline

    def stem(self, args: argparse.Namespace) -> str:
        """The result file's name: headers sent (`--header`) make variants of a scenario."""
        return results_name(self.name, getattr(args, "header", None) or [])


def first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n", 1)[0]


def add_quick(parser: argparse.ArgumentParser, values: Mapping[str, Any]) -> None:
    """`--quick`: a check that the scenario runs, at the reduced scale `values` sets."""
    scale = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in values.items())
    parser.add_argument("--quick", action="store_true", help=f"a quick check: {scale}")
    parser.set_defaults(quick_values=dict(values))


def apply_quick(args: argparse.Namespace) -> None:
    """With --quick, overwrite the options `add_quick` named (the JSON records them)."""
    if getattr(args, "quick", False):
        for name, value in args.quick_values.items():
            setattr(args, name, value)
