"""Posts API inside an organization: ownership, drafts, filters, keyset and offset pages.

Isolation between organizations and the role matrix are in `test_tenancy.py`.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.orgs.factory import add_member
from tests.posts.factory import make_post, posts_url
from tests.users.factory import bearer, make_user, sign_in, signed_in


async def test_create_makes_the_caller_the_author(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client, full_name="Writer")
    posts = posts_url(user.id)
    response = await client.post(posts, headers=auth, json={"title": "Hello", "content": "World"})
    assert response.status_code == 201
    body = response.json()
    assert body["author"] == {
        "id": str(user.id),
        "username": user.username,
        "full_name": "Writer",
        "created_at": body["author"]["created_at"],
    }
    assert body["is_published"] is False
    forged = await client.post(posts, headers=auth, json={"title": "x", "author_id": str(uuid4())})
    assert forged.status_code == 422
    assert (await client.post(posts, json={"title": "anon"})).status_code == 401


async def test_drafts_exist_only_for_author_and_admins(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    owner, owner_auth = await signed_in(app, db_session, client)
    author = await make_user(app, db_session)
    await add_member(db_session, owner.id, author.id, "member")
    draft = await make_post(db_session, author, "Secret draft", published=False, org_id=owner.id)
    fellow, stranger = await signed_in(app, db_session, client)
    await add_member(db_session, owner.id, fellow.id, "member")
    _, admin = await signed_in(app, db_session, client, admin=True)
    author_auth = bearer(await sign_in(client, author.username))
    url = f"{posts_url(owner.id)}/{draft.id}"
    assert (await client.get(url, headers=stranger)).status_code == 404
    assert (await client.patch(url, headers=stranger, json={"title": "x"})).status_code == 404
    assert (await client.delete(url, headers=stranger)).status_code == 404
    assert (await client.get(url, headers=author_auth)).status_code == 200
    assert (await client.get(url, headers=admin)).status_code == 200
    assert (await client.get(url, headers=owner_auth)).status_code == 200
    await db_session.refresh(draft)
    assert draft.title == "Secret draft"


async def test_only_author_or_admin_change_published_posts(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    author = await make_user(app, db_session)
    post = await make_post(db_session, author, "Original")
    fellow, stranger = await signed_in(app, db_session, client)
    await add_member(db_session, author.id, fellow.id, "member")
    moderator, admin = await signed_in(app, db_session, client)
    await add_member(db_session, author.id, moderator.id, "admin")
    author_auth = bearer(await sign_in(client, author.username))
    url = f"{posts_url(author.id)}/{post.id}"
    assert (await client.get(url, headers=stranger)).status_code == 200
    assert (await client.patch(url, headers=stranger, json={"title": "Hacked"})).status_code == 403
    assert (await client.delete(url, headers=stranger)).status_code == 403
    await db_session.refresh(post)
    assert post.title == "Original"

    before = post.updated_at
    await asyncio.sleep(0.01)
    edited = await client.patch(url, headers=author_auth, json={"title": "Edited"})
    assert edited.status_code == 200
    assert edited.json()["title"] == "Edited"
    assert datetime.fromisoformat(edited.json()["updated_at"]) > before  # type: ignore[operator]
    moderated = await client.patch(url, headers=admin, json={"is_published": False})
    assert moderated.json()["is_published"] is False
    assert (await client.delete(url, headers=admin)).status_code == 204
    assert (await client.get(url, headers=author_auth)).status_code == 404


async def test_keyset_pages_walk_everything_once(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    author, auth = await signed_in(app, db_session, client)
    posts = posts_url(author.id)
    created = [str((await make_post(db_session, author, f"post {i}")).id) for i in range(7)]
    author_id = str(author.id)
    # Same timestamp for some rows: the id must break the tie.
    await db_session.execute(
        text("UPDATE app.posts SET created_at = :t WHERE author_id = :a AND title < 'post 4'"),
        {"t": datetime(2026, 1, 1, tzinfo=UTC), "a": author_id},
    )
    db_session.expire_all()  # the raw UPDATE bypassed the identity map
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"author_id": author_id, "limit": 3}
        if cursor:
            params["cursor"] = cursor
        response = await client.get(posts, headers=auth, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(created)
    assert len(seen) == len(set(seen)) == 7


async def test_offset_pages_and_filters(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    author, auth = await signed_in(app, db_session, client)
    posts = posts_url(author.id)
    await make_post(db_session, author, "draft", published=False)
    for i in range(3):
        await make_post(db_session, author, f"published {i}")
    params: dict[str, str | int] = {
        "author_id": str(author.id),
        "published": "true",
        "limit": 2,
        "offset": 2,
    }
    page = (await client.get(posts, headers=auth, params=params)).json()
    assert [item["title"] for item in page["items"]] == ["published 0"]
    assert page["offset"] == 2
    assert page["next_cursor"] is None
    drafts = await client.get(
        posts, headers=auth, params={"author_id": str(author.id), "published": "false"}
    )
    assert [item["title"] for item in drafts.json()["items"]] == ["draft"]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    later = await client.get(
        posts, headers=auth, params={"author_id": str(author.id), "created_after": future}
    )
    assert later.json()["items"] == []


async def test_others_drafts_never_appear_in_lists(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    author = await make_user(app, db_session)
    await make_post(db_session, author, "hidden draft", published=False)
    await make_post(db_session, author, "public post")
    fellow, stranger = await signed_in(app, db_session, client)
    await add_member(db_session, author.id, fellow.id, "member")
    page = await client.get(
        posts_url(author.id), headers=stranger, params={"author_id": str(author.id)}
    )
    assert [item["title"] for item in page.json()["items"]] == ["public post"]


async def test_bad_cursors_and_limits_are_400_or_422(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    author, auth = await signed_in(app, db_session, client)
    posts = posts_url(author.id)
    for i in range(3):
        await make_post(db_session, author, f"p{i}")
    page = await client.get(posts, headers=auth, params={"limit": 1})
    cursor = page.json()["next_cursor"]
    tampered = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    for bad in (tampered, "not-a-cursor", "%%%", "A" * 40):
        response = await client.get(posts, headers=auth, params={"cursor": bad})
        assert response.status_code == 400, bad
        assert response.json()["type"] == "urn:keel:problem:invalid-cursor"
    both = await client.get(posts, headers=auth, params={"cursor": cursor, "offset": 1})
    assert both.status_code == 400
    assert (await client.get(posts, headers=auth, params={"limit": 101})).status_code == 422
    assert (
        await client.get(posts, headers=auth, params={"created_after": "0.5"})
    ).status_code == 422


async def test_posts_go_with_their_author(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    author = await make_user(app, db_session)
    post = await make_post(db_session, author)
    _, admin = await signed_in(app, db_session, client, admin=True)
    assert (await client.delete(f"/api/v1/users/{author.id}", headers=admin)).status_code == 204
    url = f"{posts_url(author.id)}/{post.id}"
    assert (await client.get(url, headers=admin)).status_code == 404


async def test_list_query_is_served_by_an_index(db_session: AsyncSession) -> None:
    await db_session.execute(text("SET enable_seqscan = off"))
    plans = {
        "newest": "SELECT id FROM app.posts WHERE tenant_id = CAST(:some AS uuid) "
        "ORDER BY created_at DESC, id DESC LIMIT 20",
        "by_author": "SELECT id, title FROM app.posts WHERE tenant_id = CAST(:some AS uuid) "
        "AND author_id = CAST(:some AS uuid) ORDER BY created_at DESC LIMIT 20",
    }
    for name, sql in plans.items():
        plan = "\n".join(
            (await db_session.scalars(text(f"EXPLAIN {sql}"), {"some": uuid4()})).all()
        )
        assert "Index" in plan, (name, plan)
        assert "Seq Scan" not in plan, (name, plan)
