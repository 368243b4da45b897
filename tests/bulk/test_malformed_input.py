"""Malformed import files get a clear 4xx, and never a partial write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from keel.config import Settings
from tests.bulk.helpers import admin_headers, count_users, encode, send
from tests.conftest import make_settings, running
from tests.core.test_json_depth import nested
from tests.users.factory import bearer, make_user, sign_in

GOOD = b"email,username,password\nok1@example.com,okay_one,long enough 1\n"


@pytest.mark.parametrize(
    ("body", "fmt", "detail"),
    [
        (GOOD + b'ok2@example.com,"okay_two"x,long enough\n', "csv", "Line 3: malformed CSV"),
        (GOOD + b'ok2@example.com,"okay_two,long enough\n', "csv", "Line 3: a quoted field"),
        (GOOD + b"ok2@example.com,okay_\xff\xfe,long enough\n", "csv", "Line 3 is not valid UTF-8"),
        (b"email,password\nok1@example.com,long enough\n", "csv", "missing required columns"),
        (b"email,username,password,shoe_size\n", "csv", "unknown columns shoe_size"),
        (b"email,username,email\n", "csv", "columns named twice: email"),
        (b"", "csv", "empty"),
        (b"", "ndjson", "empty"),
        (b"  \n\n", "ndjson", "empty"),
        (b"", "json", "empty"),
        (b'{"email": "a@example.com"}', "json", "Expected a JSON array"),
        (b'[{"email": "a@example.com"}, {"ema', "json", "Malformed JSON after item 1"),
        (b"[\xff]", "json", "Malformed JSON"),
    ],
)
async def test_a_broken_file_is_refused_whole(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, body: bytes, fmt: str, detail: str
) -> None:
    admin = await admin_headers(app, db_session, client)
    before = await count_users(db_session)

    response = await send(client, "users", body, fmt, admin, atomic=False)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"]
    assert await count_users(db_session) == before


async def test_row_level_problems_are_reported_per_line(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin = await admin_headers(app, db_session, client)
    before = await count_users(db_session)
    body = (
        GOOD
        + b"ok2@example.com,okay_two\n"  # too few fields
        + b'"multi\nline@example.com",multi_line,long enough 3\n'  # a quoted newline
        + b"ok4@example.com,okay_four,long enough 4\n"
    )

    response = await send(client, "users", body, "csv", admin, atomic=False)

    report = response.json()
    assert response.status_code == 200, response.text
    assert [(r["line"], r["field"]) for r in report["rejected"]] == [(3, None), (4, "email")]
    assert report["rejected"][0]["reason"] == "expected 3 fields, found 2"
    assert report["inserted"] == 2  # lines 2 and 6: line numbers count physical lines
    assert await count_users(db_session) == before + 2


async def test_ndjson_invalid_utf8_and_wrong_types_reject_only_their_line(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin = await admin_headers(app, db_session, client)
    before = await count_users(db_session)
    good = encode(
        [{"email": "u1@example.com", "username": "user_one", "password": "long enough"}], "ndjson"
    )
    body = (
        good
        + b'{"email": "u2@example.com", "username": "us\xff", "password": "long enough"}\n'
        + b'{"email": "u3@example.com", "username": 42, "password": "long enough"}\n'
        + b'{"email": "u4@example.com", "username": "user_4", "password": "long enough",'
        + b' "shoe_size": 44}\n'
    )

    response = await send(client, "users", body, "ndjson", admin, atomic=False)

    report = response.json()
    assert [(r["line"], r["field"], r["reason"]) for r in report["rejected"]] == [
        (2, None, "invalid UTF-8"),
        (3, "username", "Input should be a valid string"),
        (4, "shoe_size", "Extra inputs are not permitted"),
    ]
    assert await count_users(db_session) == before + 1


async def test_huge_lines(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, settings: Settings
) -> None:
    admin = await admin_headers(app, db_session, client)
    before = await count_users(db_session)
    huge = b"x" * (settings.import_max_line_bytes + 10)
    ndjson = (
        b'{"full_name": "'
        + huge
        + b'"}\n'
        + encode(
            [{"email": "u1@example.com", "username": "user_one", "password": "long enough"}],
            "ndjson",
        )
    )

    as_ndjson = await send(client, "users", ndjson, "ndjson", admin, atomic=False)
    as_csv = await send(client, "users", GOOD + huge + b"\n", "csv", admin, atomic=False)

    assert as_ndjson.status_code == 200
    assert as_ndjson.json()["rejected"][0]["line"] == 1
    assert "longer than" in as_ndjson.json()["rejected"][0]["reason"]
    assert as_ndjson.json()["inserted"] == 1
    assert as_csv.status_code == 422
    assert "Line 3 is longer than" in as_csv.json()["detail"]
    assert await count_users(db_session) == before + 1


async def test_an_unknown_media_type_is_415(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin = await admin_headers(app, db_session, client)
    response = await send(client, "users", GOOD, "application/xml", admin)
    assert response.status_code == 415
    assert "text/csv" in response.json()["detail"]


async def test_row_and_byte_caps_answer_413_and_write_nothing(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url, tmp_path, import_max_rows=2, import_max_bytes=4096, rate_limit_enabled=False
    )
    async with running(settings) as http:
        app: FastAPI = http._transport.app  # type: ignore[attr-defined]
        async with app.state.db.sessionmaker() as session:
            admin = await make_user(app, session, admin=True)
            await session.commit()
        headers = bearer(await sign_in(http, admin.username))
        rows = [
            {"email": f"cap{i}@example.com", "username": f"cap_{i}", "password": "long enough"}
            for i in range(3)
        ]
        async with app.state.db.sessionmaker() as session:
            before = await count_users(session)

        too_many = await send(http, "users", encode(rows, "ndjson"), "ndjson", headers)
        too_big = await send(http, "users", GOOD + b"#" * 5000, "csv", headers)

        async with app.state.db.sessionmaker() as session:
            after = await count_users(session)
            await session.delete(await session.get(type(admin), admin.id))
            await session.commit()
    assert too_many.status_code == 413
    assert "capped at 2 rows" in too_many.json()["detail"]
    assert too_big.status_code == 413
    assert after == before


async def test_an_import_past_its_statement_timeout_is_a_503_and_writes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url, tmp_path, import_statement_timeout_ms=1, rate_limit_enabled=False
    )
    async with running(settings) as http:
        app: FastAPI = http._transport.app  # type: ignore[attr-defined]
        async with app.state.db.sessionmaker() as session:
            admin = await make_user(app, session, admin=True)
            await session.commit()
        headers = bearer(await sign_in(http, admin.username))
        hashed = app.state.services.passwords.hash_sync("long enough")
        rows = [
            {"email": f"slow{i}@example.com", "username": f"slow_{i}", "hashed_password": hashed}
            for i in range(3000)
        ]
        async with app.state.db.sessionmaker() as session:
            before = await count_users(session)

        response = await send(http, "users", encode(rows, "ndjson"), "ndjson", headers)

        async with app.state.db.sessionmaker() as session:
            after = await count_users(session)
            await session.delete(await session.get(type(admin), admin.id))
            await session.commit()
    assert response.status_code == 503, response.text
    assert response.json()["type"] == "urn:keel:problem:statement-timeout"
    assert after == before


async def test_a_csv_metadata_cell_nested_too_deep_rejects_its_row(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin = await admin_headers(app, db_session, client)
    before = await count_users(db_session)
    deep = json.dumps({"k": nested(300)}).replace('"', '""')
    body = GOOD.replace(b"\n", b",metadata\n", 1).replace(b"long enough 1\n", b"long enough 1,{}\n")
    body += f'deep@example.com,deep_cell,long enough 2,"{deep}"\n'.encode()

    response = await send(client, "users", body, "csv", admin, atomic=False)

    assert response.status_code == 200, response.text
    report = response.json()
    assert [(r["line"], r["field"]) for r in report["rejected"]] == [(3, "metadata")]
    assert "nested deeper than 32 levels" in report["rejected"][0]["reason"]
    assert await count_users(db_session) == before + 1
