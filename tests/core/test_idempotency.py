"""Idempotency-Key on creating POSTs: replay, refusal of a reused key, per caller, expiry."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from keel.users.models import User
from tests.bulk.helpers import admin_headers, count_posts, encode
from tests.documents.factory import as_document, dimension, ndjson, unit_vectors
from tests.posts.factory import posts_url
from tests.users.factory import signed_in

KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"


Caller = tuple[User, dict[str, str]]  # a user and their Authorization header


async def post(client: AsyncClient, caller: Caller, key: str | None, **body: Any) -> Response:
    """Write a post in the caller's personal organization."""
    user, auth = caller
    headers = auth | ({KEY: key} if key is not None else {})
    return await client.post(posts_url(user.id), headers=headers, json=body)


async def stored_keys(session: AsyncSession) -> int:
    return int(await session.scalar(text("SELECT count(*) FROM app.idempotency_keys")) or 0)


async def test_a_retry_gets_the_first_answer_not_a_second_post(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    auth = await signed_in(app, db_session, client)
    first = await post(client, auth, "k-1", title="Once", content="only once")
    assert first.status_code == 201, first.text
    assert REPLAYED.lower() not in first.headers
    # Stored with the post, in the same commit: a retry after a lost answer finds it.
    assert await stored_keys(db_session) == 1

    again = await post(client, auth, "k-1", title="Once", content="only once")
    assert again.status_code == 201
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers[REPLAYED] == "true"
    assert await count_posts(db_session) == 1


async def test_the_same_key_for_another_request_is_refused(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    auth = await signed_in(app, db_session, client)
    assert (await post(client, auth, "k-2", title="First")).status_code == 201
    reused = await post(client, auth, "k-2", title="Second")
    assert reused.status_code == 422
    assert reused.json()["type"] == "urn:keel:problem:idempotency-key-reused"
    assert await count_posts(db_session) == 1


async def test_keys_belong_to_their_caller(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    alice = await signed_in(app, db_session, client)
    bob = await signed_in(app, db_session, client)
    mine = await post(client, alice, "shared", title="Same")
    theirs = await post(client, bob, "shared", title="Same")
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]
    assert REPLAYED.lower() not in theirs.headers


async def test_no_key_no_change_and_bad_keys_are_refused(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    auth = await signed_in(app, db_session, client)
    assert (await post(client, auth, None, title="a")).status_code == 201
    assert (await post(client, auth, None, title="a")).status_code == 201
    assert await count_posts(db_session) == 2
    assert await stored_keys(db_session) == 0
    for bad in ("", "x" * 256, "with space"):
        assert (await post(client, auth, bad, title="b")).status_code == 422, bad


async def test_concurrent_retries_create_one_post(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    auth = await signed_in(app, db_session, client)
    answers = await asyncio.gather(*(post(client, auth, "racing", title="Raced") for _ in range(6)))
    statuses = sorted(answer.status_code for answer in answers)
    assert set(statuses) <= {201, 409}, [a.text for a in answers]
    assert 201 in statuses
    for busy in (a for a in answers if a.status_code == 409):
        assert busy.headers["retry-after"]
    assert len({a.json()["id"] for a in answers if a.status_code == 201}) == 1
    assert await count_posts(db_session) == 1


async def test_a_failed_request_leaves_the_key_unused(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin = await admin_headers(app, db_session, client)
    user = {"email": "dup@example.com", "username": "dup", "password": "long enough pw"}
    assert (await client.post("/api/v1/users", headers=admin, json=user)).status_code == 201
    taken = await client.post(
        "/api/v1/users", headers=admin | {KEY: "new-user"}, json=user | {"username": "dup2"}
    )
    assert taken.status_code == 409  # the email is taken: nothing stored under the key
    fixed = user | {"username": "dup2", "email": "dup2@example.com"}
    created = await client.post("/api/v1/users", headers=admin | {KEY: "new-user"}, json=fixed)
    assert created.status_code == 201, created.text
    replay = await client.post("/api/v1/users", headers=admin | {KEY: "new-user"}, json=fixed)
    assert (replay.status_code, replay.content) == (201, created.content)


async def test_expired_keys_are_free_again_and_purged(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    auth = await signed_in(app, db_session, client)
    for n in range(3):
        assert (await post(client, auth, f"old-{n}", title=f"old {n}")).status_code == 201
    await db_session.execute(
        text("UPDATE app.idempotency_keys SET expires_at = now() - interval '1 second'")
    )
    again = await post(client, auth, "old-0", title="another request")
    assert again.status_code == 201  # not 422: the old answer has expired
    assert REPLAYED.lower() not in again.headers
    # That keyed write purged the other expired keys.
    assert await stored_keys(db_session) == 1


async def test_bulk_loads_and_imports_replay_too(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    bulk = f"/api/v1/orgs/{user.id}/documents/bulk"
    vectors = unit_vectors(3, await dimension(db_session))
    body = ndjson([as_document(v, content=f"doc {i}") for i, v in enumerate(vectors)])
    headers = auth | {"Content-Type": "application/x-ndjson", KEY: "bulk-1"}
    first = await client.post(bulk, headers=headers, content=body)
    assert first.status_code == 201, first.text
    again = await client.post(bulk, headers=headers, content=body)
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers[REPLAYED] == "true"
    count = await db_session.scalar(text("SELECT count(*) FROM app.documents"))
    assert count == 3
    changed = await client.post(bulk, headers=headers, content=body[:-1])
    assert changed.status_code == 422

    admin = await admin_headers(app, db_session, client)
    rows = [{"title": "imported", "content": "x", "author_username": "nobody-yet"}]
    csv = encode(rows, "csv")
    params = {"on_conflict": "skip", "atomic": "false"}
    import_headers = admin | {"Content-Type": "text/csv", KEY: "import-1"}
    me = (await client.get("/api/v1/users/me", headers=admin)).json()["id"]
    url = f"/api/v1/orgs/{me}/imports/posts"  # the admin's personal organization
    report = await client.post(url, headers=import_headers, content=csv, params=params)
    assert report.status_code == 200, report.text
    replay = await client.post(url, headers=import_headers, content=csv, params=params)
    assert (replay.status_code, replay.json()) == (200, report.json())
    other_query = await client.post(
        url, headers=import_headers, content=csv, params=params | {"on_conflict": "update"}
    )
    assert other_query.status_code == 422  # the query is part of the request
