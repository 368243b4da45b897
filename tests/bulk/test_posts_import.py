"""`POST /admin/import/posts` and `POST /admin/import/json` (JSON_TABLE)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from keel.core.ids import uuid7
from keel.posts.models import Post
from tests.bulk.helpers import admin_headers, count_posts, encode, send
from tests.users.factory import make_user

FORMATS = ["json", "ndjson", "csv"]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_posts_name_their_author_by_id_username_or_email(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, fmt: str
) -> None:
    admin = await admin_headers(app, db_session, client)
    author = await make_user(app, db_session, email="writer@example.com", username="writer")
    before = await count_posts(db_session)
    rows: list[dict[str, Any]] = [
        {"title": "By id", "content": "a", "author_id": str(author.id)},
        {"title": "By name", "content": "b", "author_username": "WRITER"},
        {
            "title": "By email",
            "content": "c",
            "author_email": "Writer@example.com",
            "is_published": True,
            "created_at": "2024-02-03T04:05:06Z",
        },
    ]
    if fmt == "csv":  # CSV rows share one header: every row has every column
        keys = [
            "title",
            "content",
            "author_id",
            "author_username",
            "author_email",
            "is_published",
            "created_at",
        ]
        rows = [{key: row.get(key, "") for key in keys} for row in rows]

    response = await send(client, "posts", encode(rows, fmt), fmt, admin)

    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == 3
    assert await count_posts(db_session) == before + 3
    posts = (await db_session.scalars(select(Post).where(col(Post.author_id) == author.id))).all()
    assert sorted(p.title for p in posts) == ["By email", "By id", "By name"]
    dated = next(p for p in posts if p.title == "By email")
    assert dated.is_published
    assert dated.created_at is not None
    assert dated.created_at.isoformat() == "2024-02-03T04:05:06+00:00"


async def test_unknown_authors_and_duplicate_ids_are_rejected(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin = await admin_headers(app, db_session, client)
    author = await make_user(app, db_session)
    before = await count_posts(db_session)
    post_id = str(uuid7())
    rows = [
        {"id": post_id, "title": "One", "author_id": str(author.id)},
        {"id": post_id, "title": "Again", "author_id": str(author.id)},
        {"title": "Ghost", "author_username": "nobody_here"},
        {"title": "Ghost 2", "author_id": str(uuid7())},
        {"title": "   ", "author_id": str(author.id)},
        {"title": "Both", "author_id": str(author.id), "author_username": "x"},
    ]

    response = await send(client, "posts", encode(rows, "ndjson"), "ndjson", admin, atomic=False)

    report = response.json()
    assert [(r["line"], r["field"]) for r in report["rejected"]] == [
        (2, "id"),
        (3, "author_username"),
        (4, "author_id"),
        (5, "title"),
        (6, None),
    ]
    assert report["inserted"] == 1
    assert await count_posts(db_session) == before + 1


@pytest.mark.parametrize("mode", ["skip", "update", "error"])
async def test_conflict_modes_on_post_ids(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, mode: str
) -> None:
    admin = await admin_headers(app, db_session, client)
    author = await make_user(app, db_session)
    post_id = uuid7()
    first = [{"id": str(post_id), "title": "Original", "author_id": str(author.id)}]
    await send(client, "posts", encode(first, "json"), "json", admin)
    before = await count_posts(db_session)
    rows = [
        {"id": str(post_id), "title": "Changed", "author_id": str(author.id)},
        {"title": "New", "author_id": str(author.id)},
    ]

    response = await send(
        client, "posts", encode(rows, "json"), "json", admin, on_conflict=mode, atomic=False
    )

    report = response.json()
    stored = await db_session.scalar(
        select(col(Post.title))
        .where(col(Post.id) == post_id)
        .execution_options(populate_existing=True)
    )
    assert await count_posts(db_session) == before + 1
    expected = {
        "skip": (1, 0, 1, 0, "Original"),
        "update": (1, 1, 0, 0, "Changed"),
        "error": (1, 0, 0, 1, "Original"),
    }[mode]
    assert (
        report["inserted"],
        report["updated"],
        report["skipped"],
        report["rejected_count"],
        stored,
    ) == expected


async def test_imported_posts_are_searchable(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin = await admin_headers(app, db_session, client)
    author = await make_user(app, db_session)
    rows = [
        {
            "title": "Zeppelins over Lisbon",
            "content": "airships",
            "is_published": True,
            "author_id": str(author.id),
        }
    ]
    await send(client, "posts", encode(rows, "json"), "json", admin)

    found = await client.get("/api/v1/search/posts", params={"q": "zeppelin"}, headers=admin)

    assert [hit["title"] for hit in found.json()["items"]] == ["Zeppelins over Lisbon"]


# --- JSON_TABLE -------------------------------------------------------------------------

FEED = {
    "source": "feed",
    "data": {
        "items": [
            {"headline": "First", "body": {"text": "one"}, "by": "jt_writer", "live": True},
            {"headline": "Second", "body": {"text": "two"}, "by": "jt_writer", "live": False},
        ]
    },
}
COLUMNS = {
    "title": "$.headline",
    "content": "$.body.text",
    "author_username": "$.by",
    "is_published": "$.live",
}


async def json_import(
    client: AsyncClient, headers: dict[str, str], body: dict[str, Any], **params: Any
) -> Any:
    params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}
    return await client.post("/api/v1/admin/import/json", json=body, headers=headers, params=params)


async def test_json_table_shreds_a_nested_document(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin = await admin_headers(app, db_session, client)
    author = await make_user(app, db_session, username="jt_writer")
    before = await count_posts(db_session)

    response = await json_import(
        client, admin, {"document": FEED, "rows": "$.data.items[*]", "columns": COLUMNS}
    )

    assert response.status_code == 200, response.text
    assert response.json()["format"] == "json_table"
    assert response.json()["inserted"] == 2
    assert await count_posts(db_session) == before + 2
    posts = (await db_session.scalars(select(Post).where(col(Post.author_id) == author.id))).all()
    assert sorted((p.title, p.content, p.is_published) for p in posts) == [
        ("First", "one", True),
        ("Second", "two", False),
    ]
    assert all(UUID(str(p.id)).version == 7 for p in posts)


async def test_json_table_update_by_id(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin = await admin_headers(app, db_session, client)
    await make_user(app, db_session, username="jt_writer")
    post_id = str(uuid7())
    doc = {"posts": [{"uuid": post_id, "headline": "v1", "by": "jt_writer"}]}
    columns = {"id": "$.uuid", "title": "$.headline", "author_username": "$.by"}
    body = {"document": doc, "rows": "$.posts[*]", "columns": columns}
    await json_import(client, admin, body)
    doc["posts"][0]["headline"] = "v2"

    response = await json_import(client, admin, body, on_conflict="update")

    assert response.json()["updated"] == 1
    title = await db_session.scalar(
        select(col(Post.title))
        .where(col(Post.id) == UUID(post_id))
        .execution_options(populate_existing=True)
    )
    assert title == "v2"


@pytest.mark.parametrize(
    ("rows", "columns", "field"),
    [
        ("$.data.items[*", COLUMNS, "rows"),
        ("$.data.items[*]", {**COLUMNS, "title": "$.headline ++"}, "title"),
        ("$.data.nothing[*]", COLUMNS, "rows"),
        # Variables parse, but imports define none: JSON_TABLE used to fail with a 500.
        ("$.data.items[*] ? (@.live == $x)", COLUMNS, "rows"),
        ("$.data.items[*]", {**COLUMNS, "title": "$x"}, "title"),
        ("$.data.items[*]", {**COLUMNS, "content": '$.body ? (@.text != $"a b").text'}, "content"),
    ],
)
async def test_json_table_bad_paths_name_the_path(
    app: FastAPI,
    db_session: AsyncSession,
    client: AsyncClient,
    rows: str,
    columns: dict[str, str],
    field: str,
) -> None:
    admin = await admin_headers(app, db_session, client)
    before = await count_posts(db_session)

    response = await json_import(
        client, admin, {"document": FEED, "rows": rows, "columns": columns}
    )

    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["field"] == field
    assert problem["path"] in problem["detail"]
    assert await count_posts(db_session) == before


async def test_json_table_dollar_signs_in_string_literals_are_not_variables(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin = await admin_headers(app, db_session, client)
    await make_user(app, db_session, username="jt_writer")
    rows = '$.data.items[*] ? (@.headline != "$x" && @.headline != "q\\"$\\"y")'
    body = {"document": FEED, "rows": rows, "columns": COLUMNS}

    response = await json_import(client, admin, body)

    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == 2


async def test_json_table_type_mismatch_names_the_path(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin = await admin_headers(app, db_session, client)
    await make_user(app, db_session, username="jt_writer")
    before = await count_posts(db_session)
    items = [
        {"headline": "Fine", "by": "jt_writer", "live": True},
        {"headline": "Bad flag", "by": "jt_writer", "live": "sometimes"},
        {"headline": {"nested": "object"}, "by": "jt_writer", "live": False},
        {"headline": "x" * 300, "by": "jt_writer"},
    ]
    body = {
        "document": {"items": items},
        "rows": "$.items[*]",
        "columns": {"title": "$.headline", "author_username": "$.by", "is_published": "$.live"},
    }

    atomic = await json_import(client, admin, body)
    partial = await json_import(client, admin, body, atomic=False)

    assert atomic.status_code == 422
    rejected = atomic.json()["report"]["rejected"]
    assert [(r["index"], r["field"], r["reason"]) for r in rejected] == [
        (2, "is_published", "expected a boolean at $.live"),
        (3, "title", "expected a string at $.headline"),
        (4, "title", "longer than 255 characters"),
    ]
    assert partial.json()["inserted"] == 1
    assert await count_posts(db_session) == before + 1


async def test_json_table_refuses_a_mapping_without_title_or_author(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin = await admin_headers(app, db_session, client)
    body = {"document": FEED, "rows": "$.data.items[*]", "columns": {"content": "$.body"}}
    response = await json_import(client, admin, body)
    assert response.status_code == 422
