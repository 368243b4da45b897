"""User accounts: `/api/v1/users`. Admins manage everyone; users manage themselves."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import Query, Response, status

from keel.core.db import SessionDep
from keel.core.deps import SIGNED_IN_ERRORS, AdminViewer, ServicesDep, ViewerDep
from keel.core.idempotency.deps import IDEMPOTENCY_ERRORS, IdempotencyDep, IdempotentRoute
from keel.core.responses import json_response
from keel.core.routing import KeelRouter, Responses
from keel.users import service
from keel.users.schemas import (
    AdminUserCreate,
    UserPage,
    UserPrivate,
    UserPublic,
    UserUpdate,
)

router = KeelRouter(prefix="/users", tags=["users"], route_class=IdempotentRoute)

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
    responses={**ADMIN_ERRORS, **CONFLICT, **IDEMPOTENCY_ERRORS},
    summary="Create a user (admins)",
)
async def create_user(
    data: AdminUserCreate,
    session: SessionDep,
    services: ServicesDep,
    _: AdminViewer,
    _key: IdempotencyDep,
) -> Any:
    return await service.create_user(session, services.passwords, data)


@router.get("", response_model=UserPage, responses=AUTH_ERRORS, summary="List users")
async def list_users(
    session: SessionDep,
    _: ViewerDep,
    skip: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    search: Annotated[
        str | None,
        Query(max_length=MAX_SEARCH, description="Fuzzy match on username and full name."),
    ] = None,
) -> Any:
    items = await service.list_users(session, skip=skip, limit=limit, search=search)
    return UserPage(
        items=[UserPublic.model_validate(user) for user in items], skip=skip, limit=limit
    )


@router.get("/me", response_model=UserPrivate, responses=AUTH_ERRORS, summary="My account")
async def read_me(viewer: ViewerDep, services: ServicesDep, response: Response) -> Response:
    return json_response(await service.read_me(services.db.reads, viewer), response)


# PATCH /users/me is auth's (keel.auth.router.account_router): it may change the email.


@router.get(
    "/{user_id:uuid}",
    response_model=UserPublic,
    responses={**AUTH_ERRORS, **NOT_FOUND},
    summary="A user's public profile",
)
async def read_user(user_id: UUID, session: SessionDep, _: ViewerDep) -> Any:
    return await service.get_user(session, user_id)


@router.patch(
    "/{user_id:uuid}",
    response_model=UserPrivate,
    responses={
        **AUTH_ERRORS,
        400: {"description": "Your own email: change it at PATCH /users/me"},
        403: {"description": "Not your account, or admin-only fields"},
        **NOT_FOUND,
        **CONFLICT,
    },
    summary="Change a user (themselves or admins)",
)
async def update_user(
    user_id: UUID, changes: UserUpdate, session: SessionDep, actor: ViewerDep
) -> Any:
    return await service.update_user(session, actor, user_id, changes)


@router.delete(
    "/{user_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**ADMIN_ERRORS, **NOT_FOUND},
    summary="Delete a user (admins)",
)
async def delete_user(user_id: UUID, session: SessionDep, _: AdminViewer) -> None:
    await service.delete_user(session, user_id)
