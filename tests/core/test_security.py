"""JWTs: what is accepted, what is refused, and key rotation by `kid`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from keel.config import Settings
from keel.core import security
from keel.core.errors import Unauthorized
from keel.core.security import (
    LEEWAY,
    REQUIRED_CLAIMS,
    InvalidToken,
    TokenClaims,
    TokenService,
    TokenType,
    VerifiedTokenCache,
    derive_signing_key,
    key_id,
)

CURRENT = "current-secret-0123456789abcdefghijklmnopqrstuvwxyz"
OLD = "old-secret-0123456789abcdefghijklmnopqrstuvwxyz-old"
ISSUER, AUDIENCE = "keel-test", "keel-test-api"
# Keel's tokens carry UUIDs in sub, jti and fam.
USER = "0190f5a8-7c1e-7000-8000-0000000000a1"
FAMILY = "0190f5a8-7c1e-7000-8000-0000000000f1"
TOKEN_ID = "0190f5a8-7c1e-7000-8000-0000000000c1"


def make_service(signing_key: str = CURRENT, previous_keys: tuple[str, ...] = ()) -> TokenService:
    return TokenService(
        signing_key=signing_key,
        previous_keys=previous_keys,
        issuer=ISSUER,
        audience=AUDIENCE,
        access_ttl=timedelta(minutes=15),
        refresh_ttl=timedelta(days=14),
    )


@pytest.fixture
def service() -> TokenService:
    return make_service()


def claims(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": USER,
        "jti": TOKEN_ID,
        "fam": FAMILY,
        "typ": "access",
        "iat": now,
        "exp": now + timedelta(minutes=5),
    }
    values.update(overrides)
    return {key: value for key, value in values.items() if value is not None}


def forge(
    payload: dict[str, Any],
    *,
    secret: str = CURRENT,
    algorithm: str = "HS256",
    kid: str | None = None,
) -> str:
    """A token signed like Keel's, with whatever claims and header a test needs."""
    headers = {"kid": kid if kid is not None else key_id(secret)}
    return jwt.encode(payload, derive_signing_key(secret), algorithm=algorithm, headers=headers)


def test_issued_access_token_verifies_with_its_claims(service: TokenService) -> None:
    issued = service.issue(subject=USER, family=FAMILY, type="access")

    verified = service.verify(issued.token, expected="access")

    assert verified.subject == USER
    assert verified.family == FAMILY
    assert verified.type == "access"
    assert verified.token_id == issued.token_id
    assert verified.expires_at == issued.expires_at
    assert verified.expires_at - verified.issued_at == timedelta(minutes=15)
    assert verified.issued_at.tzinfo is not None


def test_refresh_token_lives_for_the_refresh_ttl(service: TokenService) -> None:
    issued = service.issue(subject=USER, family=FAMILY, type="refresh", token_id=TOKEN_ID)

    verified = service.verify(issued.token, expected="refresh")

    assert verified.token_id == issued.token_id == TOKEN_ID
    assert verified.expires_at - verified.issued_at == timedelta(days=14)
    assert service.refresh_ttl == timedelta(days=14)
    assert service.access_ttl == timedelta(minutes=15)


def test_every_token_gets_a_fresh_id(service: TokenService) -> None:
    first = service.issue(subject=USER, family=FAMILY, type="access")
    second = service.issue(subject=USER, family=FAMILY, type="access")
    assert first.token_id != second.token_id


def test_token_header_pins_hs256_and_names_the_key(service: TokenService) -> None:
    header = jwt.get_unverified_header(
        service.issue(subject=USER, family=FAMILY, type="access").token
    )

    assert header["alg"] == "HS256"
    assert header["kid"] == key_id(CURRENT) == service.key_id
    assert len(header["kid"]) == 16
    assert CURRENT not in header["kid"]


@pytest.mark.parametrize(("issued", "expected"), [("access", "refresh"), ("refresh", "access")])
def test_token_of_the_other_type_is_refused(
    service: TokenService, issued: TokenType, expected: TokenType
) -> None:
    token = service.issue(subject=USER, family=FAMILY, type=issued).token
    with pytest.raises(InvalidToken):
        service.verify(token, expected=expected)


def test_unknown_token_type_is_refused(service: TokenService) -> None:
    with pytest.raises(InvalidToken):
        service.verify(forge(claims(typ="id")), expected="access")


