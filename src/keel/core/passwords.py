"""Password hashing: argon2id for new hashes, bcrypt accepted for imported users.

Passwords are limited to `MAX_PASSWORD_LENGTH` (1024) *characters*, counted as
Python `str` length, so a password of emoji may be up to 4096 UTF-8 bytes;
argon2id hashes all of it. Legacy bcrypt hashes only ever covered the first 72
bytes, so those are verified against the first 72 bytes, as the systems that
made them did, and the user gets an argon2id hash of the full password on the
next successful login.

Hashing is CPU- and memory-bound (19 MiB+ per call), so the async methods run
it in a worker thread; argon2-cffi and bcrypt release the GIL while they work.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import TYPE_CHECKING, Final

from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.base import ensure_bytes
from pwdlib.hashers.bcrypt import BcryptHasher

if TYPE_CHECKING:
    from keel.config import Settings

MIN_PASSWORD_LENGTH: Final = 8
MAX_PASSWORD_LENGTH: Final = 1024
BCRYPT_MAX_BYTES: Final = 72

# Imported hashes are attacker-adjacent data: bound the cost an argon2 hash may
# demand, so one row cannot make every login attempt allocate gigabytes.
_MAX_ARGON2_MEMORY_KIB: Final = 1_048_576
_MAX_ARGON2_TIME_COST: Final = 16
_MAX_ARGON2_PARALLELISM: Final = 16
_ARGON2_SHAPE: Final = re.compile(
    r"\$argon2(?:id|i)\$v=19\$m=(?P<m>\d{1,10}),t=(?P<t>\d{1,10}),p=(?P<p>\d{1,3})"
    r"\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{16,}"
)
_BCRYPT_SHAPE: Final = re.compile(r"\$2[aby]\$(?:0[4-9]|1[0-6])\$[./A-Za-z0-9]{53}")


class _LegacyBcryptHasher(BcryptHasher):
    """bcrypt that, like every bcrypt before 5.0, ignores bytes past the 72nd.

    bcrypt 5 raises `ValueError` for longer passwords instead of truncating.
    """

    def verify(self, password: str | bytes, hash: str | bytes) -> bool:
        return super().verify(ensure_bytes(password)[:BCRYPT_MAX_BYTES], hash)


class PasswordHasher:
    """Hashes with argon2id; verifies argon2 and bcrypt hashes and flags them for rehash."""

    def __init__(self, *, memory_kib: int, time_cost: int, parallelism: int) -> None:
        # Argon2Hasher defaults to type ID; it also verifies argon2i/argon2d hashes.
        self._hash = PasswordHash(
            (
                Argon2Hasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism),
                _LegacyBcryptHasher(),
            )
        )
        # Made with the live parameters, so an unknown account costs what a real one does.
        self._dummy_hash = self._hash.hash(secrets.token_urlsafe(32))

    @classmethod
    def from_settings(cls, settings: Settings) -> PasswordHasher:
        """Build the hasher from the argon2 settings."""
        return cls(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            parallelism=settings.argon2_parallelism,
        )

    async def hash(self, password: str) -> str:
        """An argon2id hash of `password`, computed off the event loop."""
        return await asyncio.to_thread(self.hash_sync, password)

    def hash_sync(self, password: str) -> str:
        """Like `hash`, on the calling thread (for bulk paths that run their own pool).

        Raises `ValueError` for passwords longer than `MAX_PASSWORD_LENGTH`.
        """
        if len(password) > MAX_PASSWORD_LENGTH:
            raise ValueError(f"password is longer than {MAX_PASSWORD_LENGTH} characters")
        return self._hash.hash(password)

    async def verify(self, password: str, hashed: str) -> tuple[bool, str | None]:
        """Check `password` against `hashed`: `(valid, new_hash_or_None)`.

        A new hash is returned when `hashed` is bcrypt or uses weaker parameters
        than configured; store it. Never raises: an unknown or malformed hash, or
        a password over `MAX_PASSWORD_LENGTH`, is simply `(False, None)`.
        """
        if len(password) > MAX_PASSWORD_LENGTH:
            return False, None
        return await asyncio.to_thread(self._verify_sync, password, hashed)

    async def verify_dummy(self, password: str) -> None:
        """Spend the cost of one real verification, for accounts that do not exist."""
        await asyncio.to_thread(self._verify_sync, password[:MAX_PASSWORD_LENGTH], self._dummy_hash)

    def _verify_sync(self, password: str, hashed: str) -> tuple[bool, str | None]:
        try:
            return self._hash.verify_and_update(password, hashed)
        except (UnknownHashError, ValueError, TypeError):
            # ValueError: bcrypt refusing a salt/shape pwdlib let through (e.g. $2x$).
            return False, None

    @staticmethod
    def is_supported_hash(value: str) -> bool:
        """Whether `value` is a hash Keel can import and verify.

        Accepted: argon2id and argon2i (version 19, bounded cost) and bcrypt
        `$2a$`/`$2b$`/`$2y$` with a cost of 4 to 16. argon2d (side-channel prone, not meant for
        passwords) and bcrypt `$2x$` (the buggy crypt_blowfish variant) are not.
        """
        if _BCRYPT_SHAPE.fullmatch(value):
            return True
        match = _ARGON2_SHAPE.fullmatch(value)
        return match is not None and (
            1 <= int(match["m"]) <= _MAX_ARGON2_MEMORY_KIB
            and 1 <= int(match["t"]) <= _MAX_ARGON2_TIME_COST
            and 1 <= int(match["p"]) <= _MAX_ARGON2_PARALLELISM
        )
