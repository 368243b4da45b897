"""User accounts: `/api/v1/users`. Admins manage everyone; users manage themselves."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import Query, status

from keel.auth.deps import SIGNED_IN_ERRORS, AdminUser, CurrentUser, PasswordsDep, PrincipalDep
from keel.core.db import SessionDep
from keel.core.routing import KeelRouter, Responses
from keel.users import repository, service
from keel.users.schemas import (
    AdminUserCreate,
    PasswordChange,
    UserPage,
    UserPrivate,
    UserPublic,
    UserUpdate,
)

router = KeelRouter(prefix="/users", tags=["users"])

MAX_PAGE = 1000
MAX_SEARCH = 100
AUTH_ERRORS = SIGNED_IN_ERRORS
ADMIN_ERRORS: Responses = {
    **AUTH_ERRORS,
    403: {"description": "Administrators only"},
}
NOT_FOUND: Responses = {404: {"description": "No user with this id"}}
CONFLICT: Responses = {409: {"description": "Email or username already taken"}}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserPrivate,
    responses={**ADMIN_ERRORS, **CONFLICT},
    summary="Create a user (admins)",
)
async def create_user(
    data: AdminUserCreate, session: SessionDep, passwords: PasswordsDep, _: AdminUser
) -> Any:
    return await service.create_user(session, passwords, data)


@router.get("", response_model=UserPage, responses=AUTH_ERRORS, summary="List users")
async def list_users(
    session: SessionDep,
    _: CurrentUser,
    skip: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    search: Annotated[
        str | None,
        Query(max_length=MAX_SEARCH, description="Fuzzy match on username and full name."),
    ] = None,
) -> Any:
    term = search.replace("\x00", "").strip() if search else None
    items = await repository.list_users(session, skip=skip, limit=limit, search=term or None)
    return UserPage(
        items=[UserPublic.model_validate(user) for user in items], skip=skip, limit=limit
    )


@router.get("/me", response_model=UserPrivate, responses=AUTH_ERRORS, summary="My account")
async def read_me(user: CurrentUser) -> Any:
    return user


@router.patch(
    "/me",
    response_model=UserPrivate,
    responses={**AUTH_ERRORS, 403: {"description": "Admin-only fields"}, **CONFLICT},
    summary="Change my account",
)
async def update_me(changes: UserUpdate, session: SessionDep, user: CurrentUser) -> Any:
    return await service.update_user(session, user, user.id, changes)


@router.post(
    "/me/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=AUTH_ERRORS,
    summary="Change my password (ends my other sessions)",
)
async def change_password(
    data: PasswordChange, session: SessionDep, passwords: PasswordsDep, principal: PrincipalDep
) -> None:
    await service.change_password(
        session,
        passwords,
        principal.user,
        data.current_password,
        data.new_password,
        keep_family=UUID(principal.claims.family),
    )


@router.get(
    "/{user_id:uuid}",
    response_model=UserPublic,
    responses={**AUTH_ERRORS, **NOT_FOUND},
    summary="A user's public profile",
)
async def read_user(user_id: UUID, session: SessionDep, _: CurrentUser) -> Any:
    return await service.get_user(session, user_id)


@router.patch(
    "/{user_id:uuid}",
    response_model=UserPrivate,
    responses={
        **AUTH_ERRORS,
        403: {"description": "Not your account, or admin-only fields"},
        **NOT_FOUND,
        **CONFLICT,
    },
    summary="Change a user (themselves or admins)",
)
async def update_user(
    user_id: UUID, changes: UserUpdate, session: SessionDep, actor: CurrentUser
) -> Any:
    return await service.update_user(session, actor, user_id, changes)


@router.delete(
    "/{user_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**ADMIN_ERRORS, **NOT_FOUND},
    summary="Delete a user (admins)",
)
async def delete_user(user_id: UUID, session: SessionDep, _: AdminUser) -> None:
    await service.delete_user(session, user_id)
