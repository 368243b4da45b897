"""Authentication: `/api/v1/auth`. Sign-up, sign-in, token rotation, sign-out,
password reset and email verification. Every response here is `Cache-Control: no-store`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Annotated, Any

import structlog
from fastapi import BackgroundTasks, Depends, Form, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from keel.auth import service
from keel.auth.guard import PasswordGuardDep
from keel.auth.schemas import (
    Accepted,
    EmailRequest,
    PasswordResetConfirm,
    RefreshRequest,
    TokenPair,
    VerifyConfirm,
)
from keel.core.db import SessionDep
from keel.core.deps import SIGNED_IN_ERRORS, Services, ServicesDep, ViewerDep
from keel.core.errors import Forbidden
from keel.core.mail import Mail
from keel.core.passwords import MAX_PASSWORD_LENGTH
from keel.core.routing import KeelRouter, Responses
from keel.users import service as users
from keel.users.schemas import PasswordChange, UserCreate, UserPrivate, UserUpdate


async def no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"


router = KeelRouter(prefix="/auth", tags=["auth"], dependencies=[Depends(no_store)])

MAX_LOGIN_LENGTH = 320  # the longest valid email address
RATE_LIMITED: Responses = {429: {"description": "Too many attempts; see Retry-After"}}
BAD_TOKEN: Responses = {401: {"description": "Invalid, expired, revoked or replayed token"}}
ACCEPTED = "If the address belongs to an account, a message is on its way."
log = structlog.get_logger(__name__)


type MailBuilder = Callable[[AsyncSession], Awaitable[Mail | None]]


async def mail_after_response(services: Services, build: MailBuilder) -> None:
    """A background task: `build` the mail in its own transaction, commit, send it.

    Endpoints that must not tell registered addresses from unknown ones answer first and
    do all their work here, so the answer and its timing are the same for every address.
    A failure is logged; the client has its answer already.
    """
    try:
        async with services.db.sessionmaker() as session:
            mail = await build(session)
            await session.commit()
    except Exception:
        log.exception("auth.mail_after_response_failed")
        return
    if mail is not None:
        await services.mailer.send(mail)


def _accepted(services: Services, build: MailBuilder, background: BackgroundTasks) -> Accepted:
    """The same answer whether or not the account exists, before any work on it."""
    background.add_task(mail_after_response, services, build)
    return Accepted(detail=ACCEPTED)


SIGNUP_STARTED = "Check your inbox: a message to that address tells how to go on."
SIGNUP_OFF: Responses = {403: {"description": "Sign-up is turned off"}}


@router.post(
    "/signup",
    status_code=status.HTTP_201_CREATED,
    response_model=UserPrivate | Accepted,
    responses={
        201: {"model": UserPrivate, "description": "The account (the default mode)"},
        202: {
            "model": Accepted,
            "description": "SIGNUP_ENUMERATION_SAFE: the same answer whether or not the "
            "email has an account; the account is created at `/auth/signup/confirm`",
        },
        **SIGNUP_OFF,
        409: {"description": "Email or username already taken (the default mode)"},
        **RATE_LIMITED,
    },
    summary="Create an account",
)
async def signup(
    data: UserCreate,
    response: Response,
    session: SessionDep,
    services: ServicesDep,
    background: BackgroundTasks,
) -> Any:
    settings = services.settings
    if not settings.signup_enabled:
        raise Forbidden("Sign-up is turned off on this server; ask an administrator.")
    if settings.signup_enumeration_safe:
        build = partial(
            service.request_signup,
            passwords=services.passwords,
            settings=settings,
            limiter=services.ratelimiter,
            data=data,
        )
        background.add_task(mail_after_response, services, build)
        response.status_code = status.HTTP_202_ACCEPTED
        return Accepted(detail=SIGNUP_STARTED)
    user = await users.create_user(session, services.passwords, data)
    mail = await service.verification_mail(session, settings, user)
    background.add_task(services.mailer.send, mail)
    return user


@router.post(
    "/signup/confirm",
    status_code=status.HTTP_201_CREATED,
    response_model=UserPrivate,
    responses={
        400: {"description": "Invalid, used or expired token"},
        **SIGNUP_OFF,
        409: {"description": "Email or username taken since the sign-up; sign up again"},
        **RATE_LIMITED,
    },
    summary="Create the account of an enumeration-safe sign-up",
)
async def signup_confirm(data: VerifyConfirm, session: SessionDep, services: ServicesDep) -> Any:
    if not services.settings.signup_enabled:
        raise Forbidden("Sign-up is turned off on this server; ask an administrator.")
    return await service.confirm_signup(session, data.token)


class LoginForm:
    """OAuth2 password form (so Swagger's Authorize works); username may be an email."""

    def __init__(
        self,
        username: Annotated[str, Form(min_length=1, max_length=MAX_LOGIN_LENGTH)],
        password: Annotated[str, Form(min_length=1, max_length=MAX_PASSWORD_LENGTH)],
    ) -> None:
        self.username = username.strip()
        self.password = password


@router.post(
    "/login",
    response_model=TokenPair,
    responses={401: {"description": "Incorrect credentials"}, **RATE_LIMITED},
    summary="Sign in with username or email and password",
)
async def login(
    form: Annotated[LoginForm, Depends()],
    session: SessionDep,
    services: ServicesDep,
    guard: PasswordGuardDep,
) -> Any:
    return await service.login(
        session, services.tokens, services.passwords, guard, form.username, form.password
    )


@router.post(
    "/refresh",
    response_model=TokenPair,
    responses={**BAD_TOKEN, **RATE_LIMITED},
    summary="Rotate a refresh token",
)
async def refresh(data: RefreshRequest, session: SessionDep, services: ServicesDep) -> Any:
    return await service.refresh(session, services.tokens, data.refresh_token)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**BAD_TOKEN, **RATE_LIMITED},
    summary="End this session (its refresh family and access tokens)",
)
async def logout(session: SessionDep, viewer: ViewerDep) -> None:
    await service.logout(session, viewer.family_id)


