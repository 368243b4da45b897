"""SQL for sessions (token families, refresh tokens) and one-time action tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from keel.auth.models import ActionPurpose, ActionToken, RefreshToken, TokenFamily
from keel.users.models import User


async def open_family(session: AsyncSession, user_id: UUID) -> TokenFamily:
    family = TokenFamily(user_id=user_id)
    session.add(family)
    await session.flush()
    return family


async def revoke_family(session: AsyncSession, family_id: UUID, reason: str) -> None:
    await session.execute(
        update(TokenFamily)
        .where(col(TokenFamily.id) == family_id, col(TokenFamily.revoked_at).is_(None))
        .values(revoked_at=func.now(), revoked_reason=reason)
    )


async def revoke_user_families(
    session: AsyncSession, user_id: UUID, reason: str, *, keep: UUID | None = None
) -> None:
    """End every session of a user, except `keep` (the caller's own, if given)."""
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


async def user_for_session(session: AsyncSession, user_id: UUID, family_id: UUID) -> User | None:
    """The active user behind an access token whose family is still open: one round trip."""
    statement = (
        select(User)
        .join(TokenFamily, col(TokenFamily.user_id) == col(User.id))
        .where(
            col(User.id) == user_id,
            col(User.is_active).is_(True),
            col(TokenFamily.id) == family_id,
            col(TokenFamily.revoked_at).is_(None),
        )
    )
    return (await session.scalars(statement)).first()


async def add_action_token(
    session: AsyncSession,
    user_id: UUID,
    purpose: ActionPurpose,
    token_hash: bytes,
    expires_at: datetime,
) -> None:
    session.add(
        ActionToken(user_id=user_id, purpose=purpose, token_hash=token_hash, expires_at=expires_at)
    )
    await session.flush()


async def consume_action_token(
    session: AsyncSession, purpose: ActionPurpose, token_hash: bytes
) -> UUID | None:
    """Mark a live token used and return its user; None if unknown, used or expired."""
    statement = (
        update(ActionToken)
        .where(
            col(ActionToken.token_hash) == token_hash,
            col(ActionToken.purpose) == purpose,
            col(ActionToken.used_at).is_(None),
            col(ActionToken.expires_at) > func.now(),
        )
        .values(used_at=func.now())
        .returning(col(ActionToken.user_id))
    )
    return (await session.execute(statement)).scalar_one_or_none()
