"""SQL for organizations, memberships and invitations. Every query on their tables is here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from keel.core.errors import Conflict
from keel.orgs.models import Invitation, Membership, Organization

ORGANIZATIONS_OF_USER = text(
    """
    SELECT o.id, o.name, o.slug, o.personal, o.created_at, m.role
    FROM app.memberships AS m JOIN app.organizations AS o ON o.id = m.tenant_id
    WHERE m.user_id = :user_id
    ORDER BY o.personal DESC, o.name, o.id
    """
)
# Members with the account fields a member list shows (never emails: viewers see it too).
MEMBERS = text(
    """
    SELECT m.user_id, u.username, u.full_name, m.role, m.created_at
    FROM app.memberships AS m JOIN app.users AS u ON u.id = m.user_id
    WHERE m.tenant_id = :tenant_id
    ORDER BY m.created_at, m.user_id
    """
)
PENDING_INVITATIONS = text(
    """
    SELECT id, tenant_id AS organization_id, email::text AS email, role, invited_by,
           created_at, expires_at
    FROM app.invitations
    WHERE tenant_id = :tenant_id AND accepted_at IS NULL AND revoked_at IS NULL
      AND expires_at > now()
    ORDER BY created_at, id
    """
)


async def add_organization(session: AsyncSession, organization: Organization) -> Organization:
    """Insert or update; a taken slug is a 409 naming the field."""
    session.add(organization)
    try:
        await session.flush()
    except IntegrityError as exc:
        constraint = getattr(getattr(exc.orig, "__cause__", None), "constraint_name", None)
        if constraint != "uq_organizations_slug":
            raise
        raise Conflict("An organization with this slug already exists.", field="slug") from exc
    await session.refresh(organization)
    return organization


async def get_organization(
    session: AsyncSession, organization_id: UUID, *, lock: bool = False
) -> Organization | None:
    """The organization; `lock` takes its row lock, which serialises changes to its owners."""
    statement = select(Organization).where(col(Organization.id) == organization_id)
    if lock:
        statement = statement.with_for_update(key_share=True)  # FOR NO KEY UPDATE
    return (await session.execute(statement)).scalar_one_or_none()


async def delete_organization(session: AsyncSession, organization_id: UUID) -> None:
    await session.execute(delete(Organization).where(col(Organization.id) == organization_id))


async def organizations_of(session: AsyncSession, user_id: UUID) -> Sequence[Any]:
    return (await session.execute(ORGANIZATIONS_OF_USER, {"user_id": user_id})).mappings().all()


async def add_membership(session: AsyncSession, tenant_id: UUID, user_id: UUID, role: str) -> None:
    session.add(Membership(tenant_id=tenant_id, user_id=user_id, role=role))
    await session.flush()


async def get_membership(
    session: AsyncSession, tenant_id: UUID, user_id: UUID
) -> Membership | None:
    return await session.get(Membership, (tenant_id, user_id))


async def count_owners(session: AsyncSession, tenant_id: UUID) -> int:
    statement = select(func.count()).where(
        col(Membership.tenant_id) == tenant_id, col(Membership.role) == "owner"
    )
    return int(await session.scalar(statement) or 0)


async def set_role(session: AsyncSession, tenant_id: UUID, user_id: UUID, role: str) -> None:
    await session.execute(
        update(Membership)
        .where(col(Membership.tenant_id) == tenant_id, col(Membership.user_id) == user_id)
        .values(role=role)
    )


async def delete_membership(session: AsyncSession, tenant_id: UUID, user_id: UUID) -> None:
    await session.execute(
        delete(Membership).where(
            col(Membership.tenant_id) == tenant_id, col(Membership.user_id) == user_id
        )
    )


async def members(session: AsyncSession, tenant_id: UUID) -> Sequence[Any]:
    return (await session.execute(MEMBERS, {"tenant_id": tenant_id})).mappings().all()


async def member_ids(session: AsyncSession, tenant_id: UUID) -> list[UUID]:
    statement = select(col(Membership.user_id)).where(col(Membership.tenant_id) == tenant_id)
    return list((await session.scalars(statement)).all())


async def add_invitation(session: AsyncSession, invitation: Invitation) -> Invitation:
    session.add(invitation)
    await session.flush()
    await session.refresh(invitation)
    return invitation


async def pending_invitations(session: AsyncSession, tenant_id: UUID) -> Sequence[Any]:
    return (await session.execute(PENDING_INVITATIONS, {"tenant_id": tenant_id})).mappings().all()


async def revoke_invitation(session: AsyncSession, tenant_id: UUID, invitation_id: UUID) -> bool:
    """Revoke a pending invitation of this organization; False if there is none."""
    statement = (
        update(Invitation)
        .where(
            col(Invitation.tenant_id) == tenant_id,
            col(Invitation.id) == invitation_id,
            col(Invitation.accepted_at).is_(None),
            col(Invitation.revoked_at).is_(None),
        )
        .values(revoked_at=func.now())
        .returning(col(Invitation.id))
    )
    return (await session.execute(statement)).first() is not None


async def lock_invitation(
    session: AsyncSession, token_hash: bytes
) -> tuple[Invitation, bool] | None:
    """The invitation with this token, row-locked so two accepts of it serialise, and whether
    it has expired (by the database clock, like every other expiry)."""
    statement = (
        select(Invitation, func.now() >= col(Invitation.expires_at))
        .where(col(Invitation.token_hash) == token_hash)
        .with_for_update(of=Invitation)
    )
    row = (await session.execute(statement)).first()
    return (row[0], bool(row[1])) if row else None


async def mark_accepted(session: AsyncSession, invitation: Invitation) -> None:
    await session.execute(
        update(Invitation)
        .where(
            col(Invitation.tenant_id) == invitation.tenant_id,
            col(Invitation.id) == invitation.id,
        )
        .values(accepted_at=func.now())
    )
