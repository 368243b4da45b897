"""Backups and streaming replication: incremental ÷ full size and time, restore times, lag.

On `keel seed` posts: a full base backup, then three changes of 1% of the posts, each
followed by an incremental backup: `updated_at` of the physically last 1% (no indexed
column, but full pages make it a non-HOT update), the title of the newest 1% by
`created_at` (scattered through the heap: seeded dates are random), the title of a random
1%. Headline: incremental ÷ full
size (target ≤ 0.1). Then restores (pg_combinebackup + start) of the full backup alone
and of full + 2 incrementals; then a standby (`keel db replica add`) under a sustained
insert load of `--rate` rows/s, with `pg_stat_replication.replay_lag` sampled every 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg

from bench.harness import results as res
from bench.harness.base import percentiles, say
from bench.harness.keel_api import seed
from bench.harness.pg import embedded_cluster, psql
from bench.harness.scenario import Results, Scenario, first_line
from bench.harness.server import new_secret
from keel.core.db import asyncpg_dsn
from keel.core.embedded import PORT, EmbeddedPostgres, standby
from keel.replication.backups import BackupStore
from keel.replication.restore import restore

NAME = "backups"
TARGET_SIZE_RATIO = 0.1
# updated_at only (no indexed column), on the physically last 1% of rows. Seeded pages are
# full (fillfactor 100), so the new versions land on other pages: not HOT, and every
# index (GIN search included) gets an entry at a random place.
CHANGE_IN_PLACE = """UPDATE app.posts SET updated_at = updated_at + interval '1 second'
    WHERE id IN (SELECT id FROM app.posts ORDER BY ctid DESC LIMIT :n)"""
# Title edits: a new row version, plus entries in the btree that INCLUDEs the title and
# in the GIN search index (every lexeme of the post): scattered across the indexes.
CHANGE_NEWEST = """UPDATE app.posts SET title = title || '.' WHERE id IN
    (SELECT id FROM app.posts ORDER BY created_at DESC, id DESC LIMIT :n)"""
CHANGE_RANDOM = """UPDATE app.posts SET title = title || '.' WHERE id IN
    (SELECT id FROM app.posts ORDER BY random() LIMIT :n)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--change-pct", type=float, default=1.0)
    parser.add_argument("--rate", type=int, default=2_000, help="rows/s for the lag test")
    parser.add_argument("--lag-seconds", type=float, default=20.0)


