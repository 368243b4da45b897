"""Auth dependencies: the services on app.state, the signed-in user, admins, rate limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request, Response
from fastapi.security import OAuth2PasswordBearer

from keel.auth import repository
from keel.config import Settings
from keel.core.db import SessionDep
from keel.core.errors import Forbidden, Unauthorized
from keel.core.mail import Mailer
from keel.core.passwords import PasswordHasher
from keel.core.ratelimit import RateLimiter, rate_limit_headers, too_many_requests
from keel.core.routing import Responses
from keel.core.security import InvalidToken, TokenClaims, TokenService
from keel.users.models import User

LOGIN_PATH = "/api/v1/auth/login"
bearer_scheme = OAuth2PasswordBearer(tokenUrl=LOGIN_PATH, auto_error=False)


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_tokens(request: Request) -> TokenService:
    tokens: TokenService = request.app.state.tokens
    return tokens


async def get_passwords(request: Request) -> PasswordHasher:
    passwords: PasswordHasher = request.app.state.passwords
    return passwords


async def get_mailer(request: Request) -> Mailer:
    mailer: Mailer = request.app.state.mailer
    return mailer


async def get_ratelimiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.ratelimiter
    return limiter


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
TokensDep = Annotated[TokenService, Depends(get_tokens)]
PasswordsDep = Annotated[PasswordHasher, Depends(get_passwords)]
MailerDep = Annotated[Mailer, Depends(get_mailer)]
RateLimiterDep = Annotated[RateLimiter, Depends(get_ratelimiter)]
BearerToken = Annotated[str | None, Depends(bearer_scheme)]


@dataclass(frozen=True, slots=True)
class Principal:
    """The signed-in user and the access token they presented."""

    user: User
    claims: TokenClaims


@dataclass(frozen=True, slots=True)
class BearerCheck:
    """The presented access token, verified once per request (FastAPI caches this)."""

    claims: TokenClaims | None = None
    error: InvalidToken | None = None


async def check_bearer(tokens: TokensDep, token: BearerToken) -> BearerCheck:
    if not token:
        return BearerCheck()
    try:
        return BearerCheck(claims=tokens.verify(token, expected="access"))
    except InvalidToken as error:
        return BearerCheck(error=error)


BearerCheckDep = Annotated[BearerCheck, Depends(check_bearer)]


async def get_principal(session: SessionDep, bearer: BearerCheckDep) -> Principal:
    if bearer.error is not None:
        raise bearer.error
    claims = bearer.claims
    if claims is None:
        raise Unauthorized("Sign in: send an access token as `Authorization: Bearer <token>`.")
    user = await repository.user_for_session(session, UUID(claims.subject), UUID(claims.family))
    if user is None:
        raise InvalidToken("The session has ended or the account is disabled; sign in again.")
    return Principal(user=user, claims=claims)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_current_user(principal: PrincipalDep) -> User:
    return principal.user


async def get_admin_user(principal: PrincipalDep) -> User:
    if not principal.user.is_superuser:
        raise Forbidden("This endpoint is for administrators.")
    return principal.user


CurrentUser = Annotated[User, Depends(get_current_user)]
# What any signed-in endpoint can answer besides its own results (OpenAPI `responses=`).
SIGNED_IN_ERRORS: Responses = {
    401: {"description": "Not signed in, or the token is invalid or revoked"},
    429: {"description": "Rate limit exceeded; see Retry-After"},
}
AdminUser = Annotated[User, Depends(get_admin_user)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def enforce_api_rate_limit(
    request: Request,
    response: Response,
    settings: SettingsDep,
    limiter: RateLimiterDep,
    bearer: BearerCheckDep,
) -> None:
    """The API-wide limit: per user when a valid token is presented, per IP otherwise."""
    if not limiter.enabled:
        return
    if bearer.claims is not None:
        result = await limiter.hit(settings.rate_limit_user, "api-user", bearer.claims.subject)
    else:
        result = await limiter.hit(settings.rate_limit_anonymous, "api-ip", client_ip(request))
    if not result.allowed:
        raise too_many_requests(result)
    response.headers.update(rate_limit_headers(result))
