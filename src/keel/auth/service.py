"""Sign-in, token rotation, sign-out, password reset and email verification."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from keel.auth import mails, repository
from keel.auth.guard import PasswordGuard, account_key
from keel.auth.models import ActionPurpose, SignupRequest
from keel.auth.schemas import TokenPair
from keel.config import Settings
from keel.core.db import ReadPool
from keel.core.errors import BadRequest, Conflict, Unauthorized
from keel.core.mail import Mail
from keel.core.passwords import PasswordHasher
from keel.core.ratelimit import RateLimiter
from keel.core.security import InvalidToken, TokenService
from keel.core.viewer import Viewer
from keel.users import service as users
from keel.users.models import User
from keel.users.schemas import UserCreate, UserUpdate

log = structlog.get_logger(__name__)
BAD_CREDENTIALS = "Incorrect username/email or password."
MAIL_SCOPE = "mail-per-address"
SIGNUP_MAIL = "signup"  # the mail kind of enumeration-safe sign-ups (token or notice)
EMAIL_CHANGE_NOTICE = "email_change_notice"  # the mail kind telling the old address


async def issue_pair(
    session: AsyncSession, tokens: TokenService, user_id: UUID, family_id: UUID
) -> TokenPair:
    """A new access + refresh token in `family_id`; the refresh token is recorded."""
    access = tokens.issue(subject=str(user_id), family=str(family_id), type="access")
    refresh = tokens.issue(subject=str(user_id), family=str(family_id), type="refresh")
    await repository.add_refresh_token(
        session, UUID(refresh.token_id), family_id, refresh.expires_at
    )
    return TokenPair(
        access_token=access.token,
        refresh_token=refresh.token,
        expires_in=int(tokens.access_ttl.total_seconds()),
    )


async def authenticate(
    session: AsyncSession, passwords: PasswordHasher, guard: PasswordGuard, login: str, pw: str
) -> User:
    """The active user with these credentials, or Unauthorized (TooManyRequests past limits).

    Unknown accounts cost one dummy verification, so timing doesn't reveal them.
    """
    user = await users.find_by_login(session, login)
    account = account_key(user.id if user else None, login)
    valid, new_hash = await guard.verify(
        passwords, account, pw, user.hashed_password if user else None
    )
    if user is None or not valid or not user.is_active:
        raise Unauthorized(BAD_CREDENTIALS)
    if new_hash is not None:  # legacy bcrypt or weaker argon2 parameters
        user.hashed_password = new_hash
    return user


async def login(
    session: AsyncSession,
    tokens: TokenService,
    passwords: PasswordHasher,
    guard: PasswordGuard,
    login: str,
    pw: str,
) -> TokenPair:
    user = await authenticate(session, passwords, guard, login, pw)
    await users.record_login(session, user)
    family = await repository.open_family(session, user.id)
    log.info("auth.login", user_id=str(user.id))
    return await issue_pair(session, tokens, user.id, family.id)


async def refresh(session: AsyncSession, tokens: TokenService, refresh_token: str) -> TokenPair:
    """Rotate a refresh token. Presenting a used one revokes its whole family (replay)."""
    claims = tokens.verify(refresh_token, expected="refresh")
    record = await repository.lock_refresh_token(session, UUID(claims.token_id))
    if record is None or record.family.revoked_at is not None:
        raise InvalidToken("The session has ended; sign in again.")
    if record.token.used_at is not None:
        await repository.revoke_family(session, record.family.id, "refresh token replayed")
        # Commit here: the 401 below makes the request's session roll back, and the
        # revocation must survive it.
        await session.commit()
        log.warning("auth.refresh_replay", family_id=str(record.family.id))
        raise InvalidToken("This refresh token was already used; the session is revoked.")
    user = await users.find(session, record.family.user_id)
    if user is None or not user.is_active:
        raise InvalidToken("The account is disabled.")
    await repository.mark_refresh_used(session, record.token)
    return await issue_pair(session, tokens, user.id, record.family.id)


async def load_viewer(reads: ReadPool, user_id: UUID, family_id: UUID) -> Viewer | None:
    """The `Viewer` behind an access token, if its session is open (`Services.load_viewer`)."""
    return await repository.load_viewer(reads, user_id, family_id)


async def change_password(
    session: AsyncSession,
    passwords: PasswordHasher,
    guard: PasswordGuard,
    viewer: Viewer,
    current_password: str,
    new_password: str,
) -> None:
    """Needs the current password, its failures counted like sign-in failures; ends every
    other session of the user and any pending email change."""
    user = await users.get_user(session, viewer.user_id)
    await _check_current_password(passwords, guard, user, current_password)
    await users.set_password_hash(session, user.id, await passwords.hash(new_password))
    await repository.revoke_user_families(
        session, user.id, "password changed", keep=viewer.family_id
    )


async def logout(session: AsyncSession, family_id: UUID) -> None:
    await repository.revoke_family(session, family_id, "logout")


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def address_hash(email: str) -> bytes:
    """What a mailed token stores of its address: emails compare case-insensitively."""
    return hashlib.sha256(email.lower().encode()).digest()


async def _new_action_token(
    session: AsyncSession, user: User, purpose: ActionPurpose, ttl: timedelta, sent_to: str
) -> str:
    """A token for `user`, usable only while `sent_to` is the address it concerns."""
    token = secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + ttl
    await repository.add_action_token(
        session, user.id, purpose, _token_hash(token), address_hash(sent_to), expires_at
    )
    return token


async def _may_mail(limiter: RateLimiter, settings: Settings, kind: str, address: str) -> bool:
    """Whether one more `kind` mail may go to `address` now (`RATE_LIMIT_MAIL`).

    Counted for every requested address, registered or not, and never told to the client:
    a refused mail just isn't sent.
    """
    key = address_hash(address).hex()  # no addresses in Redis keys
    allowed = (await limiter.hit(settings.rate_limit_mail, MAIL_SCOPE, kind, key)).allowed
    if not allowed:
        log.info("auth.mail_throttled", kind=kind)
    return allowed


async def request_password_reset(
    session: AsyncSession, settings: Settings, limiter: RateLimiter, email: str
) -> Mail | None:
    """A reset mail for an active account; None otherwise.

    The router runs this after answering (`mail_after_response`), so neither its work
    nor its result can show in the answer or its timing.
    """
    if not await _may_mail(limiter, settings, ActionPurpose.PASSWORD_RESET, email):
        return None
    user = await users.find_by_email(session, email)
    if user is None or not user.is_active:
        return None
    ttl = timedelta(minutes=settings.password_reset_minutes)
    token = await _new_action_token(session, user, ActionPurpose.PASSWORD_RESET, ttl, user.email)
    return mails.password_reset(settings, user.email, token)


async def confirm_password_reset(
    session: AsyncSession,
    passwords: PasswordHasher,
    guard: PasswordGuard,
    token: str,
    new_password: str,
) -> None:
    """Set the password; ends every session and unlocks sign-in for the account."""
    spent = await repository.consume_action_token(
        session, ActionPurpose.PASSWORD_RESET, _token_hash(token)
    )
    user = await users.find(session, spent.user_id) if spent else None
    # A token mailed to an address the account no longer has is dead.
    if spent is None or user is None or spent.sent_to_hash != address_hash(user.email):
        raise BadRequest("The reset token is invalid, used or expired.")
    # Also ends a pending email change: whoever asked for it must ask again.
    await users.set_password_hash(session, user.id, await passwords.hash(new_password))
    await repository.revoke_user_families(session, user.id, "password reset")
    await guard.clear_failures(account_key(user.id, user.email))


async def verification_mail(session: AsyncSession, settings: Settings, user: User) -> Mail:
    ttl = timedelta(hours=settings.verify_email_hours)
    token = await _new_action_token(session, user, ActionPurpose.VERIFY_EMAIL, ttl, user.email)
    return mails.verify_email(settings, user.email, token)


async def request_verification(
    session: AsyncSession, settings: Settings, limiter: RateLimiter, email: str
) -> Mail | None:
    """A verification mail for an active, unverified account; None otherwise (run after
    answering, like `request_password_reset`)."""
    if not await _may_mail(limiter, settings, ActionPurpose.VERIFY_EMAIL, email):
        return None
    user = await users.find_by_email(session, email)
    if user is None or user.is_verified or not user.is_active:
        return None
    return await verification_mail(session, settings, user)


async def confirm_verification(session: AsyncSession, token: str) -> None:
    """Verify the address the token was mailed to: the account's email, or its pending one.

    Confirming the pending address makes it the account's email (409 if another account
    took it meanwhile).
    """
    spent = await repository.consume_action_token(
        session, ActionPurpose.VERIFY_EMAIL, _token_hash(token)
    )
    user = await users.find(session, spent.user_id) if spent else None
    if spent is None or user is None:
        raise BadRequest("The verification token is invalid, used or expired.")
    if spent.sent_to_hash == address_hash(user.email):
        user.is_verified = True
    elif user.pending_email and spent.sent_to_hash == address_hash(user.pending_email):
        user.email, user.pending_email, user.is_verified = user.pending_email, None, True
        log.info("auth.email_changed", user_id=str(user.id))
    else:
        raise BadRequest("The verification token is invalid, used or expired.")
    await users.save_user(session, user)


async def update_own_account(
    session: AsyncSession,
    passwords: PasswordHasher,
    guard: PasswordGuard,
    settings: Settings,
    limiter: RateLimiter,
    viewer: Viewer,
    changes: UserUpdate,
) -> tuple[User, list[Mail]]:
    """PATCH /users/me: the account as changed, and the mails to send.

    Profile fields change as `users.update_user` changes them; a new email is only
    staged (`request_email_change`).
    """
    profile = UserUpdate.model_validate(
        changes.model_dump(exclude_unset=True, exclude={"email", "current_password"})
    )
    user = await users.update_user(session, viewer, viewer.user_id, profile)
    outbox: list[Mail] = []
    if changes.email is not None:
        outbox = await request_email_change(
            session,
            passwords,
            guard,
            settings,
            limiter,
            user,
            str(changes.email),
            changes.current_password,
        )
    return user, outbox


async def _check_current_password(
    passwords: PasswordHasher, guard: PasswordGuard, user: User, password: str
) -> None:
    """A signed-in user's password, under the same failure limits as sign-in."""
    valid, _ = await guard.verify(
        passwords, account_key(user.id, user.email), password, user.hashed_password
    )
    if not valid:
        raise Unauthorized("The current password is incorrect.")


