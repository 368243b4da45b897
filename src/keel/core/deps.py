"""Request dependencies every domain shares: the app-wide services, the caller, the API limit.

- `ServicesDep`: the process's services, on one object (`app.state.services`).
- `ViewerDep` / `AdminViewer`: the signed-in caller as a `Viewer`, from a verified
  access token (cached until its `exp`) and the viewer cache; a cache miss costs one
  round trip on the read pool.
- `enforce_api_rate_limit`: the API-wide limit, per user or per IP, one Redis round trip.
The bearer token is parsed and verified once per request: FastAPI caches `bearer`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

from fastapi import Depends, Request, Response
from fastapi.security import OAuth2PasswordBearer
from redis.asyncio import Redis

from keel.config import Settings
from keel.core.db import Database, ReadPool
from keel.core.errors import Forbidden, Unauthorized
from keel.core.mail import Mailer
from keel.core.pagination import CursorCodec
from keel.core.passwords import PasswordHasher
from keel.core.ratelimit import RateLimiter, rate_limit_headers, too_many_requests
from keel.core.routing import Responses, guard_before_body
from keel.core.security import InvalidToken, TokenClaims, TokenService, VerifiedTokenCache
from keel.core.viewer import Viewer

if TYPE_CHECKING:  # a type only: embedders sit a layer above core
    from keel.embeddings import Embedder

LOGIN_PATH = "/api/v1/auth/login"

# Looks up the viewer behind (user id, token family): None if the session has ended or
# the account is disabled. The auth domain owns that SQL; the app passes it in.
type ViewerLoader = Callable[[ReadPool, UUID, UUID], Awaitable[Viewer | None]]


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request may need that lives as long as the process."""

    settings: Settings
    db: Database
    redis: Redis | None
    tokens: TokenService
    verified_tokens: VerifiedTokenCache
    passwords: PasswordHasher
    mailer: Mailer
    ratelimiter: RateLimiter
    post_cursors: CursorCodec
    embedder: Embedder
    load_viewer: ViewerLoader

    @classmethod
    def build(
        cls,
        settings: Settings,
        db: Database,
        *,
        redis: Redis | None,
        embedder: Embedder,
        load_viewer: ViewerLoader,
    ) -> Services:
        tokens = TokenService.from_settings(settings)
        return cls(
            settings=settings,
            db=db,
            redis=redis,
            tokens=tokens,
            verified_tokens=VerifiedTokenCache(tokens, max_entries=settings.token_cache_size),
            passwords=PasswordHasher.from_settings(settings),
            mailer=Mailer(settings),
            ratelimiter=RateLimiter.from_settings(settings),
            post_cursors=CursorCodec(settings.resolved_secret_key(), purpose="posts"),
            embedder=embedder,
            load_viewer=load_viewer,
        )


def services_of(request: Request) -> Services:
    """The process's services, from inside any dependency or endpoint that has the request."""
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    # async on purpose: FastAPI runs a plain-def dependency in a worker thread.
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]


@dataclass(frozen=True, slots=True)
class BearerCheck:
    """The presented access token, verified: its claims, or why it was refused."""

    claims: TokenClaims | None = None
    error: InvalidToken | None = None


class AccessTokenBearer(OAuth2PasswordBearer):
    """`Authorization: Bearer`, parsed and verified in one step (and documented in OpenAPI).

    Never raises: anonymous requests are fine for the rate limit; `ViewerDep` decides
    whether the endpoint needs a caller.
    """

    async def __call__(self, request: Request) -> BearerCheck:  # type: ignore[override]
        authorization = request.headers.get("authorization")
        if not authorization:
            return BearerCheck()
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return BearerCheck()
        try:
            return BearerCheck(claims=services_of(request).verified_tokens.verify_access(token))
        except InvalidToken as error:
            return BearerCheck(error=error)


bearer = AccessTokenBearer(tokenUrl=LOGIN_PATH, auto_error=False)
BearerDep = Annotated[BearerCheck, Depends(bearer)]

NOT_SIGNED_IN = "Sign in: send an access token as `Authorization: Bearer <token>`."
SESSION_ENDED = "The session has ended or the account is disabled; sign in again."


async def get_viewer(request: Request, check: BearerDep) -> Viewer:
    """The signed-in caller: 401 unless the token is valid and its session still open."""
    resolved: Viewer | None = getattr(request.state, "viewer", None)  # by a pre-body guard
    if resolved is not None:
        return resolved
    if check.error is not None:
        raise check.error
    claims = check.claims
    if claims is None:
        raise Unauthorized(NOT_SIGNED_IN)
    try:
        user_id, family_id = UUID(claims.subject), UUID(claims.family)
    except ValueError:
        raise InvalidToken("The token is invalid.") from None
    services = services_of(request)
    cache = services.db.viewers
    viewer = cache.get(user_id, family_id)
    if viewer is None:
        generation = cache.generation
        viewer = await services.load_viewer(services.db.reads, user_id, family_id)
        if viewer is None:
            raise InvalidToken(SESSION_ENDED)
        cache.put(viewer, generation)
    return viewer


async def get_admin_viewer(viewer: Annotated[Viewer, Depends(get_viewer)]) -> Viewer:
    if not viewer.is_superuser:
        raise Forbidden("This endpoint is for administrators.")
    return viewer


ViewerDep = Annotated[Viewer, Depends(get_viewer)]
AdminViewer = Annotated[Viewer, Depends(get_admin_viewer)]


async def _sign_in_before_body(request: Request) -> None:
    request.state.viewer = await get_viewer(request, await bearer(request))


async def _admin_before_body(request: Request) -> None:
    await _sign_in_before_body(request)
    await get_admin_viewer(request.state.viewer)


guard_before_body(get_viewer, _sign_in_before_body)
guard_before_body(get_admin_viewer, _admin_before_body)

# What any signed-in endpoint can answer besides its own results (OpenAPI `responses=`).
SIGNED_IN_ERRORS: Responses = {
    401: {"description": "Not signed in, or the token is invalid or revoked"},
    429: {"description": "Rate limit exceeded; see Retry-After"},
}


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def enforce_api_rate_limit(request: Request, response: Response, check: BearerDep) -> None:
    """The API-wide limit: per user when a valid token is presented, per IP otherwise."""
    services = services_of(request)
    limiter = services.ratelimiter
    if not limiter.enabled:
        return
    settings = services.settings
    if check.claims is not None:
        result = await limiter.hit(settings.rate_limit_user, "api-user", check.claims.subject)
    else:
        result = await limiter.hit(settings.rate_limit_anonymous, "api-ip", client_ip(request))
    if not result.allowed:
        raise too_many_requests(result)
    response.headers.update(rate_limit_headers(result))
