"""Database insight: overview latency on a big database, what /metrics' database figures
cost, and what 10 scrapes a second do to `GET /posts/{id}`.

One embedded PostgreSQL seeded with `keel seed` (1M posts by default), then VACUUM ANALYZE.
Three servers, production defaults otherwise, alternated:
- `full`: Keel as shipped (metrics cache 5 s);
- `nocache`: INSIGHT_METRICS_CACHE_SECONDS=0, so every scrape queries the database;
- `nometrics`: INSIGHT_METRICS_ENABLED=false (a scrape without database figures).

1. `GET /api/v1/admin/db/overview`, sequential, as an admin: p50/p95 (ms), against
   `GET /api/v1/users/me` measured the same way in the same rounds.
2. One scrape's cost: sequential `GET /metrics` on `nocache` ÷ on `nometrics` (the
   difference is the collector's server time), and the collector's own clock
   (`keel_db_insight_collect_seconds`).
3. `GET /posts/{id}` (wrk) on `full` with a client scraping /metrics 10 times a second,
   ÷ the same without scrapes, alternated per round.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from bench.harness import load as ld
from bench.harness.base import API, BenchError, median, percentiles, say
from bench.harness.keel_api import SEEDED_PASSWORD, bearer, login, seed
from bench.harness.noise import settle
from bench.harness.pg import embedded_cluster, psql, read_fixture
from bench.harness.proc import source_tree
from bench.harness.results import markdown_table, server_line
from bench.harness.scenario import Results, Scenario, first_line
from bench.harness.server import Server, add_server_args, new_secret, server_config
from bench.harness.wrk import path_picker_lua, run_wrk

NAME = "insight"
APP = "keel.app:create_app"
OVERVIEW, ME = f"{API}/admin/db/overview", f"{API}/users/me"
METRICS_TOKEN = "bench-metrics-token"  # noqa: S105 - loopback only
COLLECT = re.compile(r"^keel_db_insight_collect_seconds (\S+)$", re.MULTILINE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ld.add_load_args(parser)
    add_server_args(parser)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ids", type=int, default=1_000, help="post ids wrk picks from")
    parser.add_argument("--requests", type=int, default=100, help="sequential GETs per round")
    parser.add_argument("--scrapes-per-second", type=float, default=10.0)


def timed_gets(
    client: httpx.Client, path: str, headers: Mapping[str, str], n: int
) -> tuple[list[float], list[str]]:
    """n sequential GETs; their latencies (ms) and the bodies (for /metrics parsing)."""
    latencies, bodies = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        reply = client.get(path, headers=dict(headers))
        latencies.append((time.perf_counter() - t0) * 1000)
        if reply.status_code != 200:
            raise BenchError(f"GET {path} answered {reply.status_code}: {reply.text[:300]}")
        bodies.append(reply.text)
    return latencies, bodies


class Scraper:
    """Scrapes /metrics at a fixed rate in a thread while wrk runs (bounded by stop())."""

    def __init__(self, server: Server, per_second: float) -> None:
        self.url, self.interval = server.url("/metrics"), 1.0 / per_second
        self.stopped, self.count = threading.Event(), 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        with httpx.Client(timeout=10) as client:
            next_at = time.monotonic()
            while not self.stopped.is_set():
                if client.get(self.url, headers=headers).status_code != 200:
                    raise BenchError("a /metrics scrape failed")
                self.count += 1
                next_at += self.interval
                self.stopped.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> Scraper:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=30)


def run(args: argparse.Namespace) -> dict[str, Any]:
    options = ld.LoadOptions.from_args(args)
    config = server_config(args, extra_env={"METRICS_TOKEN": METRICS_TOKEN})
    config.prepare()
    settle(args.quiet_wait, args.other_wait)
    scrape = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    with (
        source_tree(args.ref) as src,
        embedded_cluster() as pg,
        tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp,
    ):
        workdir = Path(tmp)
        env = config.env(database_url=pg.url, data_dir=tmp, secret=new_secret(), src=src)
        say(f"seeding {args.users:,} users and {args.posts:,} posts ...")
        seeded = seed(pg.url, users=args.users, posts=args.posts, seed=args.seed, env=env, src=src)
        fixture = read_fixture(pg, args.ids)
        admin = psql(
            pg,
            "UPDATE app.users SET is_superuser = true WHERE id = (SELECT id FROM app.users "  # noqa: S608
            f"WHERE id <> '{fixture.user_id}'::uuid ORDER BY username LIMIT 1) "
            "RETURNING username;",
        ).splitlines()[0]
        database_bytes = int(psql(pg, "SELECT pg_database_size(current_database());"))
        variants = [
            ld.Variant("full", APP),
            ld.Variant("nocache", APP, {"INSIGHT_METRICS_CACHE_SECONDS": "0"}),
            ld.Variant("nometrics", APP, {"INSIGHT_METRICS_ENABLED": "false"}),
        ]
        env["KEEL_AUTO_MIGRATE"] = "false"  # `keel seed` migrated
        lat: dict[str, list[float]] = {"overview": [], "me": [], "scrape": [], "bare": []}
        collect_ms: list[float] = []
        rps: dict[str, list[float]] = {"without": [], "with": []}
        scrapes_done: list[int] = []
        with ld.serve_variants(variants, env, workdir) as servers:
            full = servers["full"]
            with httpx.Client(base_url=full.url(), timeout=60) as client:
                admin_auth = bearer(login(client, admin, SEEDED_PASSWORD))
                reader_auth = bearer(login(client, fixture.username, SEEDED_PASSWORD))
            script = path_picker_lua(
                tuple(f"{fixture.posts_path}/{i}" for i in fixture.post_ids), workdir / "posts.lua"
            )
            for round_no in range(1, options.rounds + 1):
                settle(options.quiet_wait, options.other_wait)
                with httpx.Client(base_url=full.url(), timeout=60) as client:
                    timed_gets(client, OVERVIEW, admin_auth, 5)  # warm
                    lat["overview"] += timed_gets(client, OVERVIEW, admin_auth, args.requests)[0]
                    lat["me"] += timed_gets(client, ME, reader_auth, args.requests)[0]
                with httpx.Client(base_url=servers["nocache"].url(), timeout=60) as client:
                    took, bodies = timed_gets(client, "/metrics", scrape, args.requests)
                    lat["scrape"] += took
                    collect_ms += [
                        float(m.group(1)) * 1000 for b in bodies if (m := COLLECT.search(b))
                    ]
                with httpx.Client(base_url=servers["nometrics"].url(), timeout=60) as client:
                    lat["bare"] += timed_gets(client, "/metrics", scrape, args.requests)[0]
                for mode in ("without", "with"):
                    settle(options.quiet_wait, options.other_wait)
                    url = full.url(f"{fixture.posts_path}/{fixture.post_ids[0]}")
                    headers = {**options.headers, **reader_auth}
                    run_wrk(
                        url,
                        duration=options.warmup or 1,
                        connections=options.connections,
                        threads=1,
                        headers=headers,
                        script=script,
                    )
                    if mode == "with":
                        with Scraper(full, args.scrapes_per_second) as scraper:
                            result, _ = run_wrk(
                                url,
                                duration=options.duration,
                                connections=options.connections,
                                threads=options.threads,
                                headers=headers,
                                script=script,
                            )
                        scrapes_done.append(scraper.count)
                    else:
                        result, _ = run_wrk(
                            url,
                            duration=options.duration,
                            connections=options.connections,
                            threads=options.threads,
                            headers=headers,
                            script=script,
                        )
                    if result.non_2xx:
                        raise BenchError(f"{mode}: {result.non_2xx} non-2xx replies")
                    rps[mode].append(result.requests_per_sec)
                    say(
                        f"round {round_no} posts/{{id}} {mode:>7} scrapes: "
                        f"{result.requests_per_sec:,.0f} req/s"
                    )
    overview, me = percentiles(lat["overview"]), percentiles(lat["me"])
    scrape_p, bare_p = percentiles(lat["scrape"]), percentiles(lat["bare"])
    with_rps, without_rps = median(rps["with"]), median(rps["without"])
    figures = {
        "overview_p50_ms": overview["p50"],
        "overview_p95_ms": overview["p95"],
        "overview_p50_vs_users_me": overview["p50"] / me["p50"],
        "scrape_cost_ms": scrape_p["p50"] - bare_p["p50"],
        "collector_ms_p50": median(collect_ms) if collect_ms else None,
        "scrape_p50_vs_without_db_figures": scrape_p["p50"] / bare_p["p50"],
        "posts_rps_with_vs_without_scrapes": with_rps / without_rps,
    }
    return {
        "server": config.describe(),
        "seeded": {**seeded, "database_bytes": database_bytes},
        "settings": {
            "requests_per_round": args.requests,
            "scrapes_per_second": args.scrapes_per_second,
        },
        "figures": figures,
        "latency_ms": {
            "overview": overview,
            "users_me": me,
            "scrape_nocache": scrape_p,
            "scrape_without_db_figures": bare_p,
        },
        "collector_ms": percentiles(collect_ms) if collect_ms else {},
        "posts_rps": {
            "with_scrapes": rps["with"],
            "without_scrapes": rps["without"],
            "scrapes_done": scrapes_done,
        },
    }


def render(data: Mapping[str, Any]) -> str:
    f, s, rps = data["figures"], data["seeded"], data["posts_rps"]
    rows = [
        [
            "`GET /admin/db/overview` p50 / p95",
            f"{f['overview_p50_ms']:.1f} / {f['overview_p95_ms']:.1f} ms",
        ],
        ["overview p50 ÷ `GET /users/me` p50", f"{f['overview_p50_vs_users_me']:.1f}×"],
        [
            "one scrape's database figures (server time, p50 difference)",
            f"{f['scrape_cost_ms']:.2f} ms",
        ],
        [
            "collector's own clock (p50)",
            "n/a" if f["collector_ms_p50"] is None else f"{f['collector_ms_p50']:.2f} ms",
        ],
        [
            "scrape p50 ÷ scrape without database figures",
            f"{f['scrape_p50_vs_without_db_figures']:.2f}×",
        ],
        [
            "`GET /posts/{id}` req/s with 10 scrapes/s ÷ without (medians)",
            f"{f['posts_rps_with_vs_without_scrapes']:.3f}",
        ],
        [
            "the same, round by round (with ÷ without req/s)",
            ", ".join(
                f"{w:,.0f} ÷ {o:,.0f}"
                for w, o in zip(rps["with_scrapes"], rps["without_scrapes"], strict=True)
            ),
        ],
    ]
    return "\n".join(
        [
            f"# {NAME}",
            "",
            f"{s['posts']:,} posts, {s['users']:,} users, "
            f"database {s['database_bytes'] / 2**30:.2f} GiB"
            f" (seeded in {s['seconds']} s).",
            "",
            server_line(data),
            "",
            markdown_table(["figure", "measured"], rows),
            "",
        ]
    )


def table(results: Results) -> str:
    data = results.get(NAME)
    return render(data).split("\n", 2)[2] if data else "_not run yet_"


def headline(results: Results) -> list[list[str]]:
    data = results.get(NAME)
    if not data:
        return []
    f, posts = data["figures"], data["seeded"]["posts"]
    return [
        [
            f"`/admin/db/overview` p50 / p95 on {posts:,} posts",
            f"{f['overview_p50_ms']:.0f} / {f['overview_p95_ms']:.0f} ms",
            "report",
        ],
        [
            "`/metrics` database figures, server time per collecting scrape",
            f"{f['scrape_cost_ms']:.1f} ms (collector {f['collector_ms_p50']:.1f} ms)",
            "report",
        ],
        [
            "`GET /posts/{id}` with 10 scrapes/s ÷ without",
            f"{f['posts_rps_with_vs_without_scrapes']:.2f}",
            "report",
        ],
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