def test_alg_none_is_refused(service: TokenService) -> None:
    token = jwt.encode(claims(), None, algorithm="none", headers={"kid": service.key_id})
    with pytest.raises(InvalidToken):
        service.verify(token, expected="access")


@pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")
def test_other_hmac_algorithm_with_the_right_key_is_refused(service: TokenService) -> None:
    with pytest.raises(InvalidToken):
        service.verify(forge(claims(), algorithm="HS512"), expected="access")


def test_forged_forms_of_the_same_token_check_out_with_the_right_key(
    service: TokenService,
) -> None:
    # Guards the refusal tests below: `forge` does make tokens Keel accepts.
    assert service.verify(forge(claims()), expected="access").subject == USER


def test_token_signed_with_a_wrong_key_is_refused(service: TokenService) -> None:
    token = forge(claims(), secret="not-the-secret-0123456789abcdefghijkl", kid=service.key_id)
    with pytest.raises(InvalidToken):
        service.verify(token, expected="access")


def test_expired_token_is_refused(service: TokenService) -> None:
    past = datetime.now(UTC) - timedelta(minutes=5)
    token = forge(claims(iat=past - timedelta(minutes=15), exp=past))
    with pytest.raises(InvalidToken) as caught:
        service.verify(token, expected="access")
    assert caught.value.detail == "The token has expired."


def test_small_clock_skew_is_tolerated(service: TokenService) -> None:
    just_now = datetime.now(UTC) - timedelta(seconds=2)
    token = forge(claims(iat=just_now - timedelta(minutes=15), exp=just_now))
    assert service.verify(token, expected="access").subject == USER


def test_token_issued_in_the_future_is_refused(service: TokenService) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    token = forge(claims(iat=later, exp=later + timedelta(minutes=5)))
    with pytest.raises(InvalidToken):
        service.verify(token, expected="access")


@pytest.mark.parametrize("missing", REQUIRED_CLAIMS)
def test_token_missing_a_required_claim_is_refused(service: TokenService, missing: str) -> None:
    token = forge(claims(**{missing: None}))
    with pytest.raises(InvalidToken):
        service.verify(token, expected="access")