async def request_email_change(
    session: AsyncSession,
    passwords: PasswordHasher,
    guard: PasswordGuard,
    settings: Settings,
    limiter: RateLimiter,
    user: User,
    new_email: str,
    current_password: str | None,
) -> list[Mail]:
    """Stage a change of the user's own email; the mails to send (new and old address).

    Needs the current password (failures count as sign-in failures). The new address
    becomes `pending_email` and gets a confirmation token; the old one is told. Nothing
    else changes until the token is confirmed, so a stolen access token alone can't
    take the account over. Asking for the current address cancels a pending change.
    An address another account has is a 409, or with SIGNUP_ENUMERATION_SAFE looks
    staged like any other (its owner gets a notice instead of a token).
    """
    if new_email.lower() == user.email.lower():
        user.pending_email = None
        await session.flush()
        return []
    if current_password is None:
        raise BadRequest(
            "Changing your email needs your current password in `current_password`.",
            field="current_password",
        )
    await _check_current_password(passwords, guard, user, current_password)
    in_use = await users.find_by_email(session, new_email) is not None
    if in_use and not settings.signup_enumeration_safe:
        raise Conflict("A user with this email already exists.", field="email")
    user.pending_email = new_email
    await session.flush()
    outbox: list[Mail] = []
    if await _may_mail(limiter, settings, ActionPurpose.VERIFY_EMAIL, new_email):
        if in_use:
            outbox.append(mails.address_in_use_notice(settings, new_email))
        else:
            ttl = timedelta(hours=settings.verify_email_hours)
            purpose = ActionPurpose.VERIFY_EMAIL
            token = await _new_action_token(session, user, purpose, ttl, new_email)
            outbox.append(mails.confirm_new_email(settings, new_email, user.username, token))
    if await _may_mail(limiter, settings, EMAIL_CHANGE_NOTICE, user.email):
        outbox.append(mails.email_change_notice(settings, user.email, user.username, new_email))
    return outbox


