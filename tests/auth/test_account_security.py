"""Account security through the auth API: reset tokens, verification, limits, enumeration."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from structlog.testing import capture_logs

from tests.auth.mailbox import mails, token_in
from tests.auth.timeline import ANSWERED, timeline
from tests.users.factory import PASSWORD, bearer, make_user, sign_in, signed_in

AUTH = "/api/v1/auth"
USERS = "/api/v1/users"
NEW_PASSWORD = "fresh password 42"


async def _reset_token(client: AsyncClient, email: str) -> str:
    with capture_logs() as logs:
        response = await client.post(f"{AUTH}/password-reset/request", json={"email": email})
    assert response.status_code == 202
    return token_in(mails(logs, to=email)[-1])


async def _confirm_reset(client: AsyncClient, token: str, password: str = NEW_PASSWORD) -> int:
    body = {"token": token, "new_password": password}
    return (await client.post(f"{AUTH}/password-reset/confirm", json=body)).status_code


async def test_a_used_reset_token_kills_the_older_ones(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user = await make_user(app, db_session)
    older = await _reset_token(client, user.email)
    newer = await _reset_token(client, user.email)
    assert await _confirm_reset(client, newer) == 204
    assert await _confirm_reset(client, older, "attacker's choice 1") == 400
    await sign_in(client, user.username, NEW_PASSWORD)


async def test_a_password_change_kills_outstanding_reset_tokens(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user = await make_user(app, db_session)
    token = await _reset_token(client, user.email)
    tokens = await sign_in(client, user.username)
    changed = await client.post(
        f"{USERS}/me/password",
        headers=bearer(tokens),
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 204
    assert await _confirm_reset(client, token, "attacker's choice 1") == 400
    await sign_in(client, user.username, NEW_PASSWORD)


async def test_a_verification_token_only_verifies_the_address_it_was_sent_to(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    with capture_logs() as logs:
        signup = await client.post(
            f"{AUTH}/signup",
            json={"email": "first@example.com", "username": "first_addr", "password": PASSWORD},
        )
    assert signup.status_code == 201
    token = token_in(mails(logs, to="first@example.com")[-1])
    _, admin = await signed_in(app, db_session, client, admin=True)
    user_url = f"{USERS}/{signup.json()['id']}"
    moved = await client.patch(user_url, headers=admin, json={"email": "second@example.com"})
    assert moved.status_code == 200
    # The token went to first@; it must not vouch for second@, which nobody has confirmed.
    confirm = await client.post(f"{AUTH}/verify/confirm", json={"token": token})
    assert confirm.status_code == 400
    verified = await db_session.scalar(
        text("SELECT is_verified FROM app.users WHERE id = :id"), {"id": signup.json()["id"]}
    )
    assert verified is False


async def test_a_reset_token_dies_when_the_address_changes(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user = await make_user(app, db_session, email="before@example.com")
    token = await _reset_token(client, "before@example.com")
    _, admin = await signed_in(app, db_session, client, admin=True)
    moved = await client.patch(
        f"{USERS}/{user.id}", headers=admin, json={"email": "after@example.com"}
    )
    assert moved.status_code == 200
    assert await _confirm_reset(client, token) == 400


@pytest.mark.parametrize("kind", ["password-reset", "verify"])
async def test_mails_to_one_address_are_throttled_silently(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, kind: str
) -> None:
    flooded = await make_user(app, db_session)
    other = await make_user(app, db_session)
    url = f"{AUTH}/{kind}/request"
    with capture_logs() as logs:
        answers = [await client.post(url, json={"email": flooded.email}) for _ in range(6)]
        other_answer = await client.post(url, json={"email": other.email})
    assert {(a.status_code, a.text) for a in answers} == {(202, other_answer.text)}
    assert len(mails(logs, to=flooded.email)) == 3  # RATE_LIMIT_MAIL: 3 per hour
    assert len(mails(logs, to=other.email)) == 1


@pytest.mark.parametrize("kind", ["password-reset", "verify"])
async def test_mail_requests_answer_before_any_database_work(
    app: FastAPI, db_session: AsyncSession, kind: str
) -> None:
    # Timing is what leaks, and can't be asserted; the order of the work can.
    user = await make_user(app, db_session)
    for email, mailed in ((user.email, 1), ("nobody-here@example.com", 0)):
        async with timeline(app) as (http, events):
            with capture_logs() as logs:
                response = await http.post(f"{AUTH}/{kind}/request", json={"email": email})
        assert response.status_code == 202
        assert events[0] == ANSWERED, events  # no SQL before the answer ...
        assert len(mails(logs)) == mailed  # ... and the work still happens after it
