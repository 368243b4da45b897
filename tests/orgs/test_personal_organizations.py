"""Every account has its personal organization, however it was written (migration 0013)."""

from __future__ import annotations

import asyncio
import io
import uuid

import asyncpg
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from keel.migrations import runner
from tests.bulk.helpers import admin_headers, encode, send
from tests.conftest import MakeDatabase, asyncpg_dsn

PERSONAL = """
    SELECT u.username, o.slug, m.role
    FROM app.users AS u
    JOIN app.memberships AS m ON m.user_id = u.id
    JOIN app.organizations AS o ON o.id = m.tenant_id AND o.personal
    WHERE u.username = ANY($1::text[])
    ORDER BY u.username
"""


def _owned(*usernames: str) -> list[tuple[str, str, str]]:
    return [(name, f"~{name.lower()}", "owner") for name in sorted(usernames)]


async def _insert(conn: asyncpg.Connection, *usernames: str) -> None:
    await conn.execute(
        "INSERT INTO app.users (id, email, username, hashed_password)"
        " SELECT gen_random_uuid(), name || '@example.com', name, 'x' FROM unnest($1::text[]) name",
        list(usernames),
    )


async def test_insert_copy_and_merge_each_give_a_personal_organization(
    test_database_url: str,
) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(test_database_url))
    try:
        await _insert(conn, "Ins1", "ins2")
        lines = "".join(f"{uuid.uuid4()},{n}@example.com,{n},x\n" for n in ("cp1", "cp2"))
        await conn.copy_to_table(  # text COPY, as `keel seed` writes users
            "users",
            schema_name="app",
            columns=["id", "email", "username", "hashed_password"],
            source=io.BytesIO(lines.encode()),
            format="csv",
        )
        await conn.execute(
            """
            MERGE INTO app.users AS u
            USING (VALUES ('mg1')) AS s (name) ON u.username = s.name
            WHEN NOT MATCHED THEN INSERT (id, email, username, hashed_password)
                VALUES (gen_random_uuid(), s.name || '@example.com', s.name, 'x')
            """
        )
        names = ["Ins1", "ins2", "cp1", "cp2", "mg1"]
        rows = await conn.fetch(PERSONAL, names)
        assert [tuple(row) for row in rows] == _owned(*names)
    finally:
        await conn.close()


async def test_bulk_imported_accounts_get_their_personal_organization(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, test_database_url: str
) -> None:
    admin = await admin_headers(app, db_session, client)
    rows = [
        {"email": f"bulk{i}@example.com", "username": f"bulk{i}", "password": f"pass-bulk-{i}-long"}
        for i in range(3)
    ]
    response = await send(client, "users", encode(rows, "ndjson"), "ndjson", admin)
    assert response.status_code == 200, response.text
    conn = await asyncpg.connect(asyncpg_dsn(test_database_url))
    try:
        found = await conn.fetch(PERSONAL, [row["username"] for row in rows])
    finally:
        await conn.close()
    assert [tuple(row) for row in found] == _owned("bulk0", "bulk1", "bulk2")


async def test_a_deleted_account_takes_its_personal_organization_along(
    test_database_url: str,
) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(test_database_url))
    try:
        await _insert(conn, "gone", "stays")
        await conn.execute("DELETE FROM app.users WHERE username = 'gone'")
        slugs = await conn.fetch("SELECT slug FROM app.organizations WHERE personal ORDER BY slug")
        assert "~gone" not in [row["slug"] for row in slugs]
        assert "~stays" in [row["slug"] for row in slugs]
        await _insert(conn, "gone")  # the name is free again (a re-seed reuses usernames)
        assert [tuple(row) for row in await conn.fetch(PERSONAL, ["gone"])] == _owned("gone")
    finally:
        await conn.close()


async def test_the_migration_backfills_accounts_written_without_one(
    make_database: MakeDatabase,
) -> None:
    url = await make_database()
    await asyncio.to_thread(runner.upgrade, url, "0012")
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await _insert(conn, "seeded1", "seeded2")  # as `keel seed` did before 0013
        assert await conn.fetch(PERSONAL, ["seeded1", "seeded2"]) == []
        await asyncio.to_thread(runner.upgrade, url)
        rows = await conn.fetch(PERSONAL, ["seeded1", "seeded2"])
        assert [tuple(row) for row in rows] == _owned("seeded1", "seeded2")
    finally:
        await conn.close()
