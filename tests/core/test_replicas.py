"""Read routing on a real primary and a real streaming standby (embedded PostgreSQL 18)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import asyncpg
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool
from starlette.requests import Request

from keel.app import create_app
from keel.core.db import asyncpg_dsn, get_session
from keel.core.embedded import EmbeddedPostgres, ServerState, Supervisor, standby
from keel.core.replicas import LSN_COOKIE, LSN_HEADER, ReadContext, parse_lsn, read_context
from keel.migrations import runner
from tests.conftest import make_settings
from tests.posts.factory import posts_url
from tests.users.factory import signed_in


@dataclass
class Cluster:
    primary: EmbeddedPostgres
    replica: EmbeddedPostgres


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """One migrated primary and one standby made by `keel db replica add`, for the module."""
    data_dir = Path(tempfile.mkdtemp(prefix="keel-test-replicas-"))
    primary = EmbeddedPostgres(data_dir)
    try:
        runner.upgrade(primary.ensure_running())
        replica = standby.add_replica(primary, "r1")
        yield Cluster(primary, replica)
    finally:
        primary.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def app(cluster: Cluster, tmp_path: Path) -> AsyncIterator[FastAPI]:
    # The standby must be up (a test may have stopped it) and caught up with the schema.
    _start(cluster.replica)
    settings = make_settings(
        cluster.primary.url,
        tmp_path,
        database_replica_urls=[cluster.replica.url],
        replica_check_interval_ms=50,
        replica_max_lag_ms=5_000,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        await _until_in_rotation(application)
        yield application


def _start(server: EmbeddedPostgres) -> None:
    """Start a stopped standby (its last processes may still be exiting: retry)."""
    for _ in range(300):
        server.restart_if_down()
        if server.status().running:
            return
        time.sleep(0.1)
    raise AssertionError(f"{server.pgdata} did not start")


async def _until_in_rotation(app: FastAPI) -> None:
    replicas = app.state.db.reads.replicas
    for _ in range(400):
        await replicas.check()
        if all(r.healthy for r in replicas.replicas):
            return
        await asyncio.sleep(0.05)
    raise AssertionError([r.reason for r in replicas.replicas])


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as http:
        yield http


@pytest.fixture
async def session(cluster: Cluster) -> AsyncIterator[AsyncSession]:
    engine = create_async_engine(
        cluster.primary.url, poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        async with AsyncSession(bind=engine, expire_on_commit=False) as db_session:
            yield db_session
    finally:
        await engine.dispose()


async def _served_by_standby(app: FastAPI, context: ReadContext | None) -> bool:
    if context is None:
        row = await app.state.db.reads.fetchrow("SELECT pg_is_in_recovery()")
    else:
        with read_context(context):
            row = await app.state.db.reads.fetchrow("SELECT pg_is_in_recovery()")
    return bool(row[0])


async def _replica_sql(cluster: Cluster, sql: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(cluster.replica.url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_safe_reads_reach_the_replica_and_the_rest_the_primary(app: FastAPI) -> None:
    assert await _served_by_standby(app, ReadContext(primary_only=False))
    assert not await _served_by_standby(app, ReadContext(primary_only=True))  # write request
    assert not await _served_by_standby(app, None)  # outside a request: workers, CLI


async def _session_served_by_standby(app: FastAPI, method: str, context: ReadContext) -> bool:
    """What the real `SessionDep` gives a request of `method`: which server answers it."""
    request = Request({"type": "http", "method": method, "app": app, "headers": []})
    with read_context(context):
        sessions = cast(AsyncGenerator[AsyncSession], get_session(request))
        session = await anext(sessions)
        try:
            return bool((await session.execute(text("SELECT pg_is_in_recovery()"))).scalar())
        finally:
            await sessions.aclose()


async def test_orm_sessions_of_safe_reads_reach_the_replica(app: FastAPI) -> None:
    assert await _session_served_by_standby(app, "GET", ReadContext(primary_only=False))
    assert not await _session_served_by_standby(app, "GET", ReadContext(primary_only=True))
    assert not await _session_served_by_standby(app, "POST", ReadContext(primary_only=False))
    # A client whose last write the replica has not replayed yet reads the primary.
    ahead = ReadContext(primary_only=False, min_lsn=2**62)
    assert not await _session_served_by_standby(app, "GET", ahead)


async def test_a_write_then_an_immediate_read_sees_the_write(
    app: FastAPI, client: AsyncClient, session: AsyncSession
) -> None:
    user, auth = await signed_in(app, session, client)
    created = await client.post(
        posts_url(user.id), headers=auth, json={"title": "v0", "content": "c", "is_published": True}
    )
    assert created.status_code == 201, created.text
    url = f"{posts_url(user.id)}/{created.json()['id']}"
    for n in range(1, 21):
        edited = await client.patch(url, headers=auth, json={"title": f"v{n}"})
        assert edited.status_code == 200
        token = edited.headers[LSN_HEADER]
        assert client.cookies[LSN_COOKIE] == token
        assert (await client.get(url, headers=auth)).json()["title"] == f"v{n}"
    # The header works as well as the cookie (API clients without a cookie jar).
    client.cookies.clear()
    edited = await client.patch(url, headers=auth, json={"title": "last"})
    client.cookies.clear()
    read = await client.get(url, headers=auth | {LSN_HEADER: edited.headers[LSN_HEADER]})
    assert read.json()["title"] == "last"


async def test_a_paused_replica_routes_reads_to_the_primary(app: FastAPI, cluster: Cluster) -> None:
    replicas = app.state.db.reads.replicas
    await _replica_sql(cluster, "SELECT pg_wal_replay_pause()")
    try:
        await replicas.check()
        assert not await _served_by_standby(app, ReadContext(primary_only=False))
        assert replicas.replicas[0].reason == "WAL replay paused"
    finally:
        await _replica_sql(cluster, "SELECT pg_wal_replay_resume()")
    await _until_in_rotation(app)
    assert await _served_by_standby(app, ReadContext(primary_only=False))


async def test_stopping_the_replica_costs_no_errors(
    app: FastAPI, client: AsyncClient, session: AsyncSession, cluster: Cluster
) -> None:
    user, auth = await signed_in(app, session, client)
    created = await client.post(
        posts_url(user.id), headers=auth, json={"title": "t", "content": "c", "is_published": True}
    )
    url = f"{posts_url(user.id)}/{created.json()['id']}"
    me = (await client.get("/api/v1/users/me", headers=auth)).json()["id"]
    orm_url = f"/api/v1/users/{me}"  # read through SessionDep's ORM session, not ReadPool
    # The replica has replayed the post: the reads below may use it (the token allows it).
    replicas = app.state.db.reads.replicas
    written = parse_lsn(created.headers[LSN_HEADER]) or 0
    while replicas.replicas[0].replay_lsn < written:
        await replicas.check()
    context = ReadContext(primary_only=False, min_lsn=written)
    assert await _served_by_standby(app, context), replicas.replicas
    assert (await client.get(url, headers=auth)).status_code == 200
    stopper = asyncio.create_task(asyncio.to_thread(cluster.replica.stop))
    statuses = []
    while not stopper.done():
        statuses.append((await client.get(url, headers=auth)).status_code)
        statuses.append((await client.get(orm_url, headers=auth)).status_code)
    await stopper
    statuses += [(await client.get(url, headers=auth)).status_code for _ in range(20)]
    statuses += [(await client.get(orm_url, headers=auth)).status_code for _ in range(20)]
    assert set(statuses) == {200}, statuses
    replica = app.state.db.reads.replicas.replicas[0]
    assert not replica.healthy, replica
    # Back in rotation once it runs again and a check passes.
    _start(cluster.replica)
    await _until_in_rotation(app)
    assert (await client.get(url, headers=auth)).status_code == 200


async def test_admin_api_reports_the_standby_and_its_slot(
    app: FastAPI, client: AsyncClient, session: AsyncSession
) -> None:
    _, user = await signed_in(app, session, client)
    assert (await client.get("/api/v1/admin/replication", headers=user)).status_code == 403
    _, admin = await signed_in(app, session, client, admin=True)
    response = await client.get("/api/v1/admin/replication", headers=admin)
    assert response.status_code == 200
    report = response.json()
    assert report["server"]["in_recovery"] is False
    (slot,) = report["slots"]
    assert slot["slot_name"] == "keel_replica_r1"
    assert slot["slot_type"] == "physical"
    assert slot["active"] is True
    assert slot["wal_status"] == "reserved"
    (standby_row,) = report["standbys"]
    assert standby_row["state"] == "streaming"
    assert standby_row["replay_lag_bytes"] >= 0
    assert report["problems"] == []


async def test_failover_slots_are_synchronised_to_the_standby(cluster: Cluster) -> None:
    """A logical slot made with failover = true (as `keel db subscription create` makes
    them on the publisher) is copied to the standby (`sync_replication_slots = on`)."""
    primary = await asyncpg.connect(asyncpg_dsn(cluster.primary.url))
    replica = await asyncpg.connect(asyncpg_dsn(cluster.replica.url))
    try:
        await primary.execute(
            "SELECT pg_create_logical_replication_slot('keel_failover_test', 'pgoutput',"
            " false, false, true)"
        )
        try:
            synced = None
            for _ in range(600):
                synced = await replica.fetchval(
                    "SELECT synced FROM pg_replication_slots WHERE slot_name = 'keel_failover_test'"
                )
                if synced:
                    break
                await asyncio.sleep(0.1)
            assert synced is True
        finally:
            await primary.execute("SELECT pg_drop_replication_slot('keel_failover_test')")
    finally:
        await primary.close()
        await replica.close()


def test_the_supervisor_restarts_a_crashed_replica(cluster: Cluster) -> None:
    _start(cluster.replica)
    pid = cluster.replica.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    for _ in range(200):
        if cluster.replica.state() is ServerState.CRASHED:
            break
        time.sleep(0.05)
    assert Supervisor(cluster.primary).check() is False  # the primary itself was fine
    assert cluster.replica.status().running


async def test_a_stuck_replica_read_is_answered_by_the_primary(app: FastAPI) -> None:
    """Past REPLICA_READ_TIMEOUT_MS (1 s here) the primary answers, and the replica is held
    out of rotation for a while even though its health checks pass."""
    replicas = app.state.db.reads.replicas
    with read_context(ReadContext(primary_only=False)):
        row = await app.state.db.reads.fetchrow("SELECT pg_is_in_recovery() FROM pg_sleep(1.5)")
    assert row[0] is False
    await replicas.check()
    assert not replicas.replicas[0].healthy
    assert replicas.replicas[0].reason == "read failed: TimeoutError"
    await _until_in_rotation(app)  # after the hold
