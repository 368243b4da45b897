"""Organizations and their members. Every operation checks the caller's permission here.

Membership changes NOTIFY every worker (migration 0012's trigger); the request that
makes one also evicts the affected viewers locally, so the caller's next request
already sees it.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.errors import Conflict, Forbidden, NotFound
from keel.core.viewer import Role, Viewer, evict_after_commit
from keel.orgs import repository
from keel.orgs.models import Organization
from keel.orgs.permissions import OrgActor, Permission
from keel.orgs.schemas import OrganizationCreate, OrganizationPublic, OrganizationUpdate

log = structlog.get_logger(__name__)
NO_SUCH_ORGANIZATION = "No such organization."
NO_SUCH_MEMBER = "No such member of this organization."
LAST_OWNER = "An organization keeps at least one owner: make someone else owner first."


def _public(organization: Organization, role: Role | None) -> OrganizationPublic:
    return OrganizationPublic.model_validate(
        {**organization.model_dump(), "role": role}, from_attributes=False
    )


async def create_organization(
    session: AsyncSession, viewer: Viewer, data: OrganizationCreate
) -> OrganizationPublic:
    """Anyone signed in may create one; they become its owner."""
    organization = await repository.add_organization(
        session, Organization(name=data.name, slug=data.slug)
    )
    await repository.add_membership(session, organization.id, viewer.user_id, Role.OWNER)
    evict_after_commit(session, user_id=viewer.user_id)
    log.info("orgs.created", organization_id=str(organization.id), user_id=str(viewer.user_id))
    return _public(organization, Role.OWNER)


async def list_organizations(session: AsyncSession, viewer: Viewer) -> list[dict[str, Any]]:
    return [dict(row) for row in await repository.organizations_of(session, viewer.user_id)]


async def _organization(
    session: AsyncSession, actor: OrgActor, *, lock: bool = False
) -> Organization:
    organization = await repository.get_organization(session, actor.organization_id, lock=lock)
    if organization is None:
        raise NotFound(NO_SUCH_ORGANIZATION)
    return organization


async def get_organization(session: AsyncSession, actor: OrgActor) -> OrganizationPublic:
    actor.require(Permission.ORG_VIEW)
    return _public(await _organization(session, actor), actor.role)


async def update_organization(
    session: AsyncSession, actor: OrgActor, data: OrganizationUpdate
) -> OrganizationPublic:
    actor.require(Permission.ORG_UPDATE)
    organization = await _organization(session, actor)
    if data.slug is not None and data.slug != organization.slug:
        if organization.personal:
            raise Conflict("A personal organization keeps its slug.", field="slug")
        organization.slug = data.slug
    if data.name is not None:
        organization.name = data.name
    organization = await repository.add_organization(session, organization)
    return _public(organization, actor.role)


async def delete_organization(session: AsyncSession, actor: OrgActor) -> None:
    actor.require(Permission.ORG_DELETE)
    organization = await _organization(session, actor, lock=True)
    if organization.personal:
        raise Conflict("A personal organization can't be deleted.")
    for user_id in await repository.member_ids(session, organization.id):
        evict_after_commit(session, user_id=user_id)
    await repository.delete_organization(session, organization.id)
    log.info("orgs.deleted", organization_id=str(organization.id), by=str(actor.user_id))


async def list_members(session: AsyncSession, actor: OrgActor) -> list[dict[str, Any]]:
    actor.require(Permission.MEMBERS_VIEW)
    await _organization(session, actor)
    return [dict(row) for row in await repository.members(session, actor.organization_id)]


async def _target_role(session: AsyncSession, actor: OrgActor, user_id: UUID) -> Role:
    """The member's current role, with the organization locked: owner changes serialise."""
    await _organization(session, actor, lock=True)
    membership = await repository.get_membership(session, actor.organization_id, user_id)
    if membership is None:
        raise NotFound(NO_SUCH_MEMBER)
    return Role(membership.role)


def check_rank(actor: OrgActor, *roles: Role) -> None:
    """Nobody grants, changes or removes a role stronger than their own."""
    if any(role.rank > actor.rank for role in roles):
        raise Forbidden("Nobody grants, changes or removes a role stronger than their own.")


async def _keep_an_owner(session: AsyncSession, actor: OrgActor, current: Role) -> None:
    if current is Role.OWNER and await repository.count_owners(session, actor.organization_id) <= 1:
        raise Conflict(LAST_OWNER)


async def change_role(
    session: AsyncSession, actor: OrgActor, user_id: UUID, role: Role
) -> dict[str, Any]:
    actor.require(Permission.MEMBERS_MANAGE)
    current = await _target_role(session, actor, user_id)
    check_rank(actor, current, role)
    if role is not current:
        if role is not Role.OWNER:
            await _keep_an_owner(session, actor, current)
        await repository.set_role(session, actor.organization_id, user_id, role)
        evict_after_commit(session, user_id=user_id)
        log.info(
            "orgs.role_changed",
            organization_id=str(actor.organization_id),
            user_id=str(user_id),
            role=str(role),
            by=str(actor.user_id),
        )
    return {"user_id": user_id, "role": role}


async def remove_member(session: AsyncSession, actor: OrgActor, user_id: UUID) -> None:
    """Remove a member; removing yourself is leaving, which any role may do."""
    if user_id != actor.user_id:
        actor.require(Permission.MEMBERS_MANAGE)
    current = await _target_role(session, actor, user_id)
    if user_id != actor.user_id:
        check_rank(actor, current)
    await _keep_an_owner(session, actor, current)
    await repository.delete_membership(session, actor.organization_id, user_id)
    evict_after_commit(session, user_id=user_id)
    log.info(
        "orgs.member_removed",
        organization_id=str(actor.organization_id),
        user_id=str(user_id),
        by=str(actor.user_id),
    )
