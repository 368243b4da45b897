"""Logical replication between two real embedded servers, and its monitoring."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from keel.core.db import asyncpg_dsn
from keel.core.embedded import PORT, EmbeddedPostgres, bin_path, standby
from keel.core.embedded.process import run_binary
from keel.replication import service
from keel.replication.repository import identifier
from tests.test_cli import keel_env, run_keel

SCHEMA = "CREATE SCHEMA app; CREATE TABLE app.items (id int PRIMARY KEY, name text)"


@dataclass
class Pair:
    publisher: EmbeddedPostgres
    subscriber: EmbeddedPostgres
    root: Path


def conninfo(server: EmbeddedPostgres) -> str:
    return f"host={server.socket_dir} port={PORT} user=postgres dbname={server.database}"


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    root = Path(tempfile.mkdtemp(prefix="keel-test-logical-"))
    publisher, subscriber = EmbeddedPostgres(root / "pub"), EmbeddedPostgres(root / "sub")
    try:
        for server in (publisher, subscriber):
            server.ensure_running()
            psql(server, SCHEMA)
        yield Pair(publisher, subscriber, root)
    finally:
        publisher.stop()
        subscriber.stop()
        shutil.rmtree(root, ignore_errors=True)


def psql(server: EmbeddedPostgres, sql: str) -> str:
    argv = [*server.psql_argv(), "-XAtqc", sql]
    return run_binary(argv, as_server=False, cwd=server.data_dir).strip()


@pytest.fixture
async def connect(pair: Pair) -> AsyncIterator[Callable[[EmbeddedPostgres], Awaitable[Any]]]:
    opened: list[asyncpg.Connection] = []

    async def open_(server: EmbeddedPostgres) -> asyncpg.Connection:
        conn = await asyncpg.connect(asyncpg_dsn(server.url))
        opened.append(conn)
        return conn

    yield open_
    for conn in opened:
        await conn.close()


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(600):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_names_are_validated_and_quoted() -> None:
    assert identifier("keel_pub") == '"keel_pub"'
    for bad in ("x; DROP TABLE app.users", 'a"b', "", "1abc", "a" * 64):
        with pytest.raises(service.InvalidName):
            identifier(bad)


def test_the_cli_creates_lists_and_refuses_publications(pair: Pair) -> None:
    env = keel_env(pair.root, DATABASE_URL=pair.publisher.url)
    made = run_keel(
        pair.root,
        "db",
        "publication",
        "create",
        "filtered",
        "--table",
        "app.items",
        "--columns",
        "id,name",
        "--where",
        "id > 10",
        env=env,
    )
    assert made.returncode == 0, made.stderr
    listed = run_keel(pair.root, "db", "publication", "list", env=env)
    assert '"columns": ["id", "name"]' in listed.stdout
    assert "(id > 10)" in listed.stdout
    bad = run_keel(pair.root, "db", "publication", "create", "x; drop", "--schema", "app", env=env)
    assert bad.returncode == 1
    assert "is not a valid name" in bad.stderr
    dropped = run_keel(pair.root, "db", "publication", "drop", "filtered", env=env)
    assert dropped.returncode == 0, dropped.stderr


async def test_rows_replicate_lag_shows_and_conflicts_surface(
    pair: Pair, connect: Callable[[EmbeddedPostgres], Awaitable[Any]]
) -> None:
    pub = await connect(pair.publisher)
    sub = await connect(pair.subscriber)
    await service.create_publication(pub, "keel_app", schemas=["app"], tables=[])
    await service.create_subscription(
        sub, "keel_sub", conninfo=conninfo(pair.publisher), publications=["keel_app"]
    )
    # A row written on the publisher appears on the subscriber.
    await pub.execute("INSERT INTO app.items VALUES (1, 'one')")
    await until(lambda: _has(sub, 1), "row 1 on the subscriber")
    status = await service.replication_status(pub)
    slot = next(s for s in status["slots"] if s["slot_name"] == "keel_sub")
    assert slot["slot_type"] == "logical"
    assert slot["active"]
    assert slot["failover"]  # CREATE SUBSCRIPTION ... failover = true (17+)

    # The subscriber stops: the publisher reports the inactive slot and the WAL it retains.
    await sub.close()
    pair.subscriber.stop()
    try:
        await pub.execute("INSERT INTO app.items SELECT g, 'bulk' FROM generate_series(2, 500) g")
        status = await service.replication_status(pub)
        slot = next(s for s in status["slots"] if s["slot_name"] == "keel_sub")
        assert not slot["active"]
        assert slot["inactive_since"] is not None
        assert slot["retained_bytes"] > 0
        assert any("slot keel_sub is inactive since" in p for p in status["problems"])
    finally:
        pair.subscriber.restart_if_down()
    sub = await connect(pair.subscriber)
    await until(lambda: _has(sub, 500), "the backlog on the subscriber")

    # A conflict: the subscriber already has id 1000. Surfaced, not hidden.
    await sub.execute("INSERT INTO app.items VALUES (1000, 'local')")
    await pub.execute("INSERT INTO app.items VALUES (1000, 'remote')")

    async def errors_reported() -> bool:
        subs = await service.list_subscriptions(sub)
        return int(subs[0]["stats"].get("apply_error_count") or 0) > 0

    await until(errors_reported, "the apply error in pg_stat_subscription_stats")
    status = await service.replication_status(sub)
    assert any("subscription keel_sub has" in p for p in status["problems"])
    await sub.execute("DELETE FROM app.items WHERE id = 1000")  # resolve: the row arrives
    await until(lambda: _has(sub, 1000, name="remote"), "replication to resume")
    await service.drop_subscription(sub, "keel_sub")
    await service.drop_publication(pub, "keel_app")
    assert not [s for s in (await service.replication_status(pub))["slots"]]


async def _has(conn: asyncpg.Connection, key: int, name: str | None = None) -> bool:
    found = await conn.fetchval("SELECT name FROM app.items WHERE id = $1", key)
    return found is not None and (name is None or found == name)


def test_pg_createsubscriber_turns_a_standby_into_a_subscriber(tmp_path: Path) -> None:
    """PostgreSQL 17: a physical standby becomes a logical subscriber, data not copied again.

    pg_createsubscriber makes the publication itself (FOR ALL TABLES) on the primary."""
    root = Path(tempfile.mkdtemp(prefix="keel-test-createsub-"))
    primary = EmbeddedPostgres(root)
    try:
        primary.ensure_running()
        psql(primary, SCHEMA)
        psql(primary, "INSERT INTO app.items SELECT g, 'x' FROM generate_series(1, 1000) g")
        replica = standby.add_replica(primary, "conv")
        replica.stop()
        argv = [
            str(bin_path("pg_createsubscriber")),
            "-D",
            str(replica.pgdata),
            "-P",
            conninfo(primary),
            "-d",
            primary.database,
            "--publication",
            "keel_all",
            "--subscription",
            "keel_conv",
            "-s",
            str(replica.socket_dir),
            "-p",
            str(PORT),
            "-U",
            "postgres",
        ]
        run_binary(argv, as_server=True, cwd=replica.data_dir, timeout=300)
        replica.restart_if_down()
        assert psql(replica, "SELECT pg_is_in_recovery()") == "f"
        psql(primary, "INSERT INTO app.items VALUES (1001, 'after')")
        for _ in range(600):
            if psql(replica, "SELECT count(*) FROM app.items") == "1001":
                break
            time.sleep(0.1)
        assert psql(replica, "SELECT count(*) FROM app.items") == "1001"
        # Only the new row was applied: the 1000 rows came with the standby, not a copy.
        # (a table copy would count 1001 inserts; the apply worker reports its stats lazily)
        stats = "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'items'"
        for _ in range(300):
            if psql(replica, stats) != "0":
                break
            time.sleep(0.1)
        assert psql(replica, stats) == "1"
        assert psql(replica, "SELECT srsubstate FROM pg_subscription_rel") == "r"
    finally:
        primary.stop()
        for server in primary.replicas():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