@router.post(
    "/password-reset/request",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses=RATE_LIMITED,
    summary="Mail a password-reset token",
)
async def password_reset_request(
    data: EmailRequest, services: ServicesDep, background: BackgroundTasks
) -> Any:
    build = partial(
        service.request_password_reset,
        settings=services.settings,
        limiter=services.ratelimiter,
        email=str(data.email),
    )
    return _accepted(services, build, background)


@router.post(
    "/password-reset/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={400: {"description": "Invalid, used or expired token"}, **RATE_LIMITED},
    summary="Set a new password with a reset token (ends all sessions)",
)
async def password_reset_confirm(
    data: PasswordResetConfirm, session: SessionDep, services: ServicesDep, guard: PasswordGuardDep
) -> None:
    await service.confirm_password_reset(
        session, services.passwords, guard, data.token, data.new_password
    )


@router.post(
    "/verify/request",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses=RATE_LIMITED,
    summary="Mail an email-verification token",
)
async def verify_request(
    data: EmailRequest, services: ServicesDep, background: BackgroundTasks
) -> Any:
    build = partial(
        service.request_verification,
        settings=services.settings,
        limiter=services.ratelimiter,
        email=str(data.email),
    )
    return _accepted(services, build, background)


@router.post(
    "/verify/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={400: {"description": "Invalid, used or expired token"}, **RATE_LIMITED},
    summary="Confirm an email address",
)
async def verify_confirm(data: VerifyConfirm, session: SessionDep) -> None:
    await service.confirm_verification(session, data.token)


# Credentials are auth's: the password and email changes live here, under the users' URL.
account_router = KeelRouter(prefix="/users", tags=["users"])
WRONG_PASSWORD: Responses = {
    401: {"description": "Not signed in, or `current_password` is incorrect"},
    429: {"description": "Too many failed passwords, or requests; see Retry-After"},
}


@account_router.patch(
    "/me",
    response_model=UserPrivate,
    responses={
        **SIGNED_IN_ERRORS,
        400: {"description": "A new email without `current_password`"},
        **WRONG_PASSWORD,
        403: {"description": "Admin-only fields"},
        409: {"description": "Email or username already taken"},
    },
    summary="Change my account (a new email needs the password, then a confirmation)",
)
async def update_me(
    changes: UserUpdate,
    session: SessionDep,
    services: ServicesDep,
    guard: PasswordGuardDep,
    viewer: ViewerDep,
    background: BackgroundTasks,
) -> Any:
    user, outbox = await service.update_own_account(
        session, services.passwords, guard, services.settings, services.ratelimiter, viewer, changes
    )
    for mail in outbox:
        background.add_task(services.mailer.send, mail)
    return user


@account_router.post(
    "/me/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**SIGNED_IN_ERRORS, **WRONG_PASSWORD},
    summary="Change my password (ends my other sessions)",
    description="Wrong `current_password`s count against the sign-in failure limits.",
)
async def change_password(
    data: PasswordChange,
    session: SessionDep,
    services: ServicesDep,
    guard: PasswordGuardDep,
    viewer: ViewerDep,
) -> None:
    await service.change_password(
        session, services.passwords, guard, viewer, data.current_password, data.new_password
    )
