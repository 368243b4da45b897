"""SIGNUP_ENUMERATION_SAFE: no answer, mail or later request tells a registered email apart."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession
from structlog.testing import capture_logs

from keel.config import Settings
from tests.auth.mailbox import mails, token_in
from tests.auth.timeline import ANSWERED, timeline
from tests.conftest import make_settings
from tests.users.factory import PASSWORD, make_user, sign_in, signed_in

AUTH = "/api/v1/auth"
USERS = "/api/v1/users"


@pytest.fixture
def settings(test_database_url: str, data_dir: Path) -> Settings:
    """This module's app runs with SIGNUP_ENUMERATION_SAFE=true."""
    return make_settings(test_database_url, data_dir, signup_enumeration_safe=True)


async def _sign_up(client: AsyncClient, email: str, username: str) -> tuple[int, str]:
    body = {"email": email, "username": username, "password": PASSWORD}
    response = await client.post(f"{AUTH}/signup", json=body)
    return response.status_code, response.text


async def test_enumeration_safe_signup_answers_the_same_and_mails_either_way(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    await make_user(app, db_session, email="taken@example.com")
    with capture_logs() as logs:
        taken = await _sign_up(client, "Taken@Example.com", "someone_new")
        fresh = await _sign_up(client, "fresh@example.com", "fresh_user")
    assert taken[0] == fresh[0] == 202
    assert taken[1] == fresh[1]
    [notice] = mails(logs, to="taken@example.com")
    assert notice["subject"] == "Someone tried to sign up with your email on Keel"
    [invitation] = mails(logs, to="fresh@example.com")
    # Nothing exists before the address confirms: no account to sign in to, no username taken.
    login = await client.post(
        f"{AUTH}/login", data={"username": "fresh_user", "password": PASSWORD}
    )
    assert login.status_code == 401
    assert (await _sign_up(client, "other@example.com", "fresh_user"))[0] == 202
    created = await client.post(f"{AUTH}/signup/confirm", json={"token": token_in(invitation)})
    assert created.status_code == 201
    assert (created.json()["email"], created.json()["is_verified"]) == ("fresh@example.com", True)
    again = await client.post(f"{AUTH}/signup/confirm", json={"token": token_in(invitation)})
    assert again.status_code == 400
    await sign_in(client, "fresh_user")


async def test_enumeration_safe_signup_answers_before_any_work(
    app: FastAPI, db_session: AsyncSession
) -> None:
    await make_user(app, db_session, email="known@example.com")
    for email, username in (("known@example.com", "name_one"), ("new@example.com", "name_two")):
        async with timeline(app) as (http, events):
            with capture_logs() as logs:
                body = {"email": email, "username": username, "password": PASSWORD}
                response = await http.post(f"{AUTH}/signup", json=body)
        assert response.status_code == 202
        assert events[0] == ANSWERED, events  # no SQL before the answer ...
        assert len(mails(logs, to=email)) == 1  # ... and a mail after it, either way


async def test_enumeration_safe_email_change_hides_registered_addresses(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    await make_user(app, db_session, email="owned@example.com")
    _, auth = await signed_in(app, db_session, client)
    answers = []
    with capture_logs() as logs:
        for address in ("owned@example.com", "free@example.com"):
            body = {"email": address, "current_password": PASSWORD}
            response = await client.patch(f"{USERS}/me", headers=auth, json=body)
            answers.append((response.status_code, response.json()["pending_email"]))
    assert answers == [(200, "owned@example.com"), (200, "free@example.com")]
    [notice] = mails(logs, to="owned@example.com")
    assert notice["subject"] == "Someone tried to use your email on Keel"
    assert token_in(mails(logs, to="free@example.com")[0])
