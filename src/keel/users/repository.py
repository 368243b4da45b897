"""SQL for users. Every query on app.users lives here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import delete, exists, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from keel.core.db import ReadPool
from keel.core.errors import Conflict
from keel.users.models import SEARCH_EXPRESSION, User

# `UserPrivate` of one account, for the read path; metadata stays JSON text (never parsed).
READ_PRIVATE = """
SELECT id, username, full_name, created_at, email::text, is_active, is_superuser,
       is_verified, last_login, metadata::text, updated_at, pending_email::text
FROM app.users WHERE id = $1"""

# Unique constraints and indexes -> the field a client should fix.
_UNIQUE_FIELDS = {"uq_users_email": "email", "uq_users_username_lower": "username"}


def _conflict_from(exc: IntegrityError) -> Conflict | None:
    constraint = getattr(getattr(exc.orig, "__cause__", None), "constraint_name", None)
    field = _UNIQUE_FIELDS.get(str(constraint))
    if field is None:
        return None
    return Conflict(f"A user with this {field} already exists.", field=field)


async def flush_user(session: AsyncSession, user: User) -> User:
    """Insert or update `user`, turning unique violations into a 409 naming the field."""
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:
        conflict = _conflict_from(exc)
        if conflict is None:
            raise
        raise conflict from exc
    await session.refresh(user)
    return user


async def get(session: AsyncSession, user_id: UUID) -> User | None:
    return await session.get(User, user_id)


async def read_private(reads: ReadPool, user_id: UUID) -> dict[str, Any] | None:
    """One account as `UserPrivate`-shaped data (metadata as a JSON fragment), or None."""
    row = await reads.fetchrow(READ_PRIVATE, user_id)
    if row is None:
        return None
    return {
        "id": row[0],
        "username": row[1],
        "full_name": row[2],
        "created_at": row[3],
        "email": row[4],
        "is_active": row[5],
        "is_superuser": row[6],
        "is_verified": row[7],
        "last_login": row[8],
        "metadata": orjson.Fragment(row[9]),
        "updated_at": row[10],
        "pending_email": row[11],
    }


async def get_by_login(session: AsyncSession, login: str) -> User | None:
    """Find a user by email (case-insensitive, citext) or username (lower() index)."""
    if "\x00" in login:
        return None  # no account can have it, and PostgreSQL text can't carry it
    statement = select(User).where(
        or_(col(User.email) == login, func.lower(col(User.username)) == func.lower(login))
    )
    return (await session.scalars(statement.limit(1))).first()


async def get_by_email(session: AsyncSession, email: str) -> User | None:
    return (await session.scalars(select(User).where(col(User.email) == email))).first()


async def list_users(
    session: AsyncSession, *, skip: int, limit: int, search: str | None
) -> list[User]:
    """Newest first; with `search`, ranked by trigram word similarity (GIN index)."""
    statement = select(User)
    if search:
        expression = text(SEARCH_EXPRESSION)
        needle = func.lower(search)
        statement = statement.where(needle.op("<%")(expression)).order_by(
            func.word_similarity(needle, expression).desc(), col(User.id)
        )
    else:
        statement = statement.order_by(col(User.created_at).desc(), col(User.id).desc())
    return list((await session.scalars(statement.offset(skip).limit(limit))).all())


async def delete_user(session: AsyncSession, user_id: UUID) -> bool:
    result = await session.execute(delete(User).where(col(User.id) == user_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def record_login(session: AsyncSession, user: User) -> None:
    user.last_login = datetime.now(UTC)
    await session.flush()


async def superuser_exists(session: AsyncSession) -> bool:
    return bool(await session.scalar(select(exists().where(col(User.is_superuser).is_(True)))))


async def set_password_hash(session: AsyncSession, user_id: UUID, hashed: str) -> None:
    """A new password hash; a pending email change ends with the old password."""
    await session.execute(
        update(User)
        .where(col(User.id) == user_id)
        .values(hashed_password=hashed, pending_email=None)
    )
