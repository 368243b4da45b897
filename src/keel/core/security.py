"""Access and refresh JWTs (HS256, PyJWT) with key rotation by `kid`.

Every token names its key in the `kid` header: a short fingerprint of the secret.
Verification looks that key up among the current secret and
`PREVIOUS_SECRET_KEYS`, so tokens signed before a rotation keep working until
their secret is dropped from that list. The algorithm is pinned to HS256 and
never read from the token. Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

import jwt
import structlog

from keel.core.errors import Unauthorized

if TYPE_CHECKING:
    from keel.config import Settings

TokenType = Literal["access", "refresh"]

ALGORITHM: Final = "HS256"
REQUIRED_CLAIMS: Final = ("exp", "iat", "jti", "sub", "iss", "aud", "typ", "fam")
LEEWAY: Final = timedelta(seconds=10)  # clock skew between workers and hosts

# Domain separation: SECRET_KEY may sign other things, and the kid must not be a
# hash an attacker could also obtain from another part of the system.
_SIGNING_CONTEXT: Final = b"keel/jwt-signing/v1"
_KID_CONTEXT: Final = b"keel/jwt-kid/v1\x00"

log = structlog.get_logger(__name__)


class InvalidToken(Unauthorized):
    """The bearer token is malformed, forged, expired or of the wrong type."""

    slug, title = "invalid-token", "Invalid Token"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """The verified contents of a token."""

    subject: str
    token_id: str
    family: str
    type: TokenType
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly signed token and what the caller may need to store about it."""

    token: str
    token_id: str
    expires_at: datetime


def derive_signing_key(secret: str) -> bytes:
    """The HMAC key JWTs are signed with, derived from a configured secret."""
    return hmac.new(secret.encode(), _SIGNING_CONTEXT, hashlib.sha256).digest()


def key_id(secret: str) -> str:
    """The `kid` naming a secret: 16 hex digits, safe to show in logs and headers."""
    return hashlib.sha256(_KID_CONTEXT + secret.encode()).hexdigest()[:16]


class TokenService:
    """Issues and verifies Keel's JWTs."""

    def __init__(
        self,
        *,
        signing_key: str,
        previous_keys: Sequence[str] = (),
        issuer: str,
        audience: str,
        access_ttl: timedelta,
        refresh_ttl: timedelta,
    ) -> None:
        if not signing_key:
            raise ValueError("signing_key must not be empty")
        if access_ttl <= timedelta(0) or refresh_ttl <= timedelta(0):
            raise ValueError("token lifetimes must be positive")
        self._kid = key_id(signing_key)
        self._signing_key = derive_signing_key(signing_key)
        self._verify_keys = {key_id(k): derive_signing_key(k) for k in previous_keys if k}
        self._verify_keys[self._kid] = self._signing_key
        self._issuer = issuer
        self._audience = audience
        self._access_ttl = access_ttl
        self._refresh_ttl = refresh_ttl

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenService:
        """Build the service from the identity settings."""
        return cls(
            signing_key=settings.resolved_secret_key(),
            previous_keys=[key.get_secret_value() for key in settings.previous_secret_keys],
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            access_ttl=timedelta(minutes=settings.access_token_minutes),
            refresh_ttl=timedelta(days=settings.refresh_token_days),
        )

    @property
    def access_ttl(self) -> timedelta:
        return self._access_ttl

    @property
    def refresh_ttl(self) -> timedelta:
        return self._refresh_ttl

    @property
    def key_id(self) -> str:
        """The `kid` new tokens are signed under."""
        return self._kid

    def issue(
        self, *, subject: str, family: str, type: TokenType, token_id: str | None = None
    ) -> IssuedToken:
        """Sign a token of `type` for `subject` in refresh family `family`."""
        # Whole seconds, so `expires_at` equals the `exp` claim a verifier will see.
        now = datetime.now(UTC).replace(microsecond=0)
        expires_at = now + (self._access_ttl if type == "access" else self._refresh_ttl)
        token_id = token_id or str(uuid.uuid4())
        payload = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": subject,
            "jti": token_id,
            "fam": family,
            "typ": type,
            "iat": now,
            "exp": expires_at,
        }
        token = jwt.encode(
            payload, self._signing_key, algorithm=ALGORITHM, headers={"kid": self._kid}
        )
        return IssuedToken(token=token, token_id=token_id, expires_at=expires_at)

    def verify(self, token: str, *, expected: TokenType) -> TokenClaims:
        """Check signature, lifetime, issuer, audience and type; return the claims.

        Raises `InvalidToken` (401) with a short detail that never echoes the token.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _reject("malformed") from None
        kid = header.get("kid")
        key = self._verify_keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise _reject("unknown-key")
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise _reject("expired", "The token has expired.") from None
        except jwt.PyJWTError as exc:
            raise _reject(type(exc).__name__) from None
        return _claims(payload, expected)

    def subject_or_none(self, token: str) -> str | None:
        """The subject of a valid access token, else None; never raises.

        For deciding whose budget a request counts against (rate limits), not
        for authorisation: it does not check that the session is still live.
        """
        try:
            return self.verify(token, expected="access").subject
        except InvalidToken:
            return None


def _claims(payload: dict[str, Any], expected: TokenType) -> TokenClaims:
    token_type = payload["typ"]
    if token_type not in get_args(TokenType):
        raise _reject("bad-type")
    if token_type != expected:
        raise _reject("wrong-type", "The token is of the wrong type.")
    # Keel signs only UUIDs here; anything else (even validly signed) is a 401, not a 500
    # further down where the ids are used.
    subject, token_id, family = (_uuid_text(payload[claim]) for claim in ("sub", "jti", "fam"))
    if subject is None:
        raise _reject("bad-subject")
    if token_id is None:
        raise _reject("bad-token-id")
    if family is None:
        raise _reject("bad-family")
    return TokenClaims(
        subject=subject,
        token_id=token_id,
        family=family,
        type=token_type,
        issued_at=datetime.fromtimestamp(int(payload["iat"]), UTC),
        expires_at=datetime.fromtimestamp(int(payload["exp"]), UTC),
    )


def _uuid_text(value: object) -> str | None:
    """`value` as a canonical UUID string, or None if it isn't one."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _reject(reason: str, detail: str = "The token is invalid.") -> InvalidToken:
    log.debug("token.rejected", reason=reason)
    return InvalidToken(detail)


class VerifiedTokenCache:
    """Access tokens already verified in this process, kept until their `exp`.

    Verifying an HS256 JWT costs tens of µs of Python on every request; a client
    sends the same token for its whole lifetime. The cache maps the exact token
    string to its claims, so a forged or altered token never matches an entry.
    Bounded: when full, the oldest entries go first.
    """

    def __init__(self, tokens: TokenService, *, max_entries: int = 10_000) -> None:
        self._tokens = tokens
        self._max_entries = max_entries
        self._entries: dict[str, TokenClaims] = {}

    def verify_access(self, token: str) -> TokenClaims:
        """The claims of a valid access token; raises `InvalidToken` like `TokenService.verify`."""
        claims = self._entries.get(token)
        if claims is not None:
            if claims.expires_at.timestamp() + LEEWAY.total_seconds() > time.time():
                return claims
            del self._entries[token]
        claims = self._tokens.verify(token, expected="access")
        if self._max_entries > 0:
            if len(self._entries) >= self._max_entries:
                # dicts keep insertion order: drop the oldest tenth in one go
                for stale in list(itertools.islice(self._entries, self._max_entries // 10 + 1)):
                    del self._entries[stale]
            self._entries[token] = claims
        return claims

    def __len__(self) -> int:
        return len(self._entries)
