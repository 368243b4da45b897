"""`keel db citus enable` and `status`, on a real coordinator with two workers.

The cluster tests skip when the citus extension isn't built for this PostgreSQL (the
skip says so); the first test needs no Citus: on plain PostgreSQL `enable` refuses with
a clear message.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from keel.jobs import repository as jobs
from keel.migrations import runner
from tests.cli.citus_cluster import SKIP_REASON, CitusCluster, citus_installed
from tests.deploy.support import clean_environ

needs_citus = pytest.mark.skipif(not citus_installed(), reason=SKIP_REASON)
SCOPED = {"app.posts", "app.post_embeddings", "app.documents", "app.imports"}
REFERENCE = {"app.organizations", "app.users", "app.memberships", "app.invitations"}


def keel(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "keel", "db", "citus", *args],
        env=clean_environ() | {"DATABASE_URL": url, "ENVIRONMENT": "testing"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_enable_on_plain_postgresql_fails_with_what_to_do(database_url: str) -> None:
    done = keel(database_url, "enable")
    assert done.returncode == 1
    assert "the citus extension is not installed in this database" in done.stderr
    assert "Traceback" not in done.stderr
    assert keel(database_url, "status").returncode == 1


@pytest.fixture(scope="module")
def cluster() -> Iterator[CitusCluster]:
    if not citus_installed():
        pytest.skip(SKIP_REASON)
    nodes = CitusCluster()
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture(scope="module")
async def citus_url(cluster: CitusCluster) -> str:
    """Keel migrated on the coordinator, then `keel db citus enable` (the real CLI)."""
    url = await cluster.create_database("keel")
    await asyncio.to_thread(runner.upgrade, url)
    done = await asyncio.to_thread(keel, url, "enable", "--json")
    assert done.returncode == 0, done.stderr
    return url


@pytest.fixture
async def conn(cluster: CitusCluster, citus_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(cluster.dsn("keel"))
    try:
        yield connection
    finally:
        await connection.close()


async def new_user(conn: asyncpg.Connection) -> uuid.UUID:
    """An account; the database gives it its personal organization (id = user id)."""
    name = f"u{uuid.uuid4().hex[:12]}"
    user_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO app.users (id, email, username, hashed_password) "
        "VALUES (gen_random_uuid(), $1, $2, 'x') RETURNING id",
        f"{name}@example.com",
        name,
    )
    return user_id


async def new_post(conn: asyncpg.Connection, tenant: uuid.UUID, title: str = "t") -> uuid.UUID:
    post_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO app.posts (id, tenant_id, author_id, title, content) "
        "VALUES (gen_random_uuid(), $1, $1, $2, 'body') RETURNING id",
        tenant,
        title,
    )
    return post_id


async def plan(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    rows = await conn.fetch(f"EXPLAIN {sql}", *args)
    return "\n".join(row[0] for row in rows)


@needs_citus
async def test_enable_distributes_the_scoped_tables_and_replicates_the_shared_ones(
    conn: asyncpg.Connection,
) -> None:
    rows = await conn.fetch(
        "SELECT table_name::text AS name, citus_table_type AS kind, distribution_column, "
        "colocation_id FROM citus_tables"
    )
    kinds = {row["name"]: row["kind"] for row in rows}
    assert {name for name, kind in kinds.items() if kind == "distributed"} == SCOPED
    assert {name for name, kind in kinds.items() if kind == "reference"} == REFERENCE
    assert kinds["app.jobs"] == "local"
    scoped = [row for row in rows if row["name"] in SCOPED]
    assert {row["distribution_column"] for row in scoped} == {"tenant_id"}
    assert len({row["colocation_id"] for row in scoped}) == 1  # colocated


@needs_citus
async def test_enable_again_only_reports_what_is_done(citus_url: str) -> None:
    done = await asyncio.to_thread(keel, citus_url, "enable", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert all(line.startswith("triggers") for line in report["done"])
    assert {line.split(":")[0] for line in report["skipped"]} == SCOPED | REFERENCE | {"app.jobs"}


@needs_citus
async def test_a_tenant_filtered_read_routes_to_one_shard(conn: asyncpg.Connection) -> None:
    tenant = await new_user(conn)
    post = await new_post(conn, tenant)
    sql = "SELECT title FROM app.posts WHERE tenant_id = $1 AND id = $2"
    assert await conn.fetchval(sql, tenant, post) == "t"
    assert "Task Count: 1" in await plan(conn, sql, tenant, post)
    listing = "SELECT id FROM app.posts WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 20"
    assert "Task Count: 1" in await plan(conn, listing, tenant)


@needs_citus
async def test_joins_with_reference_tables_stay_on_the_tenants_shard(
    conn: asyncpg.Connection,
) -> None:
    tenant = await new_user(conn)
    await new_post(conn, tenant, "joined")
    sql = (
        "SELECT p.title, u.username, o.slug FROM app.posts AS p "
        "JOIN app.users AS u ON u.id = p.author_id "
        "JOIN app.organizations AS o ON o.id = p.tenant_id WHERE p.tenant_id = $1"
    )
    row = await conn.fetchrow(sql, tenant)
    assert row is not None
    assert (row["title"], row["slug"]) == ("joined", f"~{row['username']}")
    assert "Task Count: 1" in await plan(conn, sql, tenant)


@needs_citus
async def test_returning_works_on_insert_update_and_delete(conn: asyncpg.Connection) -> None:
    tenant = await new_user(conn)
    post = await new_post(conn, tenant, "before")
    updated = await conn.fetchval(
        "UPDATE app.posts SET title = 'after' WHERE tenant_id = $1 AND id = $2 RETURNING title",
        tenant,
        post,
    )
    assert updated == "after"
    deleted = await conn.fetchval(
        "DELETE FROM app.posts WHERE tenant_id = $1 AND id = $2 RETURNING id", tenant, post
    )
    assert deleted == post


@needs_citus
async def test_hnsw_indexes_exist_on_every_shard(conn: asyncpg.Connection) -> None:
    count_hnsw = (
        "SELECT count(*) FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid "
        "JOIN pg_am AS a ON a.oid = c.relam WHERE i.indrelid = '%s'::regclass "
        "AND a.amname = 'hnsw'"
    )
    for table in ("app.documents", "app.post_embeddings"):
        shards = await conn.fetch(
            "SELECT success, result FROM run_command_on_shards($1, $2)", table, count_hnsw
        )
        assert len(shards) == 32
        assert {(row["success"], row["result"]) for row in shards} == {(True, "1")}


@needs_citus
async def test_json_table_runs_on_a_distributed_table(conn: asyncpg.Connection) -> None:
    tenant = await new_user(conn)
    await conn.execute(
        "INSERT INTO app.documents (id, tenant_id, owner_id, content, metadata) "
        'VALUES (gen_random_uuid(), $1, $1, \'doc\', \'{"tags": ["a", "b"]}\')',
        tenant,
    )
    tags = await conn.fetch(
        "SELECT jt.tag FROM app.documents AS d, "
        "JSON_TABLE(d.metadata, '$.tags[*]' COLUMNS (tag text PATH '$')) AS jt "
        "WHERE d.tenant_id = $1 ORDER BY jt.tag",
        tenant,
    )
    assert [row["tag"] for row in tags] == ["a", "b"]


@needs_citus
async def test_merge_returning_is_not_supported(conn: asyncpg.Connection) -> None:
    tenant = await new_user(conn)
    post = await new_post(conn, tenant)
    staged = "SELECT $1::uuid AS tenant_id, $2::uuid AS id, 'merged' AS title"
    with pytest.raises(asyncpg.PostgresError, match="not yet supported for Citus tables"):
        await conn.fetch(
            f"MERGE INTO app.posts AS p USING ({staged}) AS s "
            "ON p.tenant_id = s.tenant_id AND p.id = s.id "
            "WHEN MATCHED THEN UPDATE SET title = s.title RETURNING p.id",
            tenant,
            post,
        )


@needs_citus
async def test_keels_triggers_run_on_citus(conn: asyncpg.Connection) -> None:
    tenant = await new_user(conn)
    slug = await conn.fetchval("SELECT slug FROM app.organizations WHERE id = $1", tenant)
    assert slug is not None
    assert slug.startswith("~")  # the personal organization
    post = await new_post(conn, tenant)
    payload = await conn.fetchval(
        "SELECT payload FROM app.jobs WHERE kind = 'embed_posts' AND tenant_id = $1", tenant
    )
    assert json.loads(payload) == {"tenant_id": str(tenant), "post_ids": [str(post)]}

    heard: asyncio.Queue[str] = asyncio.Queue()
    await conn.add_listener("keel_viewer", lambda *args: heard.put_nowait(args[3]))
    other = await new_user(conn)
    await conn.execute(
        "INSERT INTO app.memberships (tenant_id, user_id, role) VALUES ($1, $2, 'member')",
        tenant,
        other,
    )
    assert await asyncio.wait_for(heard.get(), 5) == f"user:{other}"
    with pytest.raises(asyncpg.PostgresError, match="would have no owner"):
        await conn.execute(
            "UPDATE app.memberships SET role = 'admin' WHERE tenant_id = $1 AND user_id = $1",
            tenant,
        )
    await conn.execute("DELETE FROM app.users WHERE id = $1", other)
    gone = await conn.fetchval("SELECT count(*) FROM app.organizations WHERE id = $1", other)
    assert gone == 0


@needs_citus
async def test_workers_claim_jobs_from_the_queue_on_the_coordinator(
    conn: asyncpg.Connection, citus_url: str
) -> None:
    tenant = await new_user(conn)
    await new_post(conn, tenant)
    engine = create_async_engine(citus_url, poolclass=NullPool)
    try:
        async with AsyncSession(bind=engine) as session, session.begin():
            claimed = await jobs.claim(session, "test-worker", 1000)
    finally:
        await engine.dispose()
    assert any(job.payload.get("tenant_id") == str(tenant) for job in claimed)


@needs_citus
async def test_status_shows_nodes_shards_and_where_tenants_live(
    conn: asyncpg.Connection, citus_url: str, cluster: CitusCluster
) -> None:
    tenant = await new_user(conn)
    for _ in range(50):  # the largest tenant
        await new_post(conn, tenant)
    done = await asyncio.to_thread(keel, citus_url, "status", "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["version"].startswith("Citus 14")
    roles = sorted((node["role"], node["port"]) for node in found["nodes"])
    workers = sorted(cluster.ports[1:])
    assert roles == [("coordinator", cluster.ports[0])] + [("worker", p) for p in workers]
    posts = [p for p in found["placements"] if p["table"] == "app.posts"]
    assert sorted(p["port"] for p in posts) == workers
    assert sum(p["shards"] for p in posts) == 32
    tables = {t["name"]: t for t in found["tables"]}
    assert tables["app.users"]["kind"] == "reference"
    top = found["tenants"][0]
    assert (top["tenant_id"], top["posts"]) == (str(tenant), 50)
    node_port = await conn.fetchval(
        "SELECT nodeport FROM citus_shards "
        "WHERE shardid = get_shard_id_for_distribution_column('app.posts', $1::uuid)",
        tenant,
    )
    assert top["port"] == node_port
    human = await asyncio.to_thread(keel, citus_url, "status")
    assert human.returncode == 0
    assert "Largest tenants" in human.stdout


@needs_citus
async def test_periodic_jobs_are_queued_once(citus_url: str) -> None:
    engine = create_async_engine(citus_url, poolclass=NullPool)
    try:
        async with AsyncSession(bind=engine) as session, session.begin():
            first = await jobs.enqueue_once(session, "citus_probe", {}, delay_seconds=0)
            again = await jobs.enqueue_once(session, "citus_probe", {}, delay_seconds=0)
    finally:
        await engine.dispose()
    assert first is not None
    assert again is None
