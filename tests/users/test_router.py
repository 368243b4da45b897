"""Users API: ownership, admin-only routes, public vs private profiles, search."""

from __future__ import annotations

from uuid import uuid4

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.users.factory import PASSWORD, bearer, make_user, sign_in, signed_in

USERS = "/api/v1/users"


async def test_me_returns_private_profile_without_hash(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client, full_name="Ada Lovelace")
    response = await client.get(f"{USERS}/me", headers=auth)
    assert response.status_code == 200
    body = response.json()
    assert body["email"] == user.email
    assert body["full_name"] == "Ada Lovelace"
    assert body["metadata"] == {}
    assert "hashed_password" not in response.text
    assert "$argon2" not in response.text


async def test_patch_me_changes_profile(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, auth = await signed_in(app, db_session, client)
    response = await client.patch(
        f"{USERS}/me", headers=auth, json={"full_name": "New Name", "metadata": {"theme": "dark"}}
    )
    assert response.status_code == 200
    assert response.json()["full_name"] == "New Name"
    assert response.json()["metadata"] == {"theme": "dark"}


async def test_user_cannot_grant_themselves_admin_flags(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    for body in ({"is_superuser": True}, {"is_verified": True}, {"is_active": False}):
        response = await client.patch(f"{USERS}/me", headers=auth, json=body)
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"
    await db_session.refresh(user)
    assert (user.is_superuser, user.is_verified, user.is_active) == (False, False, True)


async def test_user_cannot_change_or_delete_another_user(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, auth = await signed_in(app, db_session, client)
    victim = await make_user(app, db_session, full_name="Victim")
    patched = await client.patch(f"{USERS}/{victim.id}", headers=auth, json={"full_name": "x"})
    deleted = await client.delete(f"{USERS}/{victim.id}", headers=auth)
    assert patched.status_code == 403
    assert deleted.status_code == 403
    await db_session.refresh(victim)
    assert victim.full_name == "Victim"


async def test_public_profile_hides_private_fields(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, auth = await signed_in(app, db_session, client)
    other = await make_user(app, db_session)
    response = await client.get(f"{USERS}/{other.id}", headers=auth)
    assert response.status_code == 200
    assert set(response.json()) == {"id", "username", "full_name", "created_at"}
    missing = await client.get(f"{USERS}/{uuid4()}", headers=auth)
    assert missing.status_code == 404


async def test_admin_routes_need_a_token_then_an_admin(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    target = await make_user(app, db_session)
    new_user = {"email": "new@example.com", "username": "newbie", "password": PASSWORD}
    assert (await client.post(USERS, json=new_user)).status_code == 401
    assert (await client.delete(f"{USERS}/{target.id}")).status_code == 401
    _, user_auth = await signed_in(app, db_session, client)
    assert (await client.post(USERS, json=new_user, headers=user_auth)).status_code == 403
    assert (await client.delete(f"{USERS}/{target.id}", headers=user_auth)).status_code == 403


async def test_admin_creates_updates_and_deletes_users(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, admin = await signed_in(app, db_session, client, admin=True)
    created = await client.post(
        f"{USERS}/",
        headers=admin,
        json={
            "email": "Made@Example.com",
            "username": "made",
            "password": PASSWORD,
            "is_verified": True,
        },
    )
    assert created.status_code == 201
    user_id = created.json()["id"]
    assert created.json()["is_verified"] is True
    promoted = await client.patch(
        f"{USERS}/{user_id}", headers=admin, json={"is_superuser": True, "is_active": False}
    )
    assert promoted.status_code == 200
    assert promoted.json()["is_superuser"] is True
    assert promoted.json()["is_active"] is False
    assert (await client.delete(f"{USERS}/{user_id}", headers=admin)).status_code == 204
    assert (await client.delete(f"{USERS}/{user_id}", headers=admin)).status_code == 404


async def test_duplicates_are_409_naming_the_field(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    await make_user(app, db_session, email="taken@example.com", username="TakenName")
    _, admin = await signed_in(app, db_session, client, admin=True)
    same_email = await client.post(
        USERS,
        headers=admin,
        json={"email": "TAKEN@example.com", "username": "fresh", "password": PASSWORD},
    )
    same_name = await client.post(
        USERS,
        headers=admin,
        json={"email": "fresh@example.com", "username": "takenname", "password": PASSWORD},
    )
    assert same_email.status_code == 409
    assert same_email.json()["field"] == "email"
    assert same_name.status_code == 409
    assert same_name.json()["field"] == "username"


async def test_list_pages_and_caps_limit(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, auth = await signed_in(app, db_session, client)
    for _ in range(3):
        await make_user(app, db_session)
    page = await client.get(USERS, headers=auth, params={"limit": 2})
    assert page.status_code == 200
    assert len(page.json()["items"]) == 2
    assert "email" not in page.json()["items"][0]
    assert (await client.get(USERS, headers=auth, params={"limit": 1001})).status_code == 422
    assert (await client.get(USERS, headers=auth, params={"skip": -1})).status_code == 422


async def test_search_is_fuzzy_and_index_backed(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, auth = await signed_in(app, db_session, client)
    await make_user(app, db_session, username="grace_hopper", full_name="Grace Hopper")
    await make_user(app, db_session, username="alan_turing", full_name="Alan Turing")
    response = await client.get(USERS, headers=auth, params={"search": "hoper"})
    assert [u["username"] for u in response.json()["items"]] == ["grace_hopper"]
    odd = await client.get(USERS, headers=auth, params={"search": "%'\\_\x00&|!"})
    assert odd.status_code == 200
    await db_session.execute(text("SET enable_seqscan = off"))
    plan = "\n".join(
        (
            await db_session.scalars(
                text(
                    "EXPLAIN SELECT id FROM app.users WHERE lower('hoper') <% "
                    "lower(username || ' ' || coalesce(full_name, ''))"
                )
            )
        ).all()
    )
    assert "ix_users_search_trgm" in plan


async def test_password_change_needs_current_and_ends_other_sessions(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user = await make_user(app, db_session)
    this_session = await sign_in(client, user.username)
    other_session = await sign_in(client, user.email)
    url = f"{USERS}/me/password"
    wrong = await client.post(
        url,
        headers=bearer(this_session),
        json={"current_password": "not it at all", "new_password": "a brand new secret"},
    )
    assert wrong.status_code == 401
    changed = await client.post(
        url,
        headers=bearer(this_session),
        json={"current_password": PASSWORD, "new_password": "a brand new secret"},
    )
    assert changed.status_code == 204
    assert (await client.get(f"{USERS}/me", headers=bearer(this_session))).status_code == 200
    assert (await client.get(f"{USERS}/me", headers=bearer(other_session))).status_code == 401
    await sign_in(client, user.username, "a brand new secret")
