"""Password hashing: argon2id parameters, bcrypt migration, long passwords, bad hashes."""

from __future__ import annotations

import threading
from typing import Any

import argon2
import bcrypt
import pytest

from keel.config import Settings
from keel.core.passwords import MAX_PASSWORD_LENGTH, PasswordHasher

OWASP_MINIMUM = "$argon2id$v=19$m=19456,t=2,p=1$"
LONG_ASCII = "correct horse battery staple " * 3 + "0123456789abc"  # 100 bytes
LONG_EMOJI = ("pässwörd🔐🦄" * 103)[:MAX_PASSWORD_LENGTH]  # 1024 chars, ~1.8 KB of UTF-8


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher.from_settings(Settings(_env_file=None, environment="testing"))


def bcrypt_hash(password: str | bytes, prefix: bytes = b"2b") -> str:
    raw = password.encode() if isinstance(password, str) else password
    return bcrypt.hashpw(raw, bcrypt.gensalt(rounds=4, prefix=prefix)).decode()


def test_long_fixtures_are_what_they_claim() -> None:
    assert len(LONG_ASCII.encode()) == 100
    assert len(LONG_EMOJI) == MAX_PASSWORD_LENGTH
    assert len(LONG_EMOJI.encode()) > 1800


async def test_default_settings_hash_with_owasp_minimum_argon2id(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash("a good password")
    assert hashed.startswith(OWASP_MINIMUM)
    assert argon2.extract_parameters(hashed).type is argon2.Type.ID


async def test_stronger_settings_raise_the_parameters() -> None:
    values: dict[str, Any] = {
        "environment": "testing",
        "argon2_memory_kib": 32_768,
        "argon2_time_cost": 3,
        "argon2_parallelism": 2,
    }
    stronger = PasswordHasher.from_settings(Settings(_env_file=None, **values))

    hashed = await stronger.hash("a good password")

    assert hashed.startswith("$argon2id$v=19$m=32768,t=3,p=2$")


async def test_weaker_stored_hash_is_upgraded_on_login(hasher: PasswordHasher) -> None:
    stronger = PasswordHasher(memory_kib=32_768, time_cost=3, parallelism=1)
    old = await hasher.hash("a good password")

    valid, new_hash = await stronger.verify("a good password", old)

    assert valid
    assert new_hash is not None
    assert new_hash.startswith("$argon2id$v=19$m=32768,t=3,p=1$")


async def test_right_password_verifies_without_rehash(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash("a good password")
    assert await hasher.verify("a good password", hashed) == (True, None)


async def test_wrong_password_fails(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash("a good password")
    assert await hasher.verify("a good passworD", hashed) == (False, None)
    assert await hasher.verify("", hashed) == (False, None)


async def test_hashes_are_salted(hasher: PasswordHasher) -> None:
    assert await hasher.hash("same password") != await hasher.hash("same password")


@pytest.mark.parametrize("prefix", [b"2a", b"2b"])
async def test_bcrypt_hash_verifies_and_is_replaced_by_argon2id(
    hasher: PasswordHasher, prefix: bytes
) -> None:
    legacy = bcrypt_hash("legacy password", prefix)

    valid, new_hash = await hasher.verify("legacy password", legacy)

    assert valid
    assert new_hash is not None
    assert new_hash.startswith(OWASP_MINIMUM)
    assert await hasher.verify("legacy password", new_hash) == (True, None)


async def test_bcrypt_2y_hash_verifies(hasher: PasswordHasher) -> None:
    legacy = bcrypt_hash("legacy password").replace("$2b$", "$2y$", 1)
    valid, new_hash = await hasher.verify("legacy password", legacy)
    assert valid
    assert new_hash is not None


async def test_wrong_password_against_bcrypt_fails(hasher: PasswordHasher) -> None:
    assert await hasher.verify("not it", bcrypt_hash("legacy password")) == (False, None)


async def test_argon2i_hash_verifies_and_is_replaced_by_argon2id(hasher: PasswordHasher) -> None:
    argon2i = argon2.PasswordHasher(type=argon2.Type.I, memory_cost=8192, time_cost=2)
    valid, new_hash = await hasher.verify("old scheme", argon2i.hash("old scheme"))
    assert valid
    assert new_hash is not None
    assert new_hash.startswith(OWASP_MINIMUM)


async def test_long_password_against_legacy_bcrypt_uses_its_first_72_bytes(
    hasher: PasswordHasher,
) -> None:
    # Legacy bcrypt silently hashed only the first 72 bytes; bcrypt 5 raises instead.
    legacy = bcrypt_hash(LONG_ASCII.encode()[:72])

    valid, new_hash = await hasher.verify(LONG_ASCII, legacy)

    assert valid
    assert new_hash is not None
    assert await hasher.verify(LONG_ASCII, new_hash) == (True, None)
    assert await hasher.verify(LONG_ASCII[:72] + "different tail", new_hash) == (False, None)


@pytest.mark.parametrize("password", [LONG_ASCII, LONG_EMOJI], ids=["100-bytes", "1024-emoji"])
async def test_long_passwords_never_raise_with_bcrypt(
    hasher: PasswordHasher, password: str
) -> None:
    other = bcrypt_hash("short and different")
    assert await hasher.verify(password, other) == (False, None)
    valid, new_hash = await hasher.verify(password, bcrypt_hash(password.encode()[:72]))
    assert valid
    assert new_hash is not None


@pytest.mark.parametrize("password", [LONG_ASCII, LONG_EMOJI], ids=["100-bytes", "1024-emoji"])
async def test_long_passwords_hash_and_verify_with_argon2id(
    hasher: PasswordHasher, password: str
) -> None:
    hashed = await hasher.hash(password)
    assert await hasher.verify(password, hashed) == (True, None)
    assert await hasher.verify(password[:-1], hashed) == (False, None)


async def test_passwords_over_the_maximum_are_refused(hasher: PasswordHasher) -> None:
    too_long = "x" * (MAX_PASSWORD_LENGTH + 1)
    hashed = await hasher.hash("x" * MAX_PASSWORD_LENGTH)

    assert await hasher.verify(too_long, hashed) == (False, None)
    assert await hasher.verify(too_long, bcrypt_hash("x" * 72)) == (False, None)
    with pytest.raises(ValueError, match="longer than"):
        await hasher.hash(too_long)


@pytest.mark.parametrize(
    "hashed",
    [
        "",
        "not a hash",
        "$argon2id$",
        "$argon2id$v=19$m=19456,t=2,p=1$",
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA",
        "$argon2id$v=19$m=19456,t=2,p=0$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2d$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
        "$2b$12$short",
        "$2b$12$" + "a" * 53,
        "$2b$99$" + "a" * 53,
        "$2x$04$" + "a" * 53,
        "$1$md5crypt$abcdefghijklmnopqrstuv",
        "pbkdf2_sha256$600000$salt$hash",
        "\x00",
    ],
)
async def test_malformed_hashes_fail_without_raising(hasher: PasswordHasher, hashed: str) -> None:
    assert await hasher.verify("a good password", hashed) == (False, None)


async def test_hash_runs_off_the_event_loop_thread(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    real_hash_sync = hasher.hash_sync

    def recording_hash_sync(password: str) -> str:
        threads.append(threading.get_ident())
        return real_hash_sync(password)

    monkeypatch.setattr(hasher, "hash_sync", recording_hash_sync)
    await hasher.hash("a good password")

    assert threads
    assert threads[0] != threading.get_ident()


async def test_verify_dummy_runs_a_real_argon2id_verification(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str | bytes, str | bytes, tuple[bool, str | None]]] = []
    inner = hasher._hash
    real_verify = inner.verify_and_update

    def recording_verify(password: str | bytes, hash: str | bytes) -> tuple[bool, str | None]:
        outcome = real_verify(password, hash)
        calls.append((password, hash, outcome))
        return outcome

    monkeypatch.setattr(inner, "verify_and_update", recording_verify)
    await hasher.verify_dummy("whatever the user typed")
    await hasher.verify_dummy("x" * (MAX_PASSWORD_LENGTH + 10))

    assert len(calls) == 2
    password, dummy_hash, outcome = calls[0]
    assert password == "whatever the user typed"
    assert isinstance(dummy_hash, str)
    # Same algorithm and cost as a real user's hash, so it costs the same.
    assert dummy_hash.startswith(OWASP_MINIMUM)
    assert outcome == (False, None)
    assert calls[1][1] == dummy_hash


@pytest.mark.parametrize(
    ("value", "supported"),
    [
        (OWASP_MINIMUM + "c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA", True),
        ("$argon2i$v=19$m=8192,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", True),
        ("$argon2d$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", False),
        ("$argon2id$v=16$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", False),
        ("$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", False),
        ("$argon2id$v=19$m=19456,t=2,p=1$", False),
        ("$2a$10$" + "N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy", True),
        ("$2b$12$" + "N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy", True),
        ("$2y$04$" + "N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy", True),
        ("$2x$10$" + "N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy", False),
        ("$2b$31$" + "N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy", False),
        ("$2b$12$" + "N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhW", False),
        ("$2b$12$" + "N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy\n", False),
        ("plaintext-password", False),
        ("", False),
    ],
)
def test_is_supported_hash(value: str, supported: bool) -> None:
    assert PasswordHasher.is_supported_hash(value) is supported


async def test_supported_hashes_really_verify(hasher: PasswordHasher) -> None:
    made = [await hasher.hash("pw-123456"), bcrypt_hash("pw-123456")]
    assert all(PasswordHasher.is_supported_hash(value) for value in made)
    for value in made:
        valid, _ = await hasher.verify("pw-123456", value)
        assert valid
