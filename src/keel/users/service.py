"""User accounts: creation, profile changes, passwords, the first superuser."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from keel.config import Settings
from keel.core.db import ReadPool
from keel.core.errors import BadRequest, Conflict, Forbidden, NotFound
from keel.core.passwords import PasswordHasher
from keel.core.viewer import Viewer, evict_after_commit
from keel.users import repository
from keel.users.models import User
from keel.users.schemas import ADMIN_ONLY_FIELDS, AdminUserCreate, UserCreate, UserUpdate

log = structlog.get_logger(__name__)
CLEARABLE_FIELDS = frozenset({"full_name"})


async def add_user(session: AsyncSession, user: User) -> User:
    """Insert a new account. The database gives it its personal organization in the same
    statement (migration 0013's trigger), as it does for imported and seeded accounts."""
    return await repository.flush_user(session, user)


async def create_user(
    session: AsyncSession, passwords: PasswordHasher, data: UserCreate | AdminUserCreate
) -> User:
    user = User(
        email=str(data.email),
        username=data.username,
        full_name=data.full_name,
        hashed_password=await passwords.hash(data.password),
    )
    if isinstance(data, AdminUserCreate):
        user.is_active, user.is_superuser = data.is_active, data.is_superuser
        user.is_verified = data.is_verified
    return await add_user(session, user)


async def get_user(session: AsyncSession, user_id: UUID) -> User:
    user = await repository.get(session, user_id)
    if user is None:
        raise NotFound("No user with this id.")
    return user


# Lookups the auth domain builds sign-in, tokens and resets on.
find = repository.get
find_by_login = repository.get_by_login
find_by_email = repository.get_by_email
record_login = repository.record_login
set_password_hash = repository.set_password_hash
save_user = repository.flush_user


async def read_me(reads: ReadPool, viewer: Viewer) -> dict[str, Any]:
    """The caller's own account as `UserPrivate` data: one round trip on the read pool."""
    me = await repository.read_private(reads, viewer.user_id)
    if me is None:
        raise NotFound("No user with this id.")
    return me


async def list_users(
    session: AsyncSession, *, skip: int, limit: int, search: str | None
) -> list[User]:
    """Newest first; with `search` (NULs dropped, trimmed), ranked by similarity."""
    term = search.replace("\x00", "").strip() if search else None
    return await repository.list_users(session, skip=skip, limit=limit, search=term or None)


async def update_user(
    session: AsyncSession, actor: Viewer, user_id: UUID, changes: UserUpdate
) -> User:
    """Apply a PATCH. Users may change themselves; admins anyone, flags included.

    Your own `email` doesn't change here (400): it changes at PATCH /users/me, through
    `keel.auth.service.request_email_change` (password, then a confirmation mail).
    Passwords change through `keel.auth.service.change_password` (auth checks the old one).
    An admin changing someone else's email changes it at once, unverified unless
    `is_verified` says otherwise. Deactivating revokes the user's sessions: migration
    0007's trigger does it, for this path and every other one.
    """
    if actor.user_id != user_id and not actor.is_superuser:
        raise Forbidden("You may only change your own account.")
    fields = changes.model_dump(exclude_unset=True, exclude={"current_password"})
    forbidden = sorted(ADMIN_ONLY_FIELDS & fields.keys())
    if forbidden and not actor.is_superuser:
        raise Forbidden(f"Only administrators may change {', '.join(forbidden)}.", fields=forbidden)
    user = await get_user(session, user_id)
    email = fields.pop("email", None)
    if email is not None and str(email).lower() != user.email.lower():
        if actor.user_id == user.id:
            raise BadRequest(
                "Change your own email at PATCH /users/me, with `current_password`.",
                field="email",
            )
        user.is_verified = bool(fields.get("is_verified", False))
        user.pending_email = None
    if email is not None and actor.user_id != user.id:
        user.email = str(email)
    if "metadata" in fields:
        fields["metadata_"] = fields.pop("metadata") or {}
    for name, value in fields.items():
        if value is not None or name in CLEARABLE_FIELDS:  # null leaves the rest unchanged
            setattr(user, name, value)
    if {"is_active", "is_superuser"} & fields.keys():
        evict_after_commit(session, user_id=user.id)
    return await repository.flush_user(session, user)


async def delete_user(session: AsyncSession, user_id: UUID) -> None:
    if not await repository.delete_user(session, user_id):
        raise NotFound("No user with this id.")


async def ensure_first_superuser(
    session: AsyncSession, settings: Settings, passwords: PasswordHasher
) -> User | None:
    """Create FIRST_SUPERUSER_* if configured and no superuser exists yet."""
    email, username = settings.first_superuser_email, settings.first_superuser_username
    password = settings.first_superuser_password
    if not (email and username and password) or await repository.superuser_exists(session):
        return None
    data = AdminUserCreate(
        email=email,
        username=username,
        password=password.get_secret_value(),
        is_superuser=True,
        is_verified=True,
    )
    try:
        user = await create_user(session, passwords, data)
    except Conflict:
        await session.rollback()  # another worker created it first
        return None
    log.info("users.first_superuser_created", user_id=str(user.id))
    return user