def _data_bytes(path: Path) -> int:
    """Backup size without the WAL it carries (pg_wal: one 16 MB segment or more)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and "pg_wal" not in f.parts)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with embedded_cluster() as pg, tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        env = {"SECRET_KEY": new_secret(), "KEEL_DATA_DIR": tmp, "ENVIRONMENT": "development"}
        seeded = seed(pg.url, users=args.users, posts=args.posts, seed=12, env=env)
        psql(pg, "VACUUM ANALYZE app.posts")
        conninfo = f"host={pg.socket_dir} port={PORT} user=postgres dbname=postgres"
        store = BackupStore(pg.data_dir / "backups", conninfo, as_server=True)
        n = max(1, int(args.posts * args.change_pct / 100))
        limit_n = f"\\set n {n:d}\n"  # a psql variable: the statements stay constants
        say(f"full backup of {args.posts:,} posts")
        full = store.take(incremental=False)
        psql(pg, limit_n + CHANGE_IN_PLACE)
        in_place = store.take(incremental=True)
        psql(
            pg,
            limit_n + CHANGE_NEWEST,
        )
        newest = store.take(incremental=True)
        psql(
            pg,
            limit_n + CHANGE_RANDOM,
        )
        scattered = store.take(incremental=True)
        backups = {
            "full": full,
            "in_place_1pct": in_place,
            "newest_1pct": newest,
            "random_1pct": scattered,
        }
        sizes = {
            key: {
                "bytes": b.size_bytes,
                "data_bytes": _data_bytes(store.root / b.id),
                "seconds": b.duration_s,
            }
            for key, b in backups.items()
        }
        restores = {}
        for key, backup in (("full", full), ("full_plus_2_incrementals", newest)):
            target = Path(tmp) / f"restore-{key}"
            result = restore(store, backup, target, replay_archive=False)
            restores[key] = {
                "combine_s": result.seconds_combine,
                "start_and_replay_s": result.seconds_replay,
                "chain": len(result.chain),
            }
            shutil.rmtree(target, ignore_errors=True)
        lag = _replication_lag(pg, args.rate, args.lag_seconds)
    f = sizes["full"]
    ratios = {
        key: {
            "size": sizes[key]["bytes"] / f["bytes"],
            "data_size": sizes[key]["data_bytes"] / f["data_bytes"],
            "time": sizes[key]["seconds"] / f["seconds"],
        }
        for key in ("in_place_1pct", "newest_1pct", "random_1pct")
    }
    return {
        "settings": {
            "users": args.users,
            "posts": args.posts,
            "change_pct": args.change_pct,
            "rate": args.rate,
            "lag_seconds": args.lag_seconds,
        },
        "seed": seeded,
        "backups": sizes,
        "ratios": ratios,
        "restores": restores,
        "lag": lag,
        "target": TARGET_SIZE_RATIO,
        "pass": ratios["random_1pct"]["size"] <= TARGET_SIZE_RATIO,
    }


def _replication_lag(pg: EmbeddedPostgres, rate: int, seconds: float) -> dict[str, Any]:
    say(f"standby under {rate} rows/s for {seconds}s")
    psql(
        pg,
        "CREATE TABLE IF NOT EXISTS public.bench_lag (id bigserial PRIMARY KEY, "
        "at timestamptz DEFAULT now(), payload text)",
    )
    standby.add_replica(pg, "bench")
    try:
        return asyncio.run(_drive(pg, rate, seconds))
    finally:
        standby.remove_replica(pg, "bench")


async def _drive(pg: EmbeddedPostgres, rate: int, seconds: float) -> dict[str, Any]:
    writer = await asyncpg.connect(asyncpg_dsn(pg.url))
    probe = await asyncpg.connect(asyncpg_dsn(pg.url))
    tick, batch = 0.01, max(1, rate // 100)  # 100 commits/s of rate/100 rows
    written, lag_ms, lag_bytes = 0, [], []
    start = time.monotonic()

    async def write() -> None:
        nonlocal written
        next_at = start
        while time.monotonic() - start < seconds:
            await writer.execute(
                "INSERT INTO public.bench_lag (payload) SELECT repeat('x', 100) "
                "FROM generate_series(1, $1)",
                batch,
            )
            written += batch
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def sample() -> None:
        while time.monotonic() - start < seconds:
            row = await probe.fetchrow(
                "SELECT (extract(epoch FROM replay_lag) * 1000)::float8, "
                "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 "
                "FROM pg_stat_replication LIMIT 1"
            )
            if row is not None and row[0] is not None:
                lag_ms.append(row[0])
                lag_bytes.append(row[1])
            await asyncio.sleep(0.1)

    await asyncio.gather(write(), sample())
    elapsed = time.monotonic() - start
    await writer.close()
    await probe.close()
    return {
        "rows_per_s": written / elapsed,
        "samples": len(lag_ms),
        "replay_lag_ms": percentiles(lag_ms) if lag_ms else None,
        "replay_lag_bytes": percentiles(lag_bytes) if lag_bytes else None,
    }


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def render(data: Mapping[str, Any]) -> str:
    b, r, s = data["backups"], data["ratios"], data["settings"]
    rows = [
        [
            key,
            _mb(v["bytes"]),
            _mb(v["data_bytes"]),
            f"{v['seconds']:.1f}",
            f"{r[key]['size']:.3f}" if key in r else "1",
            f"{r[key]['data_size']:.3f}" if key in r else "1",
            f"{r[key]['time']:.2f}" if key in r else "1",
        ]
        for key, v in b.items()
    ]
    lag = data["lag"]
    ms, by, nan = lag["replay_lag_ms"] or {}, lag["replay_lag_bytes"] or {}, float("nan")
    return "\n".join(
        [
            f"### Backups and replication ({data['timestamp']}, {data['commit'][:12]})",
            "",
            f"{s['posts']:,} posts (`keel seed`), {s['change_pct']}% changed before each "
            "incremental.",
            "",
            res.markdown_table(
                [
                    "backup",
                    "MB",
                    "MB without WAL",
                    "seconds",
                    "÷ full size",
                    "÷ full (no WAL)",
                    "÷ full time",
                ],
                rows,
            ),
            "",
            f"**incremental (random 1%) ÷ full size = {r['random_1pct']['size']:.3f}** "
            f"(target ≤ {data['target']}): {res.verdict(data['pass'])}",
            "",
            res.markdown_table(
                ["restore", "backups combined", "combine s", "start + replay s"],
                [
                    [k, v["chain"], f"{v['combine_s']:.1f}", f"{v['start_and_replay_s']:.1f}"]
                    for k, v in data["restores"].items()
                ],
            ),
            "",
            f"Replication under {lag['rows_per_s']:,.0f} rows/s ({lag['samples']} samples): "
            f"replay lag p50 {ms.get('p50', nan):.1f} ms, p99 {ms.get('p99', nan):.1f} ms; "
            f"p50 {by.get('p50', nan):,.0f} B, p99 {by.get('p99', nan):,.0f} B behind.",
        ]
    )


def table(results: Results) -> str:
    return "\n\n".join(render(data) for data in results.values())


def headline(results: Results) -> list[list[str]]:
    rows = []
    for d in results.values():
        if "in_place_1pct" in d["ratios"]:
            rows.append(
                [
                    f"incremental ÷ full backup size, 1% of {d['settings']['posts']:,} posts "
                    "updated (`updated_at`, physically last 1%)",
                    f"{d['ratios']['in_place_1pct']['size']:.3f}",
                    f"≤ {d['target']} "
                    f"({res.verdict(d['ratios']['in_place_1pct']['size'] <= d['target'])})",
                ]
            )
        rows.append(
            [
                f"incremental ÷ full backup size, 1% of {d['settings']['posts']:,} posts "
                "re-titled at random",
                f"{d['ratios']['random_1pct']['size']:.3f}",
                f"≤ {d['target']} ({res.verdict(d['pass'])})",
            ]
        )
    return rows


SCENARIO = Scenario(
    name=NAME,
    summary=first_line(__doc__),
    add_arguments=add_arguments,
    run=run,
    render=render,
    table=table,
    headline=headline,
)
