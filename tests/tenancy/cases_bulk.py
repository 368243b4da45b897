"""Walk cases for the repositories of imports: `keel.bulk.posts_repository` (checks and
both ways of landing posts) and `keel.bulk.history_repository` (import records).

Each case stages rows carrying organization B's post ids as organization A: a match
inside A is found or changed, B's rows never are (their ids become new posts of A, which
is why the cases report A's rows and any row of B that changed, not every id they saw).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
from sqlalchemy import text

from keel.bulk import history_repository, posts_repository, staging
from keel.bulk.schemas import Kind, OnConflict
from keel.core.db import driver_connection
from keel.core.ids import uuid7
from tests.tenancy.walk import World, case


@asynccontextmanager
async def _staged(world: World, title: str) -> AsyncIterator[tuple[asyncpg.Connection, Any]]:
    """A transaction with a staging table holding A's and B's post ids, by A's owner."""
    conn = await driver_connection(world.session)
    async with conn.transaction():
        table = await staging.create(conn, Kind.POSTS)
        ids = world.a.rows["posts"] + world.b.rows["posts"]
        author = world.a.actor.user_id
        rows = [(n, i, title, "", False, author, None, None, None) for n, i in enumerate(ids, 1)]
        await staging.copy_rows(conn, table, rows)
        yield conn, table


async def _changed(world: World, title: str) -> set[UUID]:
    """A's rows now titled `title`, and any row of B that is (none, if scoped)."""
    rows = await world.session.execute(
        text(
            "SELECT id FROM app.posts WHERE title = :title"
            " AND (tenant_id = :b OR id = ANY(CAST(:a AS uuid[])))"
        ),
        {"title": title, "b": world.b.id, "a": world.a.rows["posts"]},
    )
    return {row[0] for row in rows}


@case(posts_repository.check_posts)
async def _check_posts(world: World) -> set[UUID]:
    async with _staged(world, "checked") as (conn, table):
        findings = await posts_repository.check_posts(conn, table, OnConflict.ERROR, world.a.id)
        ids = world.a.rows["posts"] + world.b.rows["posts"]
        return {ids[line - 1] for line, _, _ in findings}


@case(posts_repository.merge_posts)
async def _merge_posts(world: World) -> set[UUID]:
    async with _staged(world, "merged") as (conn, table):
        await posts_repository.merge_posts(conn, table, OnConflict.UPDATE, world.a.id)
    return await _changed(world, "merged")


@case(posts_repository.upsert_posts)
async def _upsert_posts(world: World) -> set[UUID]:
    async with _staged(world, "upserted") as (conn, table):
        await posts_repository.upsert_posts(conn, table, OnConflict.UPDATE, world.a.id)
    return await _changed(world, "upserted")


async def _record(world: World, tenant_id: UUID) -> UUID:
    record_id = uuid7()
    conn = await driver_connection(world.session)
    values: dict[str, Any] = {
        "tenant_id": tenant_id,
        "id": record_id,
        "actor_id": None,
        "kind": "posts",
        "format": "json",
        "on_conflict": "error",
        "atomic": True,
        "strategy": "merge",
        "status": "committed",
        "rows": 1,
        "inserted": 1,
        "updated": 0,
        "unchanged": 0,
        "skipped": 0,
        "rejected_count": 0,
        "rejected": [],
        "rejected_truncated": False,
        "created_at": datetime.now(UTC),
    }
    await history_repository.insert_record(conn, values)
    return record_id


@case(history_repository.insert_record)
async def _insert_record(world: World) -> set[UUID]:
    mine = await _record(world, world.a.id)
    world.b.rows["imports"] = [await _record(world, world.b.id)]
    rows = await world.session.execute(
        text("SELECT id FROM app.imports WHERE tenant_id = :a"), {"a": world.a.id}
    )
    found = {row[0] for row in rows}
    assert found == {mine}
    return found


@case(history_repository.list_records)
async def _list_records(world: World) -> set[UUID]:
    await _record(world, world.a.id)
    world.b.rows["imports"] = [await _record(world, world.b.id)]
    rows = await history_repository.list_records(world.session, world.a.id, None, 100)
    return {row.id for row in rows}


@case(history_repository.get_record)
async def _get_record(world: World) -> set[UUID]:
    mine = await _record(world, world.a.id)
    world.b.rows["imports"] = [await _record(world, world.b.id)]
    found = set()
    for record_id in [mine, *world.b.rows["imports"]]:
        row = await history_repository.get_record(world.session, world.a.id, record_id)
        if row is not None:
            found.add(row.id)
    return found
