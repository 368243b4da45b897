"""Imports belong to one organization: who may run and see them, what they can touch,
and the records they leave (`GET /orgs/{org_id}/imports[/{import_id}]`).

A post id from another organization matches nothing in this one (posts are keyed
`(tenant_id, id)`): that row becomes a new post here, and the other organization's post
is never read, changed or revealed, whatever `on_conflict` says.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID

import orjson
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.ids import uuid7
from tests.bulk.helpers import CONTENT_TYPES, count_posts, encode, import_url, member_of, send
from tests.orgs.factory import add_member
from tests.users.factory import bearer, make_user, sign_in, signed_in


async def _post(session: AsyncSession, tenant_id: UUID, post_id: UUID) -> tuple[str, ...] | None:
    row = (
        await session.execute(
            text("SELECT title, content FROM app.posts WHERE tenant_id = :t AND id = :i"),
            {"t": tenant_id, "i": post_id},
        )
    ).first()
    return tuple(row) if row is not None else None


@pytest.mark.parametrize("mode", ["update", "skip", "error"])
async def test_another_organizations_post_id_never_touches_its_post(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, mode: str
) -> None:
    a, a_auth = await signed_in(app, db_session, client)
    b, b_auth = await signed_in(app, db_session, client)
    b_post = uuid7()
    original = [{"id": str(b_post), "title": "B's", "content": "b", "author_id": str(b.id)}]
    await send(client, "posts", encode(original, "json"), "json", b_auth, org=b.id)
    rows = [{"id": str(b_post), "title": "Hijack", "content": "a", "author_id": str(a.id)}]

    response = await send(
        client, "posts", encode(rows, "json"), "json", a_auth, org=a.id, on_conflict=mode
    )
    as_json = await client.post(
        import_url("json", a.id),
        json={
            "document": [{"id": str(b_post), "t": "Hijack 2", "by": str(a.id)}],
            "rows": "$[*]",
            "columns": {"id": "$.id", "title": "$.t", "author_id": "$.by"},
        },
        headers=a_auth,
        params={"on_conflict": "update"},
    )

    assert response.status_code == 200, response.text
    assert (response.json()["inserted"], response.json()["rejected_count"]) == (1, 0)
    assert as_json.json()["updated"] == 1  # A's own new post, not B's
    assert await _post(db_session, b.id, b_post) == ("B's", "b")
    assert await _post(db_session, a.id, b_post) == ("Hijack 2", "")  # content: not mapped


async def test_authors_from_another_organization_are_rejected(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    a, a_auth = await signed_in(app, db_session, client)
    b = await make_user(app, db_session, username="b_writer")
    rows = [
        {"title": "By B", "author_username": "b_writer"},
        {"title": "By B", "author_id": str(b.id)},
    ]

    response = await send(client, "posts", encode(rows, "ndjson"), "ndjson", a_auth, org=a.id)

    assert response.status_code == 422
    report = response.json()["report"]
    assert [(r["line"], r["reason"]) for r in report["rejected"]] == [
        (1, "not a member of this organization"),
        (2, "not a member of this organization"),
    ]
    assert await count_posts(db_session, a.id) == 0
    assert await count_posts(db_session, b.id) == 0


async def test_an_admin_of_a_team_imports_posts_by_its_members(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    owner = await make_user(app, db_session)
    team = owner.id  # a personal organization is keyed by its owner's id
    admin = await member_of(app, db_session, team, "admin")
    writer = await member_of(app, db_session, team, "member")
    auth = bearer(await sign_in(client, admin.username))
    rows = [{"title": "Team post", "author_id": str(writer.id)}]

    response = await send(client, "posts", encode(rows, "json"), "json", auth, org=team)

    assert response.status_code == 200, response.text
    assert await count_posts(db_session, team) == 1
    assert await count_posts(db_session, admin.id) == 0


class _Body:
    """A request body that notes whether anybody read it."""

    def __init__(self, payload: bytes) -> None:
        self.payload, self.read = payload, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.read = True
        yield self.payload


# The owner is the control: their body is read, so a refusal's unread body means something.
@pytest.mark.parametrize(
    ("role", "status"), [("owner", 200), ("member", 403), ("viewer", 403), (None, 404)]
)
@pytest.mark.parametrize("kind", ["posts", "json"])
async def test_members_viewers_and_strangers_are_refused_before_the_body_is_read(
    app: FastAPI,
    db_session: AsyncSession,
    client: AsyncClient,
    role: str | None,
    status: int,
    kind: str,
) -> None:
    owner = await make_user(app, db_session)
    caller, auth = await signed_in(app, db_session, client)
    if role is not None:
        await add_member(db_session, owner.id, caller.id, role)
        auth = bearer(await sign_in(client, caller.username))  # a fresh viewer, with the role
    rows = [{"title": "Sneaky", "author_id": str(owner.id)}]
    spec = {
        "document": rows,
        "rows": "$[*]",
        "columns": {"title": "$.title", "author_id": "$.author_id"},
    }
    body = _Body(orjson.dumps(spec) if kind == "json" else encode(rows, "json"))

    response = await client.post(
        import_url(kind, owner.id),
        content=body,
        headers={**auth, "Content-Type": CONTENT_TYPES["json"]},
    )
    listing = await client.get(f"/api/v1/orgs/{owner.id}/imports", headers=auth)

    assert response.status_code == status, response.text
    assert body.read is (status == 200)
    assert listing.status_code == status
    assert await count_posts(db_session, owner.id) == (1 if status == 200 else 0)


async def test_a_platform_admin_may_import_into_any_organization(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    owner = await make_user(app, db_session)
    _, admin = await signed_in(app, db_session, client, admin=True)
    rows = [{"title": "Placed by an operator", "author_id": str(owner.id)}]

    response = await send(client, "posts", encode(rows, "json"), "json", admin, org=owner.id)

    assert response.status_code == 200, response.text
    assert await count_posts(db_session, owner.id) == 1


# --- records ----------------------------------------------------------------------------


async def test_each_import_leaves_a_record_rejected_ones_too(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    owner, auth = await signed_in(app, db_session, client)
    good = {"title": "Fine", "author_id": str(owner.id)}
    bad = {"title": "Ghost", "author_username": "nobody_at_all"}
    body = encode([good, bad], "ndjson")

    refused = await send(client, "posts", body, "ndjson", auth, org=owner.id)
    partial = await send(client, "posts", body, "ndjson", auth, org=owner.id, atomic=False)
    listing = await client.get(f"/api/v1/orgs/{owner.id}/imports", headers=auth)

    assert refused.status_code == 422
    refused_id = refused.json()["report"]["import_id"]
    partial_id = partial.json()["import_id"]
    items = listing.json()["items"]
    assert [i["id"] for i in items] == [partial_id, refused_id]  # newest first
    assert [(i["status"], i["inserted"], i["rejected_count"]) for i in items] == [
        ("committed", 1, 1),
        ("rejected", 0, 1),
    ]
    assert {i["actor_id"] for i in items} == {str(owner.id)}
    detail = await client.get(f"/api/v1/orgs/{owner.id}/imports/{refused_id}", headers=auth)
    assert detail.status_code == 200
    assert detail.json()["rejected"] == [
        {
            "line": 2,
            "index": None,
            "field": "author_username",
            "reason": "not a member of this organization",
        }
    ]
    assert detail.json()["format"] == "ndjson"
    assert await count_posts(db_session, owner.id) == 1


async def test_imports_are_listed_a_keyset_page_at_a_time(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    owner, auth = await signed_in(app, db_session, client)
    made = []
    for n in range(3):
        rows = [{"title": f"Post {n}", "author_id": str(owner.id)}]
        response = await send(client, "posts", encode(rows, "json"), "json", auth, org=owner.id)
        made.append(response.json()["import_id"])
    url = f"/api/v1/orgs/{owner.id}/imports"

    first = (await client.get(url, headers=auth, params={"limit": 2})).json()
    second = (
        await client.get(url, headers=auth, params={"limit": 2, "before": first["next"]})
    ).json()

    assert [i["id"] for i in first["items"]] == made[:0:-1]
    assert [i["id"] for i in second["items"]] == made[:1]
    assert second["next"] is None


async def test_an_organization_never_sees_another_ones_imports(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    a, a_auth = await signed_in(app, db_session, client)
    b, b_auth = await signed_in(app, db_session, client)
    rows = [{"title": "B's import", "author_id": str(b.id)}]
    b_import = (await send(client, "posts", encode(rows, "json"), "json", b_auth, org=b.id)).json()[
        "import_id"
    ]

    a_list = await client.get(f"/api/v1/orgs/{a.id}/imports", headers=a_auth)
    through_a = await client.get(f"/api/v1/orgs/{a.id}/imports/{b_import}", headers=a_auth)
    into_b = await client.get(f"/api/v1/orgs/{b.id}/imports/{b_import}", headers=a_auth)
    b_list = await client.get(f"/api/v1/orgs/{b.id}/imports", headers=b_auth)

    assert a_list.status_code == 200
    assert a_list.json()["items"] == []
    assert through_a.status_code == 404
    assert into_b.status_code == 404  # not a member of B: B doesn't exist for A
    assert [i["id"] for i in b_list.json()["items"]] == [b_import]


async def test_records_go_with_their_organization(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    owner, auth = await signed_in(app, db_session, client)
    rows = [{"title": "Kept?", "author_id": str(owner.id)}]
    await send(client, "posts", encode(rows, "json"), "json", auth, org=owner.id)
    count = "SELECT count(*) FROM app.imports WHERE tenant_id = :t"
    assert await db_session.scalar(text(count), {"t": owner.id}) == 1

    await db_session.execute(text("DELETE FROM app.users WHERE id = :u"), {"u": owner.id})

    assert await db_session.scalar(text(count), {"t": owner.id}) == 0
