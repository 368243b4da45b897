"""Organizations: `/api/v1/orgs`, members, invitations, and `/api/v1/invitations/accept`.

Routes under `/orgs/{org_id}` take `ActiveOrg`: a non-member gets 404, and body-taking
routes say so before reading the body. Permissions are checked in the services.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import BackgroundTasks, status

from keel.core.db import SessionDep
from keel.core.deps import SIGNED_IN_ERRORS, ServicesDep, ViewerDep
from keel.core.routing import KeelRouter, Responses
from keel.orgs import invitations, service
from keel.orgs.deps import ORG_ERRORS, ActiveOrg
from keel.orgs.schemas import (
    InvitationAccept,
    InvitationCreate,
    InvitationPublic,
    MemberPublic,
    OrganizationCreate,
    OrganizationPublic,
    OrganizationUpdate,
    RoleChange,
)

router = KeelRouter(tags=["organizations"])

IN_ORG: Responses = {
    **SIGNED_IN_ERRORS,
    **ORG_ERRORS,
    403: {"description": "Your role here doesn't allow this"},
}
LAST_OWNER: Responses = {409: {"description": "It would leave the organization without an owner"}}
MEMBER_ERRORS: Responses = {**IN_ORG, **LAST_OWNER, 404: {"description": "No such member"}}


@router.get("/orgs", response_model=list[OrganizationPublic], responses=SIGNED_IN_ERRORS)
async def list_organizations(session: SessionDep, viewer: ViewerDep) -> Any:
    """The organizations you belong to, with your role in each (personal first)."""
    return await service.list_organizations(session, viewer)


@router.post(
    "/orgs",
    status_code=status.HTTP_201_CREATED,
    response_model=OrganizationPublic,
    responses={**SIGNED_IN_ERRORS, 409: {"description": "Slug taken"}},
    summary="Create an organization (you become its owner)",
)
async def create_organization(
    data: OrganizationCreate, session: SessionDep, viewer: ViewerDep
) -> Any:
    return await service.create_organization(session, viewer, data)


@router.get("/orgs/{org_id}", response_model=OrganizationPublic, responses=IN_ORG)
async def get_organization(session: SessionDep, actor: ActiveOrg) -> Any:
    return await service.get_organization(session, actor)


@router.patch(
    "/orgs/{org_id}",
    response_model=OrganizationPublic,
    responses={**IN_ORG, 409: {"description": "Slug taken, or a personal organization's slug"}},
)
async def update_organization(
    data: OrganizationUpdate, session: SessionDep, actor: ActiveOrg
) -> Any:
    return await service.update_organization(session, actor, data)


@router.delete(
    "/orgs/{org_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**IN_ORG, 409: {"description": "A personal organization"}},
)
async def delete_organization(session: SessionDep, actor: ActiveOrg) -> None:
    await service.delete_organization(session, actor)


@router.get("/orgs/{org_id}/members", response_model=list[MemberPublic], responses=IN_ORG)
async def list_members(session: SessionDep, actor: ActiveOrg) -> Any:
    return await service.list_members(session, actor)


@router.patch("/orgs/{org_id}/members/{user_id}", responses=MEMBER_ERRORS)
async def change_role(
    user_id: UUID, data: RoleChange, session: SessionDep, actor: ActiveOrg
) -> dict[str, Any]:
    """Change a member's role: never to or from a role stronger than your own."""
    return await service.change_role(session, actor, user_id, data.role)


@router.delete(
    "/orgs/{org_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=MEMBER_ERRORS,
)
async def remove_member(user_id: UUID, session: SessionDep, actor: ActiveOrg) -> None:
    await service.remove_member(session, actor, user_id)


@router.post(
    "/orgs/{org_id}/leave",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**IN_ORG, **LAST_OWNER},
)
async def leave(session: SessionDep, actor: ActiveOrg) -> None:
    """Leave the organization (the last owner can't)."""
    await service.remove_member(session, actor, actor.user_id)


@router.post(
    "/orgs/{org_id}/invitations",
    status_code=status.HTTP_201_CREATED,
    response_model=InvitationPublic,
    responses={**IN_ORG, 409: {"description": "The address belongs to a member already"}},
    summary="Invite someone by email (the token goes only to that address)",
)
async def create_invitation(
    data: InvitationCreate,
    session: SessionDep,
    services: ServicesDep,
    actor: ActiveOrg,
    background: BackgroundTasks,
) -> Any:
    invitation, mail = await invitations.create_invitation(session, services.settings, actor, data)
    background.add_task(services.mailer.send, mail)  # after the commit
    return invitation


@router.get("/orgs/{org_id}/invitations", response_model=list[InvitationPublic], responses=IN_ORG)
async def list_invitations(session: SessionDep, actor: ActiveOrg) -> Any:
    """Pending invitations: not accepted, revoked or expired."""
    return await invitations.list_pending(session, actor)


@router.delete(
    "/orgs/{org_id}/invitations/{invitation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**IN_ORG, 404: {"description": "No pending invitation with this id here"}},
)
async def revoke_invitation(invitation_id: UUID, session: SessionDep, actor: ActiveOrg) -> None:
    await invitations.revoke(session, actor, invitation_id)


@router.post(
    "/invitations/accept",
    responses={
        **SIGNED_IN_ERRORS,
        403: {"description": "Signed in as another address, or it isn't verified"},
        404: {"description": "No invitation has this token"},
        409: {"description": "A member already"},
        410: {"description": "Revoked, used or expired"},
    },
    summary="Accept an invitation, signed in as the invited address",
)
async def accept_invitation(
    data: InvitationAccept, session: SessionDep, viewer: ViewerDep
) -> dict[str, Any]:
    return await invitations.accept(session, viewer, data.token)
