"""SQL for sessions (token families, refresh tokens) and one-time action tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from uuid import UUID

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from keel.auth.models import (
    ActionPurpose,
    ActionToken,
    RefreshToken,
    SignupRequest,
    TokenFamily,
)
from keel.core.db import ReadPool
from keel.core.viewer import Role, Viewer, evict_after_commit

# The caller behind an access token, if its session is open and the account active, with
# their memberships (organization ids and roles, from one index) in the same statement.
VIEWER_QUERY = """
SELECT u.is_superuser, m.tenant_ids, m.roles
FROM app.users AS u JOIN app.token_families AS f ON f.user_id = u.id
CROSS JOIN LATERAL (
    SELECT array_agg(tenant_id) AS tenant_ids, array_agg(role) AS roles
    FROM app.memberships WHERE user_id = u.id
) AS m
WHERE u.id = $1 AND f.id = $2 AND f.revoked_at IS NULL AND u.is_active
"""


async def open_family(session: AsyncSession, user_id: UUID) -> TokenFamily:
    family = TokenFamily(user_id=user_id)
    session.add(family)
    await session.flush()
    return family


async def load_viewer(reads: ReadPool, user_id: UUID, family_id: UUID) -> Viewer | None:
    """The `Viewer` for (user, token family): one prepared statement on the read pool."""
    row = await reads.fetchrow(VIEWER_QUERY, user_id, family_id)
    if row is None:
        return None
    tenant_ids, roles = row[1] or (), row[2] or ()
    return Viewer(
        user_id=user_id,
        family_id=family_id,
        is_superuser=row[0],
        is_active=True,
        memberships=MappingProxyType(
            {tenant: Role(role) for tenant, role in zip(tenant_ids, roles, strict=True)}
        ),
    )


async def revoke_family(session: AsyncSession, family_id: UUID, reason: str) -> None:
    evict_after_commit(session, family_id=family_id)
    await session.execute(
        update(TokenFamily)
        .where(col(TokenFamily.id) == family_id, col(TokenFamily.revoked_at).is_(None))
        .values(revoked_at=func.now(), revoked_reason=reason)
    )


async def revoke_user_families(
    session: AsyncSession, user_id: UUID, reason: str, *, keep: UUID | None = None
) -> None:
    """End every session of a user, except `keep` (the caller's own, if given)."""
    evict_after_commit(session, user_id=user_id)
    statement = update(TokenFamily).where(
        col(TokenFamily.user_id) == user_id, col(TokenFamily.revoked_at).is_(None)
    )
    if keep is not None:
        statement = statement.where(col(TokenFamily.id) != keep)
    await session.execute(statement.values(revoked_at=func.now(), revoked_reason=reason))


async def add_refresh_token(
    session: AsyncSession, token_id: UUID, family_id: UUID, expires_at: datetime
) -> None:
    session.add(RefreshToken(id=token_id, family_id=family_id, expires_at=expires_at))
    await session.flush()


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    token: RefreshToken
    family: TokenFamily


async def lock_refresh_token(session: AsyncSession, token_id: UUID) -> RefreshRecord | None:
    """The refresh token and its family, row-locked so concurrent rotations serialise."""
    statement = (
        select(RefreshToken, TokenFamily)
        .join(TokenFamily, col(TokenFamily.id) == col(RefreshToken.family_id))
        .where(col(RefreshToken.id) == token_id)
        .with_for_update(of=RefreshToken)
    )
    row = (await session.execute(statement)).first()
    return RefreshRecord(token=row[0], family=row[1]) if row else None


async def mark_refresh_used(session: AsyncSession, token: RefreshToken) -> None:
    token.used_at = await session.scalar(select(func.now()))
    await session.flush()


async def add_action_token(
    session: AsyncSession,
    user_id: UUID,
    purpose: ActionPurpose,
    token_hash: bytes,
    sent_to_hash: bytes,
    expires_at: datetime,
) -> None:
    session.add(
        ActionToken(
            user_id=user_id,
            purpose=purpose,
            token_hash=token_hash,
            sent_to_hash=sent_to_hash,
            expires_at=expires_at,
        )
    )
    await session.flush()


@dataclass(frozen=True, slots=True)
class SpentToken:
    user_id: UUID
    sent_to_hash: bytes


async def consume_action_token(
    session: AsyncSession, purpose: ActionPurpose, token_hash: bytes
) -> SpentToken | None:
    """Mark a live token used and return whom it was for; None if unknown, used or expired."""
    statement = (
        update(ActionToken)
        .where(
            col(ActionToken.token_hash) == token_hash,
            col(ActionToken.purpose) == purpose,
            col(ActionToken.used_at).is_(None),
            col(ActionToken.expires_at) > func.now(),
        )
        .values(used_at=func.now())
        .returning(col(ActionToken.user_id), col(ActionToken.sent_to_hash))
    )
    row = (await session.execute(statement)).first()
    return SpentToken(user_id=row[0], sent_to_hash=row[1]) if row else None


async def add_signup_request(session: AsyncSession, request: SignupRequest) -> None:
    session.add(request)
    await session.flush()


async def consume_signup_request(session: AsyncSession, token_hash: bytes) -> SignupRequest | None:
    """Take the live sign-up request with this token out of the table; expired ones go too."""
    await session.execute(delete(SignupRequest).where(col(SignupRequest.expires_at) <= func.now()))
    statement = (
        delete(SignupRequest)
        .where(col(SignupRequest.token_hash) == token_hash)
        .returning(SignupRequest)
    )
    return (await session.scalars(statement)).first()
