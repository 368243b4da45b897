"""Posts between organizations: isolation, and the role matrix operation by operation."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from tests.orgs.factory import add_member, create_org
from tests.posts.factory import make_post, posts_url
from tests.users.factory import signed_in


async def _member(
    app: FastAPI, session: AsyncSession, client: AsyncClient, org_id: Any, role: str
) -> tuple[Any, dict[str, str]]:
    user, auth = await signed_in(app, session, client)
    await add_member(session, org_id, user.id, role)
    return user, auth


async def test_a_member_of_one_organization_never_reaches_another_ones_posts(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    owner_a, auth_a = await signed_in(app, db_session, client)
    owner_b, auth_b = await signed_in(app, db_session, client)
    org_a = (await create_org(client, auth_a))["id"]
    org_b = (await create_org(client, auth_b))["id"]
    mine = await make_post(db_session, owner_a, "same words", org_id=org_a)
    theirs = await make_post(db_session, owner_b, "same words", org_id=org_b)
    draft = await make_post(db_session, owner_b, "b draft", published=False, org_id=org_b)

    # Through A's path, B's ids are missing: read, change, delete.
    for post in (theirs, draft):
        url = f"{posts_url(org_a)}/{post.id}"
        assert (await client.get(url, headers=auth_a)).status_code == 404
        assert (await client.patch(url, headers=auth_a, json={"title": "x"})).status_code == 404
        assert (await client.delete(url, headers=auth_a)).status_code == 404
    # Through B's path, A is not a member: 404 as for a missing organization, body unread.
    url = f"{posts_url(org_b)}/{theirs.id}"
    for response in (
        await client.get(url, headers=auth_a),
        await client.get(posts_url(org_b), headers=auth_a),
        await client.patch(url, headers=auth_a, content=b"{not json"),
        await client.post(posts_url(org_b), headers=auth_a, content=b"{not json"),
        await client.delete(url, headers=auth_a),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["title"] == "Not Found"
    # Lists, with any filter, show A's posts only.
    for params in ({}, {"author_id": str(owner_b.id)}, {"published": "false"}, {"offset": 0}):
        page = (await client.get(posts_url(org_a), headers=auth_a, params=params)).json()
        assert {item["id"] for item in page["items"]} <= {str(mine.id)}, params
    # B's rows are untouched.
    await db_session.refresh(theirs)
    assert theirs.title == "same words"
    assert (await client.get(url, headers=auth_b)).status_code == 200
    # A post made in A is in A: its id through B's path is missing for B.
    missing = await client.get(f"{posts_url(org_b)}/{mine.id}", headers=auth_b)
    assert missing.status_code == 404


# operation -> the roles it succeeds for, on a post by somebody else (`other`) or your own.
ROLE_CASES = ["owner", "admin", "member", "viewer"]


@pytest.mark.parametrize("role", ROLE_CASES)
async def test_each_post_operation_for_each_role(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, role: str
) -> None:
    owner, owner_auth = await signed_in(app, db_session, client)
    org = (await create_org(client, owner_auth))["id"]
    writer, _ = await _member(app, db_session, client, org, "member")
    other = await make_post(db_session, writer, "theirs", org_id=org)
    other_draft = await make_post(db_session, writer, "their draft", published=False, org_id=org)
    _, auth = await _member(app, db_session, client, org, role)
    base = posts_url(org)
    writes = role != "viewer"
    moderates = role in ("owner", "admin")

    assert (await client.get(f"{base}/{other.id}", headers=auth)).status_code == 200
    listed = (await client.get(base, headers=auth)).json()["items"]
    assert ("their draft" in {item["title"] for item in listed}) is moderates
    draft_read = await client.get(f"{base}/{other_draft.id}", headers=auth)
    assert draft_read.status_code == (200 if moderates else 404)

    created = await client.post(base, headers=auth, json={"title": "mine", "is_published": True})
    assert created.status_code == (201 if writes else 403), created.text
    if writes:
        own = f"{base}/{created.json()['id']}"
        assert (await client.patch(own, headers=auth, json={"title": "m2"})).status_code == 200
        assert (await client.delete(own, headers=auth)).status_code == 204
    else:
        assert created.json()["permission"] == "posts.create"

    edit_other = await client.patch(f"{base}/{other.id}", headers=auth, json={"title": "hijack"})
    assert edit_other.status_code == (200 if moderates else 403)
    delete_other = await client.delete(f"{base}/{other.id}", headers=auth)
    assert delete_other.status_code == (204 if moderates else 403)
