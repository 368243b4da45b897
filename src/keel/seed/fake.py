"""Fake rows, built fast from pools of Faker text; the same seed gives the same names and text."""

from __future__ import annotations

import random
import re
import time
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from faker import Faker

from keel.posts.models import TITLE_MAX

SEEDED_PASSWORD = "seeded-password"  # noqa: S105 - documented; only seeded accounts use it
SEED_ID_TAG = 0x5EED_5EED_5EED  # the low 48 bits of every seeded id
SEEDED_METADATA = '{"seeded": true}'
HISTORY = timedelta(days=730)
POOL_SIZE = 5_000
NAME_POOL_SIZE = 1_000
MAX_PARAGRAPHS = 6
# Reserved for examples (RFC 2606): mail to seeded users can never reach a real inbox.
EMAIL_DOMAINS = ("example.com", "example.org", "example.net")

# The order of the tuples `FakeRows` makes; COPY names these columns explicitly.
USER_COLUMNS = (
    "id",
    "email",
    "username",
    "full_name",
    "hashed_password",
    "is_active",
    "is_verified",
    "last_login",
    "metadata",
    "created_at",
    "updated_at",
)
# Posts belong to their author's personal organization, whose id is the author's id.
POST_COLUMNS = (
    "tenant_id",
    "id",
    "title",
    "content",
    "is_published",
    "author_id",
    "created_at",
    "updated_at",
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def seeded_uuid7(millis: int, rng: random.Random) -> UUID:
    """A UUIDv7 for `millis` (Unix ms): 26 random bits, then `SEED_ID_TAG`."""
    rand = rng.getrandbits(26)
    value = (
        (millis & ((1 << 48) - 1)) << 80
        | 0x7 << 76
        | (rand >> 14) << 64
        | 0b10 << 62
        | (rand & 0x3FFF) << 48
        | SEED_ID_TAG
    )
    return UUID(int=value)


def is_seeded_id(value: UUID) -> bool:
    return value.int & ((1 << 48) - 1) == SEED_ID_TAG


def _letters(name: str) -> str:
    """`name` folded to lower-case ASCII letters, for usernames and emails."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z]", "", ascii_name.lower())


def _at(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


class FakeRows:
    """Users and posts as tuples in `USER_COLUMNS` / `POST_COLUMNS` order.

    Times are Unix microseconds, within `HISTORY` of when this object was made.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - fake data, reproducible by design
        # Ids draw on their own unseeded generator: repeating a --seed must not repeat them.
        self._id_rng = random.Random()  # noqa: S311 - needs uniqueness, not secrecy
        self._faker = Faker("en_US")
        self._faker.seed_instance(seed)
        self.now_us = time.time_ns() // 1000
        self._first_names: list[str] = []
        self._last_names: list[str] = []
        self._titles: list[str] = []
        self._paragraphs: list[str] = []

    def user_times(self, count: int) -> list[int]:
        """`count` account creation times, oldest first."""
        oldest_us = self.now_us - HISTORY // timedelta(microseconds=1)
        return sorted(self.rng.randrange(oldest_us, self.now_us) for _ in range(count))

    def user(self, created_us: int, serial: int, password_hash: str) -> tuple[Any, ...]:
        """One user; `serial` must be unique among the users of this run."""
        if not self._first_names:
            self._first_names = [self._faker.first_name() for _ in range(NAME_POOL_SIZE)]
            self._last_names = [self._faker.last_name() for _ in range(NAME_POOL_SIZE)]
        rng = self.rng
        first, last = rng.choice(self._first_names), rng.choice(self._last_names)
        f, la = _letters(first) or "user", _letters(last) or "user"
        base = rng.choice((f"{f}.{la}", f"{f}{la}", f"{f[0]}{la}", f"{la}.{f}", f"{f}_{la}", f))
        # The base has no digits, so the trailing serial alone keeps usernames apart.
        username = f"{base[:30]}{rng.choice(('', '.', '_'))}{serial}"
        created = _at(created_us)
        return (
            seeded_uuid7(created_us // 1000, self._id_rng),
            f"{username}@{rng.choice(EMAIL_DOMAINS)}",
            username,
            f"{first} {last}" if rng.random() < 0.9 else None,
            password_hash,
            rng.random() < 0.97,  # is_active
            rng.random() < 0.7,  # is_verified
            _at(rng.randint(created_us, self.now_us)) if rng.random() < 0.6 else None,
            SEEDED_METADATA,
            created,
            created,
        )

    def _pools(self) -> None:
        if not self._titles:
            fake, rng = self._faker, self.rng
            self._titles = [
                fake.sentence(nb_words=rng.randint(3, 11)).rstrip(".")[:TITLE_MAX]
                for _ in range(POOL_SIZE)
            ]
            self._paragraphs = [
                fake.paragraph(nb_sentences=rng.randint(3, 9)) for _ in range(POOL_SIZE)
            ]

    def _post(self, author: UUID, since_us: int, published_ratio: float) -> tuple[Any, ...]:
        """One post by `author`, in their personal organization, after `since_us`."""
        rng = self.rng
        created_us = since_us + int(rng.random() * (self.now_us - since_us))
        created = _at(created_us)
        return (
            author,  # tenant_id: the personal organization's id is its owner's
            seeded_uuid7(created_us // 1000, self._id_rng),
            rng.choice(self._titles),
            "\n\n".join(rng.choices(self._paragraphs, k=rng.randint(1, MAX_PARAGRAPHS))),
            rng.random() < published_ratio,
            author,
            created,
            created,
        )

    def posts(
        self, count: int, authors: list[UUID], since_us: list[int], published_ratio: float
    ) -> list[tuple[Any, ...]]:
        """`count` posts by `authors` (oldest first), each after its author's `since_us`."""
        self._pools()
        random_, post, n = self.rng.random, self._post, len(authors)
        rows = []
        for _ in range(count):
            # Skewed to the oldest accounts: a few prolific authors, a long quiet tail.
            a = int(n * random_() ** 2)
            rows.append(post(authors[a], since_us[a], published_ratio))
        return rows

    def posts_by(
        self, count: int, author: UUID, since_us: int, published_ratio: float
    ) -> list[tuple[Any, ...]]:
        """`count` posts, all by `author` (so all in their personal organization)."""
        self._pools()
        return [self._post(author, since_us, published_ratio) for _ in range(count)]
