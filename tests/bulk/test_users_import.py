"""`POST /admin/import/users`: formats, conflicts, atomicity, passwords; each test runs with
both ways of landing rows (IMPORT_STRATEGY merge, and upsert for Citus)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import bcrypt
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from keel.auth.models import TokenFamily
from keel.config import Settings
from keel.users.models import User
from tests.bulk.helpers import admin_headers, count_users, encode, send
from tests.conftest import MakeDatabase, asyncpg_dsn, make_settings, running
from tests.users.factory import PASSWORD, bearer, make_user, sign_in, signed_in

FORMATS = ["json", "ndjson", "csv"]


@pytest.fixture(params=["merge", "upsert"])
def settings(request: pytest.FixtureRequest, test_database_url: str, data_dir: Path) -> Settings:
    return make_settings(test_database_url, data_dir, import_strategy=request.param)


BCRYPT_OF_PASSWORD = bcrypt.hashpw(b"password", bcrypt.gensalt(4)).decode()


def people(n: int, prefix: str = "imp", **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "email": f"{prefix}{i}@example.com",
            "username": f"{prefix}{i}",
            "password": f"pass-{prefix}-{i}-long",
            **extra,
        }
        for i in range(1, n + 1)
    ]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_each_format_imports_every_row(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, fmt: str
) -> None:
    admin = await admin_headers(app, db_session, client)
    before = await count_users(db_session)
    rows = people(3, full_name="Imported Person", is_verified=True, metadata={"team": "x"})

    response = await send(client, "users", encode(rows, fmt), fmt, admin)

    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["inserted"], report["updated"], report["rejected_count"]) == (3, 0, 0)
    assert report["committed"] is True
    assert report["rows"] == 3
    assert await count_users(db_session) == before + 3
    stored = await db_session.scalar(select(User).where(col(User.username) == "imp2"))
    assert stored is not None
    assert (stored.full_name, stored.is_verified, stored.metadata_) == (
        "Imported Person",
        True,
        {"team": "x"},
    )
    assert stored.hashed_password.startswith("$argon2id$")
    # The imported account works: it can sign in with its plain password.
    await sign_in(client, "imp2", "pass-imp-2-long")


async def test_passwords_and_hashes_never_appear_in_the_answer(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin = await admin_headers(app, db_session, client)
    rows = [
        *people(1),
        {"email": "h@example.com", "username": "hashed1", "hashed_password": BCRYPT_OF_PASSWORD},
        {"email": "bad@example.com", "username": "badpw", "password": "short"},
    ]
    response = await send(client, "users", encode(rows, "ndjson"), "ndjson", admin, atomic=False)

    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == 2
    for secret in ("pass-imp-1-long", BCRYPT_OF_PASSWORD, "short", "$argon2"):
        assert secret not in response.text
    # A bcrypt hash is imported as is and verifies.
    await sign_in(client, "hashed1", "password")


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"email": "not-an-email", "username": "ok_name", "password": "long enough"}, "email"),
        ({"email": "a@example.com", "username": "x", "password": "long enough"}, "username"),
        (
            {
                "email": "a@example.com",
                "username": "ok_name",
                "password": "long enough",
                "is_active": "maybe",
            },
            "is_active",
        ),
        (
            {"email": "a@example.com", "username": "ok_name", "hashed_password": "$1$md5"},
            "hashed_password",
        ),
        ({"email": "a@example.com", "username": "ok_name"}, None),
        (
            {
                "email": "a@example.com",
                "username": "ok_name",
                "password": "long enough",
                "created_at": "2024-01-01T00:00:00",
            },
            "created_at",
        ),
    ],
)
async def test_invalid_rows_are_rejected_with_their_field(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, row: dict[str, Any], field: str
) -> None:
    admin = await admin_headers(app, db_session, client)
    before = await count_users(db_session)
    rows = [*people(1), row]

    response = await send(client, "users", encode(rows, "json"), "json", admin)

    assert response.status_code == 422
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["report"]["committed"] is False
    assert problem["report"]["rejected"] == [
        {
            "line": None,
            "index": 2,
            "field": field,
            "reason": problem["report"]["rejected"][0]["reason"],
        }
    ]
    assert await count_users(db_session) == before  # atomic: the valid row did not land either


async def test_non_atomic_import_keeps_the_good_rows(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin = await admin_headers(app, db_session, client)
    before = await count_users(db_session)
    body = encode(people(2), "ndjson") + b'{"email": "broken"\n' + b"[1, 2]\n"

    response = await send(client, "users", body, "ndjson", admin, atomic=False)

    assert response.status_code == 200, response.text
    report = response.json()
    assert report["inserted"] == 2
    assert report["rows"] == 4
    assert [(r["line"], r["reason"]) for r in report["rejected"]] == [
        (3, "invalid JSON"),
        (4, "expected a JSON object"),
    ]
    assert await count_users(db_session) == before + 2


async def test_duplicates_inside_the_file_are_rejected(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin = await admin_headers(app, db_session, client)
    before = await count_users(db_session)
    rows = people(2)
    rows.append({**people(1, "other")[0], "email": "IMP1@example.com"})  # email, any case
    rows.append({**people(1, "third")[0], "username": "Imp2"})  # username, any case

    response = await send(client, "users", encode(rows, "csv"), "csv", admin, atomic=False)

    report = response.json()
    assert report["inserted"] == 2
    assert [(r["line"], r["field"]) for r in report["rejected"]] == [(4, "email"), (5, "username")]
    assert "first on row 2" in report["rejected"][0]["reason"]
    assert await count_users(db_session) == before + 2


@pytest.mark.parametrize("mode", ["skip", "update", "error"])
async def test_each_conflict_mode(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, mode: str
) -> None:
    admin = await admin_headers(app, db_session, client)
    existing = await make_user(app, db_session, email="old@example.com", username="old_name")
    before = await count_users(db_session)
    rows = [
        {
            "email": "OLD@example.com",
            "username": "old_name",
            "password": "new password!",
            "full_name": "Renamed",
        },
        *people(1, "fresh"),
    ]

    response = await send(
        client, "users", encode(rows, "json"), "json", admin, on_conflict=mode, atomic=False
    )

    assert response.status_code == 200, response.text
    report = response.json()
    counts = (report["inserted"], report["updated"], report["skipped"], report["rejected_count"])
    await db_session.refresh(existing)
    assert await count_users(db_session) == before + 1
    if mode == "skip":
        assert counts == (1, 0, 1, 0)
        assert existing.full_name is None
    elif mode == "update":
        assert counts == (1, 1, 0, 0)
        assert existing.full_name == "Renamed"
        assert existing.email == "OLD@example.com"
    else:
        assert counts == (1, 0, 0, 1)
        assert report["rejected"][0]["reason"] == "an account with this email already exists"
        assert existing.full_name is None


async def test_update_with_identical_rows_changes_nothing(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin = await admin_headers(app, db_session, client)
    rows = [
        {
            "email": "same@example.com",
            "username": "same_name",
            "hashed_password": BCRYPT_OF_PASSWORD,
        }
    ]
    first = await send(client, "users", encode(rows, "json"), "json", admin)
    again = await send(client, "users", encode(rows, "json"), "json", admin, on_conflict="update")

    assert first.json()["inserted"] == 1
    assert (again.json()["updated"], again.json()["unchanged"]) == (0, 1)


async def test_username_of_another_account_is_rejected_in_every_mode(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin = await admin_headers(app, db_session, client)
    await make_user(app, db_session, email="a@example.com", username="alice")
    await make_user(app, db_session, email="b@example.com", username="bobby")
    before = await count_users(db_session)
    rows = [{"email": "a@example.com", "username": "BOBBY", "password": "long enough"}]

    for mode in ("skip", "update", "error"):
        response = await send(
            client, "users", encode(rows, "json"), "json", admin, on_conflict=mode
        )
        assert response.status_code == 422, (mode, response.text)
        assert response.json()["report"]["rejected"][0]["field"] == "username"
    assert await count_users(db_session) == before


async def test_a_username_match_counts_as_a_conflict(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    """The username is a unique key too: matching only it is a conflict, not a new row."""
    admin = await admin_headers(app, db_session, client)
    user = await make_user(app, db_session, email="first@example.com", username="carol")
    rows = [{"email": "second@example.com", "username": "Carol", "password": "long enough"}]

    skipped = await send(client, "users", encode(rows, "json"), "json", admin, on_conflict="skip")
    updated = await send(client, "users", encode(rows, "json"), "json", admin, on_conflict="update")

    assert skipped.json()["skipped"] == 1
    assert updated.json()["updated"] == 1
    await db_session.refresh(user)
    assert (user.email, user.username) == ("second@example.com", "Carol")


async def test_an_imported_password_change_ends_the_accounts_sessions(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin = await admin_headers(app, db_session, client)
    user, headers = await signed_in(app, db_session, client)
    rows = [{"email": user.email, "username": user.username, "password": "a brand new one"}]

    response = await send(
        client, "users", encode(rows, "json"), "json", admin, on_conflict="update"
    )

    assert response.json()["updated"] == 1
    families = (
        await db_session.scalars(select(TokenFamily).where(col(TokenFamily.user_id) == user.id))
    ).all()
    assert families
    assert all(f.revoked_reason == "import" for f in families)
    assert (await client.get("/api/v1/users/me", headers=headers)).status_code == 401
    assert PASSWORD != "a brand new one"
    username = user.username
    db_session.expire_all()  # the test shares one session with the app; requests don't
    await sign_in(client, username, "a brand new one")


async def test_only_admins_may_import(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, user_headers = await signed_in(app, db_session, client)
    before = await count_users(db_session)
    body = encode(people(1), "json")

    assert (await send(client, "users", body, "json", user_headers)).status_code == 403
    assert (await send(client, "users", body, "json", {})).status_code == 401
    assert await count_users(db_session) == before


async def test_a_second_import_in_one_transaction_works(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    """The staging table is dropped after each import, not only at commit."""
    admin = await admin_headers(app, db_session, client)
    first = await send(client, "users", encode(people(1, "one"), "json"), "json", admin)
    second = await send(client, "users", encode(people(1, "two"), "json"), "json", admin)
    assert (first.status_code, second.status_code) == (200, 200)


async def test_a_conflict_appearing_mid_import_is_a_409_and_writes_nothing(
    make_database: MakeDatabase, tmp_path: Path
) -> None:
    """Another session takes an imported email between the checks and the MERGE."""
    url = await make_database(migrated=True)
    settings = make_settings(url, tmp_path, rate_limit_enabled=False)
    async with running(settings) as http:
        app: FastAPI = http._transport.app  # type: ignore[attr-defined]
        async with app.state.db.sessionmaker() as session:
            admin = await make_user(app, session, admin=True)
            await session.commit()
        headers = bearer(await sign_in(http, admin.username))
        rival = await asyncpg.connect(asyncpg_dsn(url))
        try:
            rival_tx = rival.transaction()
            await rival_tx.start()
            await rival.execute(
                "INSERT INTO app.users (id, email, username, hashed_password) "
                "VALUES (gen_random_uuid(), 'race@example.com', 'rival_user', 'x')"
            )
            rows = [
                *people(3),
                {"email": "race@example.com", "username": "racer", "password": "long enough"},
            ]
            request = asyncio.create_task(
                send(http, "users", encode(rows, "json"), "json", headers)
            )
            await _until_waiting_on_a_lock(rival)
            await rival_tx.commit()
            response = await request
            imported = await rival.fetchval(
                "SELECT count(*) FROM app.users WHERE email LIKE 'imp%'"
            )
        finally:
            await rival.close()
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert imported == 0


async def _until_waiting_on_a_lock(conn: asyncpg.Connection) -> None:
    """Wait until the import's MERGE blocks on the rival's uncommitted row."""
    for _ in range(200):
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'keel' "
            "AND wait_event_type = 'Lock'"
        )
        if waiting:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the import never waited on the rival's row")
