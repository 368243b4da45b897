"""Invitations by email: single-use, expiring, bound to the invited address.

The raw token only ever travels in the mail; the table keeps its SHA-256. Accepting
needs a session of the account that owns the invited address, with that address
verified, so a forwarded or leaked mail is no use to anyone else.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from keel.config import Settings
from keel.core.errors import Conflict, Forbidden, KeelError, NotFound
from keel.core.mail import Mail
from keel.core.viewer import Role, Viewer, evict_after_commit
from keel.orgs import repository
from keel.orgs.models import Invitation
from keel.orgs.permissions import OrgActor, Permission
from keel.orgs.schemas import InvitationCreate, InvitationPublic
from keel.orgs.service import check_rank
from keel.users import service as users

log = structlog.get_logger(__name__)
API = "/api/v1/invitations/accept"


class InvitationGone(KeelError):
    status_code, slug, title = 410, "invitation-gone", "Gone"


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def invitation_mail(settings: Settings, to: str, organization: str, token: str) -> Mail:
    return Mail(
        to=to,
        subject=f"You are invited to {organization} on Keel",
        body=(
            f"Sign in as {to} (with that address verified) and accept within "
            f"{settings.org_invitation_hours} hours with this token:\n\n{token}\n\n"
            f"POST {settings.public_base_url}{API}"
            ' with {"token": ...}'
        ),
    )


async def create_invitation(
    session: AsyncSession, settings: Settings, actor: OrgActor, data: InvitationCreate
) -> tuple[InvitationPublic, Mail]:
    """The invitation and the mail carrying its token (sent once the transaction commits)."""
    actor.require(Permission.INVITATIONS_MANAGE)
    check_rank(actor, data.role)
    organization = await repository.get_organization(session, actor.organization_id)
    if organization is None:
        raise NotFound("No such organization.")
    email = str(data.email)
    invitee = await users.find_by_email(session, email)
    if invitee is not None and await repository.get_membership(
        session, organization.id, invitee.id
    ):
        raise Conflict("That address belongs to a member already.", field="email")
    token = secrets.token_urlsafe(32)
    invitation = await repository.add_invitation(
        session,
        Invitation(
            tenant_id=organization.id,
            email=email,
            role=data.role,
            token_hash=token_hash(token),
            invited_by=actor.user_id,
            expires_at=datetime.now(UTC) + timedelta(hours=settings.org_invitation_hours),
        ),
    )
    log.info(
        "orgs.invited",
        organization_id=str(organization.id),
        invitation_id=str(invitation.id),
        by=str(actor.user_id),
    )
    return _public(invitation), invitation_mail(settings, email, organization.name, token)


def _public(invitation: Invitation) -> InvitationPublic:
    return InvitationPublic(
        id=invitation.id,
        organization_id=invitation.tenant_id,
        email=invitation.email,
        role=Role(invitation.role),
        invited_by=invitation.invited_by,
        created_at=invitation.created_at or invitation.expires_at,
        expires_at=invitation.expires_at,
    )


async def list_pending(session: AsyncSession, actor: OrgActor) -> list[dict[str, Any]]:
    actor.require(Permission.INVITATIONS_MANAGE)
    return [
        dict(row) for row in await repository.pending_invitations(session, actor.organization_id)
    ]


async def revoke(session: AsyncSession, actor: OrgActor, invitation_id: Any) -> None:
    actor.require(Permission.INVITATIONS_MANAGE)
    if not await repository.revoke_invitation(session, actor.organization_id, invitation_id):
        raise NotFound("No pending invitation with this id in this organization.")
    log.info(
        "orgs.invitation_revoked",
        organization_id=str(actor.organization_id),
        invitation_id=str(invitation_id),
        by=str(actor.user_id),
    )


async def accept(session: AsyncSession, viewer: Viewer, token: str) -> dict[str, Any]:
    """Join the organization as the invited role; the invitation is spent."""
    found = await repository.lock_invitation(session, token_hash(token))
    if found is None:
        raise NotFound("No invitation has this token.")
    invitation, expired = found
    if invitation.revoked_at is not None:
        raise InvitationGone("This invitation was revoked.")
    if invitation.accepted_at is not None:
        raise InvitationGone("This invitation was used already.")
    if expired:
        raise InvitationGone("This invitation has expired; ask for a new one.")
    user = await users.find(session, viewer.user_id)
    if user is None or user.email.lower() != invitation.email.lower():
        raise Forbidden("This invitation is for another address: sign in as that account.")
    if not user.is_verified:
        raise Forbidden("Verify your email address first, then accept the invitation.")
    if await repository.get_membership(session, invitation.tenant_id, user.id) is not None:
        raise Conflict("You are a member of this organization already.")
    await repository.add_membership(session, invitation.tenant_id, user.id, invitation.role)
    await repository.mark_accepted(session, invitation)
    evict_after_commit(session, user_id=user.id)
    log.info(
        "orgs.invitation_accepted",
        organization_id=str(invitation.tenant_id),
        invitation_id=str(invitation.id),
        user_id=str(user.id),
    )
    return {"organization_id": invitation.tenant_id, "role": Role(invitation.role)}