@pytest.mark.parametrize(
    "overrides",
    [
        {"iss": "someone-else"},
        {"aud": "another-api"},
        {"aud": ["another-api"]},
        {"fam": ""},
        {"fam": 7},
        {"sub": 42},
        # Validly signed, but not the UUIDs Keel puts there.
        {"sub": "user-1"},
        {"sub": ""},
        {"fam": "family-1"},
        {"jti": "token-1"},
        {"sub": USER + "0"},
    ],
)
def test_token_with_wrong_issuer_audience_or_claim_types_is_refused(
    service: TokenService, overrides: dict[str, Any]
) -> None:
    with pytest.raises(InvalidToken):
        service.verify(forge(claims(**overrides)), expected="access")


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "garbage",
        "a.b.c",
        "....",
        "Bearer x",
        "eyJhbGciOiJIUzI1NiJ9.e30.",
        "ü.ñ.é",
        "x" * 10_000,
    ],
)
def test_garbage_is_refused(service: TokenService, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        service.verify(garbage, expected="access")


def test_unknown_or_missing_kid_is_refused(service: TokenService) -> None:
    with pytest.raises(InvalidToken):
        service.verify(forge(claims(), kid="0123456789abcdef"), expected="access")
    no_kid = jwt.encode(claims(), derive_signing_key(CURRENT), algorithm="HS256")
    with pytest.raises(InvalidToken):
        service.verify(no_kid, expected="access")


def test_invalid_token_is_a_401_with_a_bearer_challenge(service: TokenService) -> None:
    token = service.issue(subject=USER, family=FAMILY, type="access").token
    with pytest.raises(InvalidToken) as caught:
        service.verify(token + "x", expected="access")

    error = caught.value
    assert isinstance(error, Unauthorized)
    assert error.status_code == 401
    assert error.slug == "invalid-token"
    assert error.headers == {"WWW-Authenticate": "Bearer"}
    assert error.detail is not None
    assert token not in error.detail


def test_rotation_keeps_old_tokens_while_the_old_key_is_listed() -> None:
    before = make_service(OLD)
    old_token = before.issue(subject=USER, family=FAMILY, type="refresh").token

    rotated = make_service(CURRENT, previous_keys=(OLD,))

    assert rotated.verify(old_token, expected="refresh").subject == USER
    new_token = rotated.issue(subject=USER, family=FAMILY, type="refresh").token
    assert jwt.get_unverified_header(new_token)["kid"] == key_id(CURRENT)
    with pytest.raises(InvalidToken):
        before.verify(new_token, expected="refresh")


def test_rotation_refuses_old_tokens_once_the_old_key_is_removed() -> None:
    old_token = make_service(OLD).issue(subject=USER, family=FAMILY, type="access").token

    with pytest.raises(InvalidToken):
        make_service(CURRENT).verify(old_token, expected="access")


def test_from_settings_uses_the_identity_settings() -> None:
    values: dict[str, Any] = {
        "environment": "testing",
        "secret_key": CURRENT,
        "previous_secret_keys": f"{OLD}, unused-secret-0123456789abcdefghijklmnop",
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "access_token_minutes": 5,
        "refresh_token_days": 2,
    }
    settings = Settings(_env_file=None, **values)
    service = TokenService.from_settings(settings)
    old_token = make_service(OLD).issue(subject=USER, family=FAMILY, type="access").token

    assert service.access_ttl == timedelta(minutes=5)
    assert service.refresh_ttl == timedelta(days=2)
    assert service.key_id == key_id(CURRENT)
    assert service.verify(old_token, expected="access").subject == USER


def test_configuration_mistakes_fail_fast() -> None:
    with pytest.raises(ValueError, match="signing_key"):
        make_service("")
    with pytest.raises(ValueError, match="positive"):
        TokenService(
            signing_key=CURRENT,
            issuer=ISSUER,
            audience=AUDIENCE,
            access_ttl=timedelta(0),
            refresh_ttl=timedelta(days=1),
        )


def test_subject_or_none_names_only_valid_access_tokens(service: TokenService) -> None:
    access = service.issue(subject=USER, family=FAMILY, type="access").token
    refresh = service.issue(subject=USER, family=FAMILY, type="refresh").token

    assert service.subject_or_none(access) == USER
    assert service.subject_or_none(refresh) is None
    assert service.subject_or_none(access[:-2]) is None
    assert service.subject_or_none("garbage") is None


def test_verified_tokens_are_cached_until_they_expire_and_the_cache_is_bounded(
    service: TokenService,
) -> None:
    cache = VerifiedTokenCache(service, max_entries=10)
    token = service.issue(subject=USER, family=FAMILY, type="access").token
    first = cache.verify_access(token)
    assert cache.verify_access(token) is first  # the second time costs no verification
    with pytest.raises(InvalidToken):
        cache.verify_access(token + "x")  # an altered token never matches an entry
    with pytest.raises(InvalidToken):
        cache.verify_access(service.issue(subject=USER, family=FAMILY, type="refresh").token)
    for n in range(25):
        cache.verify_access(
            service.issue(subject=str(uuid.UUID(int=n)), family=FAMILY, type="access").token
        )
    assert len(cache) <= 10


def test_a_cached_token_is_verified_afresh_once_it_expires(
    service: TokenService, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = VerifiedTokenCache(service)
    token = service.issue(subject=USER, family=FAMILY, type="access").token
    claims = cache.verify_access(token)
    later = claims.expires_at.timestamp() + LEEWAY.total_seconds() + 1
    monkeypatch.setattr(security, "time", SimpleNamespace(time=lambda: later))

    def expired(token: str, *, expected: str) -> TokenClaims:
        raise InvalidToken("The token has expired.")  # what PyJWT says at that time

    monkeypatch.setattr(service, "verify", expired)
    with pytest.raises(InvalidToken):
        cache.verify_access(token)
    assert len(cache) == 0


@pytest.mark.parametrize("claim", ["sub", "fam", "jti"])
async def test_a_signed_token_with_a_non_uuid_id_is_a_401_through_the_api(
    app: FastAPI, client: AsyncClient, claim: str
) -> None:
    signing_key = derive_signing_key(app.state.settings.resolved_secret_key())

    def token(type_: TokenType) -> str:
        payload = claims(iss="keel", aud="keel-api", typ=type_, **{claim: "not-a-uuid"})
        return jwt.encode(payload, signing_key, headers={"kid": app.state.services.tokens.key_id})

    access = {"Authorization": f"Bearer {token('access')}"}
    for response in (
        await client.get("/api/v1/users/me", headers=access),
        await client.post("/api/v1/auth/logout", headers=access),
        await client.post("/api/v1/auth/refresh", json={"refresh_token": token("refresh")}),
    ):
        assert response.status_code == 401, (response.url, response.text)
        assert response.headers["content-type"] == "application/problem+json"
