"""The common start of the read scenarios: a quiet machine, a seeded embedded cluster,
the environment for Keel servers on it, and the user and posts to read."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from bench.harness import load as ld
from bench.harness.base import say
from bench.harness.keel_api import seed
from bench.harness.noise import settle
from bench.harness.pg import ReadFixture, embedded_cluster, read_fixture
from bench.harness.proc import source_tree
from bench.harness.server import ServerConfig, new_secret, server_config
from bench.harness.wrk import require_wrk
from keel.core.embedded import EmbeddedPostgres


class SeededReads(NamedTuple):
    options: ld.LoadOptions
    config: ServerConfig
    others: list[str]  # other benchmarks still running when the wait gave up
    pg: EmbeddedPostgres
    tmp: str  # the run's scratch directory
    env: dict[str, str]  # for Keel servers: production defaults unless args say otherwise
    seeded: dict[str, Any]  # what `keel seed` reported, and the queued jobs dropped
    fixture: ReadFixture


@contextlib.contextmanager
def seeded_reads(
    args: argparse.Namespace,
    *,
    seed_value: int,
    seed_extra: Sequence[str] = (),
    own_posts: bool = False,
) -> Iterator[SeededReads]:
    """`--users` users and `--posts` posts seeded by `keel seed` (plus `seed_extra`
    options, e.g. `--tenants=N`), then `read_fixture(--ids, own_posts=own_posts)`.

    Needs the scenario to have added the load and server arguments and `--users`,
    `--posts`, `--ids`.
    """
    require_wrk()
    options = ld.LoadOptions.from_args(args)
    config = server_config(args)
    config.prepare()
    others = settle(args.quiet_wait, args.other_wait)
    with (
        source_tree(args.ref) as src,
        embedded_cluster() as pg,
        tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp,
    ):
        env = config.env(database_url=pg.url, data_dir=tmp, secret=new_secret(), src=src)
        extra = f" ({' '.join(seed_extra)})" if seed_extra else ""
        say(f"seeding {args.users:,} users and {args.posts:,} posts{extra} ...")
        seeded = seed(
            pg.url,
            users=args.users,
            posts=args.posts,
            seed=seed_value,
            env=env,
            src=src,
            extra=seed_extra,
        )
        fixture = read_fixture(pg, args.ids, own_posts=own_posts)
        seeded["dropped_queued_jobs"] = fixture.dropped_queued_jobs
        env["KEEL_AUTO_MIGRATE"] = "false"  # `keel seed` migrated
        yield SeededReads(options, config, others, pg, tmp, env, seeded, fixture)
