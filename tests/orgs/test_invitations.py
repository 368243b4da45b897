"""Invitations: mailed, single-use, expiring, bound to the invited address, revocable."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from structlog.testing import capture_logs

from tests.auth.mailbox import mails, token_in
from tests.orgs.factory import ORGS, create_org
from tests.users.factory import signed_in

ACCEPT = "/api/v1/invitations/accept"


async def _invite(
    client: AsyncClient, auth: dict[str, str], org_id: str, email: str, role: str = "member"
) -> tuple[dict[str, Any], str]:
    with capture_logs() as logs:
        response = await client.post(
            f"{ORGS}/{org_id}/invitations", json={"email": email, "role": role}, headers=auth
        )
    assert response.status_code == 201, response.text
    sent = mails(logs, to=email)
    assert len(sent) == 1
    invitation: dict[str, Any] = response.json()
    assert "token" not in invitation
    return invitation, token_in(sent[0])


async def test_invite_accept_and_the_token_is_spent(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, owner = await signed_in(app, db_session, client)
    org = await create_org(client, owner, name="Acme")
    invitee, invitee_auth = await signed_in(
        app, db_session, client, email="New@Example.com", is_verified=True
    )
    invitation, token = await _invite(client, owner, org["id"], "new@example.com", "admin")
    stored = await db_session.scalar(
        text("SELECT count(*) FROM app.invitations WHERE token_hash = convert_to(:t, 'UTF8')"),
        {"t": token},
    )
    assert stored == 0  # only a hash is kept

    pending = await client.get(f"{ORGS}/{org['id']}/invitations", headers=owner)
    assert [i["id"] for i in pending.json()] == [invitation["id"]]

    accepted = await client.post(ACCEPT, json={"token": token}, headers=invitee_auth)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {"organization_id": org["id"], "role": "admin"}
    # The caller's next request already sees the membership (local eviction + NOTIFY).
    got = await client.get(f"{ORGS}/{org['id']}", headers=invitee_auth)
    assert got.status_code == 200
    assert got.json()["role"] == "admin"
    assert (await client.get(f"{ORGS}/{org['id']}/invitations", headers=owner)).json() == []

    reused = await client.post(ACCEPT, json={"token": token}, headers=invitee_auth)
    assert reused.status_code == 410
    assert reused.headers["content-type"] == "application/problem+json"
    assert invitee.email != "new@example.com"  # matched without regard to case


async def test_the_wrong_address_or_an_unverified_one_cannot_accept(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, owner = await signed_in(app, db_session, client)
    org = await create_org(client, owner)
    _, other_auth = await signed_in(app, db_session, client, is_verified=True)
    _, unverified_auth = await signed_in(app, db_session, client, email="un@example.com")
    _, token = await _invite(client, owner, org["id"], "un@example.com")

    wrong = await client.post(ACCEPT, json={"token": token}, headers=other_auth)
    assert wrong.status_code == 403
    assert "another address" in wrong.json()["detail"]
    unverified = await client.post(ACCEPT, json={"token": token}, headers=unverified_auth)
    assert unverified.status_code == 403
    assert "Verify" in unverified.json()["detail"]
    # Neither attempt spent it.
    assert len((await client.get(f"{ORGS}/{org['id']}/invitations", headers=owner)).json()) == 1
    assert (await client.get(f"{ORGS}/{org['id']}", headers=other_auth)).status_code == 404
    assert (await client.post(ACCEPT, json={"token": token})).status_code == 401


async def test_expired_and_revoked_invitations_are_refused(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, owner = await signed_in(app, db_session, client)
    org = await create_org(client, owner)
    _, invitee = await signed_in(app, db_session, client, email="in@example.com", is_verified=True)

    expiring, expired_token = await _invite(client, owner, org["id"], "in@example.com")
    await db_session.execute(
        text("UPDATE app.invitations SET expires_at = now() - interval '1 second' WHERE id = :i"),
        {"i": expiring["id"]},
    )
    expired = await client.post(ACCEPT, json={"token": expired_token}, headers=invitee)
    assert expired.status_code == 410
    assert "expired" in expired.json()["detail"]
    assert (await client.get(f"{ORGS}/{org['id']}/invitations", headers=owner)).json() == []

    revoking, revoked_token = await _invite(client, owner, org["id"], "in@example.com")
    url = f"{ORGS}/{org['id']}/invitations/{revoking['id']}"
    assert (await client.delete(url, headers=owner)).status_code == 204
    assert (await client.delete(url, headers=owner)).status_code == 404  # revoked already
    revoked = await client.post(ACCEPT, json={"token": revoked_token}, headers=invitee)
    assert revoked.status_code == 410
    assert "revoked" in revoked.json()["detail"]

    unknown = await client.post(ACCEPT, json={"token": "nope"}, headers=invitee)
    assert unknown.status_code == 404
    empty = await client.post(ACCEPT, json={"token": ""}, headers=invitee)
    assert empty.status_code == 422
    assert (await client.get(f"{ORGS}/{org['id']}", headers=invitee)).status_code == 404


async def test_invitation_ids_are_checked_against_the_organization(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, owner = await signed_in(app, db_session, client)
    mine = await create_org(client, owner)
    _, other_owner = await signed_in(app, db_session, client)
    theirs = await create_org(client, other_owner)
    invitation, _ = await _invite(client, other_owner, theirs["id"], "x@example.com")
    # An admin of one organization can't revoke another's invitation through their own.
    cross = await client.delete(
        f"{ORGS}/{mine['id']}/invitations/{invitation['id']}", headers=owner
    )
    assert cross.status_code == 404
    assert (
        len((await client.get(f"{ORGS}/{theirs['id']}/invitations", headers=other_owner)).json())
        == 1
    )


async def test_members_cannot_be_invited_again_and_bad_input_is_a_4xx(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    owner_user, owner = await signed_in(app, db_session, client)
    org = await create_org(client, owner)
    url = f"{ORGS}/{org['id']}/invitations"
    again = await client.post(url, json={"email": owner_user.email}, headers=owner)
    assert again.status_code == 409
    for body in ({"email": "not-an-address"}, {"email": "a@example.com", "role": "god"}, {}):
        assert (await client.post(url, json=body, headers=owner)).status_code == 422
