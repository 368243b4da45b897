"""Read routing's cost: authenticated `GET /posts/{id}` with a healthy replica ÷ without.

Two Keel servers on one seeded primary with one streaming standby (`keel db replica
add`), measured in alternation (wrk, closed loop): `routing_on` has
`DATABASE_REPLICA_URLS` (its hot reads go to the standby, after a lag and health check per
`REPLICA_CHECK_INTERVAL_MS`), `routing_off` has none. Headline: on ÷ off (target ≥ 0.9).
On this 2-core machine the standby adds no capacity (it shares the cores with the
primary), so the figure prices the routing itself.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from bench.harness import load as ld
from bench.harness import results as res
from bench.harness.base import API
from bench.harness.keel_api import SEEDED_PASSWORD, bearer, login
from bench.harness.noise import noise_warning
from bench.harness.pg import psql
from bench.harness.scenario import Results, Scenario, first_line
from bench.harness.seeded import seeded_reads
from bench.harness.server import add_server_args
from bench.harness.wrk import Load
from keel.core.embedded import standby

NAME = "replica_reads"
TARGET = 0.9
OFF = ld.Variant("routing_off", "keel.app:create_app", has_request_id=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ld.add_load_args(parser)
    add_server_args(parser)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--posts", type=int, default=20_000)
    parser.add_argument("--ids", type=int, default=1_000, help="published post ids to pick from")


def run(args: argparse.Namespace) -> dict[str, Any]:
    with seeded_reads(args, seed_value=3) as (
        options,
        config,
        others,
        pg,
        tmp,
        env,
        seeded,
        fixture,
    ):
        replica = standby.add_replica(pg, "bench")
        on = ld.Variant(
            "routing_on",
            "keel.app:create_app",
            env={"DATABASE_REPLICA_URLS": replica.url},
            has_request_id=True,
        )
        env["KEEL_AUTO_MIGRATE"] = "false"
        with ld.serve_variants((OFF, on), env, Path(tmp)) as servers:
            with httpx.Client(base_url=servers["routing_off"].url(), timeout=30) as client:
                auth = bearer(login(client, fixture.username, SEEDED_PASSWORD))
            paths = tuple(f"{fixture.posts_path}/{i}" for i in fixture.post_ids)
            for variant in (OFF, on):
                ld.check_reply(servers[variant.key], paths[0], auth, variant)
            before = _replica_reads(replica)
            measured = [
                ld.Measured(
                    v.key, servers[v.key], Load(f"{fixture.posts_path}/{{id}}", paths, auth)
                )
                for v in (OFF, on)
            ]
            rounds = ld.alternate(measured, options, Path(tmp))
            served_by_replica = _replica_reads(replica) - before
    medians = ld.summarise(rounds)
    ratio = medians["routing_on"]["requests_per_sec"] / medians["routing_off"]["requests_per_sec"]
    return {
        "server": config.describe(),
        "settings": {"path": f"{API}/orgs/{{org_id}}/posts/{{id}}", "ids": len(fixture.post_ids)},
        "seeded": seeded,
        **rounds.as_json(),
        "others_seen": sorted(set(others + rounds.others_seen)),
        "medians": medians,
        "replica_rows_returned": served_by_replica,
        "ratio": ratio,
        "target": TARGET,
        "pass": ratio >= TARGET,
        "noisy": bool(noise_warning(ld.worst_other_cpu(medians))),
    }


def _replica_reads(replica: Any) -> int:
    """Rows the standby returned from app tables: proof the routed reads landed there."""
    sql = "SELECT coalesce(sum(idx_tup_fetch), 0) FROM pg_stat_user_tables WHERE schemaname = 'app'"
    return int(psql(replica, sql) or 0)


def render(data: Mapping[str, Any]) -> str:
    med = data["medians"]
    rows = [
        [
            f"`{key}`",
            f"{m['requests_per_sec']:,.0f}",
            " / ".join(f"{r['requests_per_sec']:,.0f}" for r in data["rounds"][key]),
            f"{m['p50_ms']:.2f}",
            f"{m['p99_ms']:.2f}",
            f"{m['other_cpu_pct']:.0f}",
        ]
        for key, m in med.items()
    ]
    s = data["settings"]
    return "\n".join(
        [
            f"### Read routing ({data['timestamp']}, {data['commit'][:12]})",
            "",
            res.markdown_table(
                ["variant", "median req/s", "per round", "p50 ms", "p99 ms", "other CPU %"], rows
            ),
            "",
            f"**routing on ÷ off = {data['ratio']:.3f}** (target ≥ {data['target']}): "
            f"{res.verdict(data['pass'])}. Rows the standby fetched during the runs: "
            f"{data['replica_rows_returned']:,}.",
            "",
            f"wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s, {s['rounds']} "
            f"alternating rounds. Server: {res.server_line(data)}.",
            "",
            noise_warning(max(m["other_cpu_pct"] for m in med.values())),
        ]
    ).rstrip()


def table(results: Results) -> str:
    return "\n\n".join(render(data) for data in results.values())


def headline(results: Results) -> list[list[str]]:
    return [
        [
            "`GET /posts/{id}`, read routing on (healthy replica) ÷ off",
            f"{d['ratio']:.2f}",
            f"≥ {d['target']} ({res.verdict(d['pass'])})",
        ]
        for d in results.values()
    ]


SCENARIO = Scenario(
    name=NAME,
    summary=first_line(__doc__),
    add_arguments=add_arguments,
    run=run,
    render=render,
    table=table,
    headline=headline,
)