async def request_signup(
    session: AsyncSession,
    passwords: PasswordHasher,
    settings: Settings,
    limiter: RateLimiter,
    data: UserCreate,
) -> Mail | None:
    """Enumeration-safe sign-up (SIGNUP_ENUMERATION_SAFE): the mail to send, if any.

    The router runs this after answering, like `request_password_reset`. Nothing is
    created yet: a new address gets a token that creates the account when it comes back
    (`confirm_signup`); a registered one gets a notice. Since no username is taken and
    no account can sign in before the confirmation, no later request tells the two
    apart either.
    """
    email = str(data.email)
    if not await _may_mail(limiter, settings, SIGNUP_MAIL, email):
        return None
    if await users.find_by_email(session, email) is not None:
        return mails.signup_attempt_notice(settings, email)
    token = secrets.token_urlsafe(32)
    request = SignupRequest(
        email=email,
        username=data.username,
        full_name=data.full_name,
        hashed_password=await passwords.hash(data.password),
        token_hash=_token_hash(token),
        expires_at=datetime.now(UTC) + timedelta(hours=settings.verify_email_hours),
    )
    await repository.add_signup_request(session, request)
    return mails.confirm_signup(settings, email, data.username, token)


async def confirm_signup(session: AsyncSession, token: str) -> User:
    """Create the account a sign-up token stands for, its address verified.

    409 if the email or username was taken since: sign up again.
    """
    request = await repository.consume_signup_request(session, _token_hash(token))
    if request is None:
        raise BadRequest("The sign-up token is invalid, used or expired.")
    user = User(
        email=request.email,
        username=request.username,
        full_name=request.full_name,
        hashed_password=request.hashed_password,
        is_verified=True,
    )
    user = await users.add_user(session, user)
    log.info("auth.signup_confirmed", user_id=str(user.id))
    return user
