"""Insight API against the embedded server, each problem provoked for real."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest
import structlog
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from keel.insight.pg import service, snapshots
from keel.insight.pg.schemas import SignalAction
from keel.insight.pg.service import InsightConfig
from keel.jobs.worker import Worker
from tests.conftest import asyncpg_dsn, make_settings, running, url_for_database
from tests.insight.pg.conftest import DB, Connect, check, get, until
from tests.users.factory import as_viewer, make_user, signed_in

CHECKS = {
    "cache_hit_ratio", "connections", "long_running_queries", "idle_in_transaction",
    "blocked_queries", "invalid_indexes", "duplicate_indexes", "unused_indexes",
    "vacuum_overdue", "analyze_overdue", "transaction_id_age", "multixact_age", "sequences",
    "replication_slots", "checkpoints",
}  # fmt: skip


async def test_overview_reports_every_check(client: AsyncClient, admin: dict[str, str]) -> None:
    body = await get(client, admin, "/overview")
    assert {c["name"] for c in body["checks"]} == CHECKS
    assert body["server_version"].split(".")[0] in {"17", "18"}
    for item in body["checks"]:
        assert item["status"] in {"ok", "warning", "critical"}
        assert item["threshold"]
        assert item["advice"]


async def test_admins_only(app: FastAPI, db_session: AsyncSession, client: AsyncClient) -> None:
    assert (await client.get(f"{DB}/overview")).status_code == 401
    _, user = await signed_in(app, db_session, client)
    for path in ("/overview", "/activity", "/queries", "/space", "/indexes", "/io", "/settings"):
        assert (await client.get(f"{DB}{path}", headers=user)).status_code == 403
    assert (await client.post(f"{DB}/activity/1/terminate", headers=user)).status_code == 403


async def test_duplicate_redundant_and_unused_indexes(
    db_session: AsyncSession, client: AsyncClient, admin: dict[str, str]
) -> None:
    await db_session.execute(text("CREATE TABLE app.widgets (id int PRIMARY KEY, v int)"))
    await db_session.execute(
        text("INSERT INTO app.widgets SELECT g, g FROM generate_series(1, 100000) g")
    )
    await db_session.execute(text("CREATE INDEX widgets_v_a ON app.widgets (v)"))
    await db_session.execute(text("CREATE INDEX widgets_v_b ON app.widgets (v)"))
    await db_session.execute(text("CREATE INDEX widgets_v_id ON app.widgets (v, id)"))
    report = await get(client, admin, "/indexes")
    duplicate = {d["index"]: d["same_as"] for d in report["duplicate"]}
    assert duplicate == {"app.widgets_v_b": "app.widgets_v_a"}
    redundant = {r["index"]: r["covered_by"] for r in report["redundant"]}
    assert redundant["app.widgets_v_a"] == "app.widgets_v_id"
    unused = {u["index"] for u in report["unused"]}
    assert {"app.widgets_v_a", "app.widgets_v_b", "app.widgets_v_id"} <= unused
    assert "app.widgets_pkey" not in unused  # it enforces the primary key
    overview = await get(client, admin, "/overview")
    assert check(overview, "duplicate_indexes")["status"] == "warning"
    assert "app.widgets_v_b" in {
        d["index"] for d in check(overview, "duplicate_indexes")["details"]
    }
    assert "app.widgets_v_a" in {d["index"] for d in check(overview, "unused_indexes")["details"]}


async def test_failed_concurrent_index_is_invalid(
    db_session: AsyncSession, client: AsyncClient, admin: dict[str, str]
) -> None:
    await db_session.execute(text("CREATE TABLE app.dupes (v int)"))
    await db_session.execute(text("INSERT INTO app.dupes VALUES (1), (1)"))
    with pytest.raises(DBAPIError, match="could not create unique index"):
        await db_session.execute(text("CREATE UNIQUE INDEX CONCURRENTLY dupes_v ON app.dupes (v)"))
    overview = await get(client, admin, "/overview")
    invalid = check(overview, "invalid_indexes")
    assert invalid["status"] == "warning"
    assert [d["index"] for d in invalid["details"]] == ["app.dupes_v"]
    assert "CONCURRENTLY" in invalid["advice"]
    assert [i["index"] for i in (await get(client, admin, "/indexes"))["invalid"]] == [
        "app.dupes_v"
    ]


async def test_idle_transaction_is_listed_then_terminated(
    client: AsyncClient, admin: dict[str, str], connect: Connect
) -> None:
    idle = await connect()
    pid = await idle.fetchval("SELECT pg_backend_pid()")
    transaction = idle.transaction()
    await transaction.start()
    await idle.execute("SELECT 1")

    async def listed() -> dict[str, object] | None:
        backends = (await get(client, admin, "/activity"))["backends"]
        return next((b for b in backends if b["pid"] == pid), None)

    backend = await until(listed)
    assert backend["state"] == "idle in transaction"
    assert backend["transaction_seconds"] >= 0
    with structlog.testing.capture_logs() as logs:
        response = await client.post(f"{DB}/activity/{pid}/terminate", headers=admin)
    assert response.status_code == 200, response.text
    assert response.json() == {"pid": pid, "action": "terminate", "signalled": True}
    me = (await client.get("/api/v1/users/me", headers=admin)).json()["id"]
    audit = [e for e in logs if e["event"] == "insight.backend_terminate"]
    assert [(a["admin_id"], a["pid"], a["log_level"]) for a in audit] == [(me, pid, "warning")]
    with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)):
        await idle.execute("SELECT 1")
    assert await listed() is None


async def test_signals_stay_inside_keels_database(
    app: FastAPI,
    db_session: AsyncSession,
    client: AsyncClient,
    admin: dict[str, str],
    database_url: str,
) -> None:
    other = await asyncpg.connect(asyncpg_dsn(url_for_database(database_url, "postgres")))
    try:
        pid = await other.fetchval("SELECT pg_backend_pid()")
        response = await client.post(f"{DB}/activity/{pid}/terminate", headers=admin)
        assert response.status_code == 404
        assert response.json()["type"].endswith("backend-not-found")
        assert await other.fetchval("SELECT 1") == 1
    finally:
        await other.close()
    # The backend serving the request itself is refused.
    user = await make_user(app, db_session, admin=True)
    config = InsightConfig.from_settings(app.state.settings)
    own = (await db_session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    await db_session.execute(text("BEGIN"))
    try:
        with pytest.raises(service.OwnBackend):
            await service.signal(db_session, config, own, SignalAction.terminate, as_viewer(user))
    finally:
        await db_session.execute(text("ROLLBACK"))


async def test_blocked_query_shows_in_the_blocking_tree(
    client: AsyncClient, admin: dict[str, str], connect: Connect
) -> None:
    holder, waiter = await connect(), await connect()
    await holder.execute("CREATE TABLE app.locked (id int PRIMARY KEY, n int)")
    await holder.execute("INSERT INTO app.locked VALUES (1, 0)")
    holder_pid = await holder.fetchval("SELECT pg_backend_pid()")
    waiter_pid = await waiter.fetchval("SELECT pg_backend_pid()")
    transaction = holder.transaction()
    await transaction.start()
    await holder.execute("UPDATE app.locked SET n = n + 1 WHERE id = 1")
    blocked = asyncio.create_task(waiter.execute("UPDATE app.locked SET n = n + 1 WHERE id = 1"))
    try:

        async def tree() -> list[dict[str, object]]:
            roots: list[dict[str, object]] = (await get(client, admin, "/activity"))[
                "blocking_tree"
            ]
            return roots

        roots = await until(tree)
        assert [r["pid"] for r in roots] == [holder_pid]
        [child] = roots[0]["blocked"]
        assert child["pid"] == waiter_pid
        assert "UPDATE app.locked" in child["query"]
        overview = await get(client, admin, "/overview")
        assert check(overview, "blocked_queries")["value"] == 1
        assert check(overview, "blocked_queries")["status"] == "warning"
    finally:
        await transaction.rollback()
        await blocked


async def test_bloat_from_updates_with_autovacuum_off(
    db_session: AsyncSession, client: AsyncClient, admin: dict[str, str], connect: Connect
) -> None:
    writer = await connect()
    await writer.execute(
        "CREATE TABLE app.churn (id int PRIMARY KEY, body text) WITH (autovacuum_enabled = false)"
    )
    await writer.execute(
        "INSERT INTO app.churn SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g"
    )
    for _ in range(4):
        await writer.execute("UPDATE app.churn SET body = body")
    await writer.execute("ANALYZE app.churn")

    async def overdue() -> list[str]:
        overview = await get(client, admin, "/overview")
        return [d["table"] for d in check(overview, "vacuum_overdue")["details"]]

    assert "app.churn" in await until(overdue)
    space = await get(client, admin, "/space")
    assert space["bloat_method"] == "pgstattuple_approx"
    churn = next(t for t in space["table_bloat"] if t["table"] == "app.churn")
    # Dead rows and the space page pruning freed from them: most of the table.
    assert churn["dead_tuple_percent"] > 0
    assert churn["bloat_bytes"] > churn["bytes"] / 2
    maintenance = await get(client, admin, "/maintenance")
    row = next(t for t in maintenance["tables"] if t["table"] == "app.churn")
    assert row["autovacuum_disabled"] is True
    assert row["dead_tuples"] >= 60000


async def test_sequence_near_its_maximum_is_critical(
    db_session: AsyncSession, client: AsyncClient, admin: dict[str, str]
) -> None:
    # A serial (int4) column: its 2^31 - 1 limit matters, not the sequence's own.
    await db_session.execute(text("CREATE TABLE app.tickets (id serial PRIMARY KEY)"))
    await db_session.execute(text("SELECT setval('app.tickets_id_seq', 2000000000)"))
    overview = await get(client, admin, "/overview")
    sequences = check(overview, "sequences")
    assert sequences["status"] == "critical"
    assert overview["status"] == "critical"
    [near] = sequences["details"]
    assert near["sequence"] == "app.tickets_id_seq"
    assert near["column"] == "app.tickets.id"
    assert near["max_value"] == 2**31 - 1


async def test_snapshot_job_feeds_query_history_and_growth(
    app: FastAPI, client: AsyncClient, admin: dict[str, str], connect: Connect
) -> None:
    worker = Worker(app.state.db, snapshots.handlers(app.state.settings))
    marker = "SELECT $1::int AS insight_history_marker"

    async def run_marker(times: int) -> None:
        conn = await connect()
        for n in range(times):
            await conn.fetch(marker, n)

    for times in (3, 5):
        await run_marker(times)
        response = await client.post(f"{DB}/snapshots", headers=admin)
        assert response.status_code == 202
        assert await worker.drain() == 1
    report = await get(client, admin, "/queries", order="calls", limit=200)
    assert report["available"] is True
    assert report["snapshots"] == 2
    [row] = [q for q in report["queries"] if "insight_history_marker" in q["query"]]
    assert row["calls"] == 8
    history = await get(client, admin, f"/queries/{row['queryid']}/history")
    assert [p["total_calls"] for p in history["points"]] == [3, 8]
    assert history["points"][1]["calls"] == 5
    assert history["points"][1]["mean_ms"] is not None
    space = await get(client, admin, "/space")
    database = next(g for g in space["growth"] if g["relation"] == "")
    assert len(database["points"]) == 2


async def test_reports_answer_on_this_server(client: AsyncClient, admin: dict[str, str]) -> None:
    io = await get(client, admin, "/io")
    assert io["rows"]
    assert {"read_bytes", "write_bytes", "hits"} <= set(io["rows"][0])
    settings = await get(client, admin, "/settings")
    names = {s["name"] for s in settings["settings"]}
    assert {"shared_buffers", "work_mem", "max_connections", "statement_timeout"} <= names
    assert all(s["why"] for s in settings["settings"])
    replication = await get(client, admin, "/replication")
    assert replication["in_recovery"] is False
    assert (await client.post(f"{DB}/queries/reset", headers=admin)).status_code == 204
    for path in ("/space", "/maintenance", "/queries"):
        await get(client, admin, path)


async def test_inactive_replication_slot_is_reported(
    db_session: AsyncSession, client: AsyncClient, admin: dict[str, str]
) -> None:
    slot = f"insight_test_{uuid.uuid4().hex[:8]}"  # slots are cluster-wide: a unique name
    await db_session.execute(
        text("SELECT pg_create_physical_replication_slot(:slot, true)"), {"slot": slot}
    )
    try:
        overview = await get(client, admin, "/overview")
        slots = check(overview, "replication_slots")
        assert slots["status"] == "warning"
        assert slot in {d["slot_name"] for d in slots["details"]}
        listed = (await get(client, admin, "/replication"))["slots"]
        assert next(s for s in listed if s["slot_name"] == slot)["active"] is False
    finally:
        await db_session.execute(text("SELECT pg_drop_replication_slot(:slot)"), {"slot": slot})


async def test_a_server_with_a_worker_starts_the_periodic_snapshots(
    test_database_url: str, data_dir: Path, connect: Connect
) -> None:
    settings = make_settings(
        test_database_url, data_dir, worker_enabled=True, worker_poll_seconds=0.1
    )
    conn = await connect()
    async with running(settings), running(settings):  # two processes: still one chain

        async def next_run() -> list[asyncpg.Record]:
            taken = await conn.fetchval("SELECT count(*) FROM app.insight_space_snapshots")
            queued: list[asyncpg.Record] = await conn.fetch(
                "SELECT run_at - now() AS wait FROM app.jobs "
                "WHERE kind = 'insight_snapshot' AND status = 'queued'"
            )
            return queued if taken and queued else []

        [queued] = await until(next_run)
        assert queued["wait"].total_seconds() > 60 * 14  # the next one, 15 minutes on
    snapshots_taken = await conn.fetchval(
        "SELECT count(DISTINCT captured_at) FROM app.insight_space_snapshots"
    )
    assert snapshots_taken == 1
