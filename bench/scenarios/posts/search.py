"""Search at the SQL level: the app's search statements under pgbench, GIN vs seq scan."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.harness.base import median
from bench.harness.noise import NOISY_OTHER_CPU_PCT, CpuSplit, settle
from bench.harness.pg import PgbenchResult, pgbench_argv, run_pgbench
from keel.core.embedded import EmbeddedPostgres

SEQ_OPTIONS = "-c enable_bitmapscan=off -c enable_indexscan=off"
NO_CPU = CpuSplit(0.0, 0.0, 0.0, 0.0)


def search_bench(
    pg: EmbeddedPostgres,
    statements: Mapping[str, Sequence[str]],
    args: argparse.Namespace,
    workdir: Path,
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
    runs: dict[str, dict[str, list[PgbenchResult]]] = {
        v: {m: [] for m in modes} for v in statements
    }
    others: list[str] = []
    for round_no in range(1, args.rounds + 1):
        for variant in statements:
            for mode, pgoptions in modes.items():
                others += settle(args.quiet_wait, args.other_wait)
                result, _ = run_pgbench(
                    pg,
                    scripts[variant],
                    duration=args.pgbench_duration,
                    clients=args.pgbench_clients,
                    threads=args.pgbench_threads,
                    pgoptions=pgoptions,
                )
                runs[variant][mode].append(result)
                cpu = result.cpu or NO_CPU
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
                "tps": median([r.tps for r in rs]),
                "latency_avg_ms": median([r.latency_avg_ms for r in rs]),
                "other_cpu_pct": median([(r.cpu or NO_CPU).other_pct for r in rs]),
                "postgres_cpu_pct": median([(r.cpu or NO_CPU).postgres_pct for r in rs]),
            }
            for m, rs in by_mode.items()
        }
        per_query = []
        for path in scripts[variant]:
            lat = {
                m: median([r.per_script[path.name].get("latency_avg_ms", 0.0) for r in rs])
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
        pgbench_argv(
            pg,
            [Path(f"search_{{variant}}_q{i}.sql") for i in range(1, 6)],
            duration=args.pgbench_duration,
            clients=args.pgbench_clients,
            threads=args.pgbench_threads,
        )
    ).replace(str(pg.socket_dir), "<socket dir>")
    return summary


def search_noise(search: Mapping[str, Any]) -> str:
    """A warning if other processes took noticeable CPU during any pgbench run, else ""."""
    worst = max(
        (r["cpu"] or {}).get("other_pct", 0.0)
        for variant in ("ranked", "full")
        for runs in search[variant]["rounds"].values()
        for r in runs
    )
    if worst < NOISY_OTHER_CPU_PCT:
        return ""
    return (
        f"**Warning: other processes used up to {worst:.0f}% of a core during a pgbench run "
        "(per-round figures in the JSON, `search.*.rounds`): the search figures may be skewed.**"
    )
