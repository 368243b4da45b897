"""Seeding: reset, users, posts, in one transaction; see the package docstring."""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from keel.core.passwords import PasswordHasher
from keel.seed import repository
from keel.seed.fake import SEEDED_PASSWORD, FakeRows
from keel.seed.progress import ProgressCallback, no_progress

BATCH_ROWS = 10_000


class SeedError(RuntimeError):
    """Seeding cannot run as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class SeedReport:
    seed: int
    users: int
    posts: int
    reset: bool
    deleted_users: int
    deleted_posts: int
    users_seconds: float
    posts_seconds: float
    total_seconds: float

    @property
    def users_per_second(self) -> float:
        return self.users / self.users_seconds if self.users_seconds else 0.0

    @property
    def posts_per_second(self) -> float:
        return self.posts / self.posts_seconds if self.posts_seconds else 0.0

    def summary(self) -> str:
        lines = []
        if self.reset:
            deleted = f"{self.deleted_users:,} users and {self.deleted_posts:,} posts"
            lines.append(f"deleted the seeded {deleted}")
        for table, rows, seconds, rate in (
            ("users", self.users, self.users_seconds, self.users_per_second),
            ("posts", self.posts, self.posts_seconds, self.posts_per_second),
        ):
            if rows:
                lines.append(f"{table}: {rows:,} rows in {seconds:.1f} s ({rate:,.0f} rows/s)")
        lines.append(f"total {self.total_seconds:.1f} s")
        if self.users or self.posts:
            lines[-1] += f" (repeat with --seed {self.seed})"
        if self.users:
            lines.append(f"seeded users sign in with the password {SEEDED_PASSWORD!r}")
        return "\n".join(lines)


async def seed(
    url: str,
    *,
    passwords: PasswordHasher,
    users: int = 0,
    posts: int = 0,
    reset: bool = False,
    seed: int | None = None,
    published_ratio: float = 0.8,
    progress: ProgressCallback | None = None,
) -> SeedReport:
    """Add `users` users and `posts` posts; with `reset`, first delete seeded rows.

    `url` is a SQLAlchemy or libpq URL. Posts go to the new users or, with
    `users=0`, to the seeded users already there, else to any users; `SeedError`
    if there are none. The same `seed` gives the same names and text (not ids or
    times). `passwords` hashes `SEEDED_PASSWORD`, once.
    """
    if users < 0 or posts < 0:
        raise ValueError("users and posts must not be negative")
    if not 0.0 <= published_ratio <= 1.0:
        raise ValueError("published_ratio must be between 0 and 1")
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    progress = progress or no_progress
    started = time.perf_counter()
    conn = await repository.connect(url)
    try:
        if not await repository.has_schema(conn):
            raise SeedError("the database has no Keel tables; run `keel migrate upgrade` first")
        fake = FakeRows(seed)
        async with conn.transaction():
            deleted_users, deleted_posts = await repository.delete_seeded(conn) if reset else (0, 0)
            users_started = time.perf_counter()
            authors, since_us = await _seed_users(conn, fake, users, passwords, progress)
            users_seconds = time.perf_counter() - users_started
            posts_started = time.perf_counter()
            if posts:
                if not users:
                    authors, since_us = await repository.existing_authors(conn)
                if not authors:
                    raise SeedError("there are no users to write the posts; add some with --users")
                await _seed_posts(conn, fake, posts, authors, since_us, published_ratio, progress)
            posts_seconds = time.perf_counter() - posts_started
        await repository.analyze(conn)  # fresh statistics for the planner
    finally:
        await conn.close()
    return SeedReport(
        seed=seed,
        users=users,
        posts=posts,
        reset=reset,
        deleted_users=deleted_users,
        deleted_posts=deleted_posts,
        users_seconds=users_seconds,
        posts_seconds=posts_seconds,
        total_seconds=time.perf_counter() - started,
    )


async def _seed_users(
    conn: asyncpg.Connection,
    fake: FakeRows,
    count: int,
    passwords: PasswordHasher,
    progress: ProgressCallback,
) -> tuple[list[UUID], list[int]]:
    """Copy `count` users in: their ids and creation times (Unix µs), oldest first."""
    if not count:
        return [], []
    password_hash = await passwords.hash(SEEDED_PASSWORD)
    created = fake.user_times(count)
    # Serials go on from the users already there, so a repeated run seldom needs a retry.
    serials = itertools.count(await repository.count_users(conn) + 1)
    ids: list[UUID] = []
    progress("users", 0, count)
    for start in range(0, count, BATCH_ROWS):
        batch = created[start : start + BATCH_ROWS]
        rows = [fake.user(us, next(serials), password_hash) for us in batch]
        while taken := await repository.taken_rows(conn, rows):
            for i in taken:  # someone has this email or username already: make another
                rows[i] = fake.user(batch[i], next(serials), password_hash)
        try:
            await repository.copy_users(conn, rows)
        except asyncpg.UniqueViolationError as exc:
            # Only a concurrent writer (another `keel seed`?) can take a name after the check.
            raise SeedError("a user saved meanwhile took a new user's name; run again") from exc
        ids.extend(row[0] for row in rows)
        progress("users", start + len(rows), count)
    return ids, created


async def _seed_posts(
    conn: asyncpg.Connection,
    fake: FakeRows,
    count: int,
    authors: list[UUID],
    since_us: list[int],
    published_ratio: float,
    progress: ProgressCallback,
) -> None:
    progress("posts", 0, count)
    for start in range(0, count, BATCH_ROWS):
        rows = fake.posts(min(BATCH_ROWS, count - start), authors, since_us, published_ratio)
        await repository.copy_posts(conn, rows)
        progress("posts", start + len(rows), count)
