"""`POST /orgs/{org_id}/imports/posts` and `.../imports/json` (JSON_TABLE), run with each
way of landing rows (IMPORT_STRATEGY merge and upsert): every test here runs twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from keel.config import Settings
from keel.core.ids import uuid7
from keel.posts.models import Post
from tests.bulk.helpers import count_posts, encode, member_of, send
from tests.conftest import make_settings
from tests.users.factory import make_user, signed_in

FORMATS = ["json", "ndjson", "csv"]


@pytest.fixture(params=["merge", "upsert"])
def settings(request: pytest.FixtureRequest, test_database_url: str, data_dir: Path) -> Settings:
    return make_settings(test_database_url, data_dir, import_strategy=request.param)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_posts_name_their_author_by_id_username_or_email(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, fmt: str
) -> None:
    owner, auth = await signed_in(app, db_session, client)
    author = await member_of(
        app, db_session, owner.id, email="writer@example.com", username="writer"
    )
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

    response = await send(client, "posts", encode(rows, fmt), fmt, auth, org=owner.id)

    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == 3
    assert await count_posts(db_session) == before + 3
    posts = (await db_session.scalars(select(Post).where(col(Post.author_id) == author.id))).all()
    assert sorted(p.title for p in posts) == ["By email", "By id", "By name"]
    assert {p.tenant_id for p in posts} == {owner.id}
    dated = next(p for p in posts if p.title == "By email")
    assert dated.is_published
    assert dated.created_at is not None
    assert dated.created_at.isoformat() == "2024-02-03T04:05:06+00:00"


async def test_unknown_authors_non_members_and_duplicate_ids_are_rejected(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    owner, auth = await signed_in(app, db_session, client)
    outsider = await make_user(app, db_session, email="outsider@example.com")
    before = await count_posts(db_session)
    post_id = str(uuid7())
    rows = [
        {"id": post_id, "title": "One", "author_id": str(owner.id)},
        {"id": post_id, "title": "Again", "author_id": str(owner.id)},
        {"title": "Ghost", "author_username": "nobody_here"},
        {"title": "Ghost 2", "author_id": str(uuid7())},
        {"title": "   ", "author_id": str(owner.id)},
        {"title": "Both", "author_id": str(owner.id), "author_username": "x"},
        {"title": "Outsider", "author_email": "outsider@example.com"},
        {"title": "Outsider 2", "author_id": str(outsider.id)},
    ]

    response = await send(
        client, "posts", encode(rows, "ndjson"), "ndjson", auth, org=owner.id, atomic=False
    )

    report = response.json()
    assert [(r["line"], r["field"]) for r in report["rejected"]] == [
        (2, "id"),
        (3, "author_username"),
        (4, "author_id"),
        (5, "title"),
        (6, None),
        (7, "author_email"),
        (8, "author_id"),
    ]
    # One reason whether the account exists or not: no probing for emails.
    reasons = {r["reason"] for r in report["rejected"] if r["line"] in {3, 4, 7, 8}}
    assert reasons == {"not a member of this organization"}
    assert report["inserted"] == 1
    assert await count_posts(db_session) == before + 1


@pytest.mark.parametrize("mode", ["skip", "update", "error"])
async def test_conflict_modes_on_post_ids(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, mode: str
) -> None:
    owner, auth = await signed_in(app, db_session, client)
    post_id = uuid7()
    first = [{"id": str(post_id), "title": "Original", "author_id": str(owner.id)}]
    await send(client, "posts", encode(first, "json"), "json", auth, org=owner.id)
    before = await count_posts(db_session)
    rows = [
        {"id": str(post_id), "title": "Changed", "author_id": str(owner.id)},
        {"title": "New", "author_id": str(owner.id)},
    ]

    response = await send(
        client,
        "posts",
        encode(rows, "json"),
        "json",
        auth,
        org=owner.id,
        on_conflict=mode,
        atomic=False,
    )

    report = response.json()
    stored = await db_session.scalar(
        select(col(Post.title))
        .where(col(Post.tenant_id) == owner.id, col(Post.id) == post_id)
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


async def test_update_with_identical_rows_counts_them_unchanged(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    owner, auth = await signed_in(app, db_session, client)
    rows = [
        {"id": str(uuid7()), "title": f"Post {n}", "author_id": str(owner.id)} for n in range(3)
    ]
    await send(client, "posts", encode(rows, "json"), "json", auth, org=owner.id)
    rows[0]["title"] = "Renamed"

    response = await send(
        client, "posts", encode(rows, "json"), "json", auth, org=owner.id, on_conflict="update"
    )

    report = response.json()
    assert (report["inserted"], report["updated"], report["unchanged"]) == (0, 1, 2)


async def test_imported_posts_are_searchable_in_their_organization(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    owner, auth = await signed_in(app, db_session, client)
    rows = [
        {
            "title": "Zeppelins over Lisbon",
            "content": "airships",
            "is_published": True,
            "author_id": str(owner.id),
        }
    ]
    await send(client, "posts", encode(rows, "json"), "json", auth, org=owner.id)

    found = await db_session.scalar(
        text(
            "SELECT count(*) FROM app.posts WHERE tenant_id = :t "
            "AND search @@ websearch_to_tsquery('english', 'zeppelin')"
        ),
        {"t": owner.id},
    )

    assert found == 1


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
    client: AsyncClient, headers: dict[str, str], org: UUID, body: dict[str, Any], **params: Any
) -> Any:
    params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}
    return await client.post(
        f"/api/v1/orgs/{org}/imports/json", json=body, headers=headers, params=params
    )


async def test_json_table_shreds_a_nested_document(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    author, auth = await signed_in(app, db_session, client, username="jt_writer")
    before = await count_posts(db_session)

    response = await json_import(
        client, auth, author.id, {"document": FEED, "rows": "$.data.items[*]", "columns": COLUMNS}
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
    assert {p.tenant_id for p in posts} == {author.id}


async def test_json_table_update_by_id(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    author, auth = await signed_in(app, db_session, client, username="jt_writer")
    post_id = str(uuid7())
    doc = {"posts": [{"uuid": post_id, "headline": "v1", "by": "jt_writer"}]}
    columns = {"id": "$.uuid", "title": "$.headline", "author_username": "$.by"}
    body = {"document": doc, "rows": "$.posts[*]", "columns": columns}
    await json_import(client, auth, author.id, body)
    doc["posts"][0]["headline"] = "v2"

    response = await json_import(client, auth, author.id, body, on_conflict="update")

    assert response.json()["updated"] == 1
    title = await db_session.scalar(
        select(col(Post.title))
        .where(col(Post.tenant_id) == author.id, col(Post.id) == UUID(post_id))
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
    owner, auth = await signed_in(app, db_session, client)
    before = await count_posts(db_session)

    response = await json_import(
        client, auth, owner.id, {"document": FEED, "rows": rows, "columns": columns}
    )

    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["field"] == field
    assert problem["path"] in problem["detail"]
    assert await count_posts(db_session) == before


async def test_json_table_dollar_signs_in_string_literals_are_not_variables(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    author, auth = await signed_in(app, db_session, client, username="jt_writer")
    rows = '$.data.items[*] ? (@.headline != "$x" && @.headline != "q\\"$\\"y")'
    body = {"document": FEED, "rows": rows, "columns": COLUMNS}

    response = await json_import(client, auth, author.id, body)

    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == 2


async def test_json_table_type_mismatch_names_the_path(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    author, auth = await signed_in(app, db_session, client, username="jt_writer")
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

    atomic = await json_import(client, auth, author.id, body)
    partial = await json_import(client, auth, author.id, body, atomic=False)

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
    owner, auth = await signed_in(app, db_session, client)
    body = {"document": FEED, "rows": "$.data.items[*]", "columns": {"content": "$.body"}}
    response = await json_import(client, auth, owner.id, body)
    assert response.status_code == 422
