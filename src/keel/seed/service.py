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
    tenants: int
    posts_per_tenant: int
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
        if self.tenants:
            lines.append(
                f"tenants: {self.tenants:,} personal organizations"
                f" with {self.posts_per_tenant:,} posts each"
            )
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
    tenants: int = 0,
    posts_per_tenant: int = 0,
    progress: ProgressCallback | None = None,
) -> SeedReport:
    """Add `users` users and `posts` posts; with `reset`, first delete seeded rows.

    `url` is a SQLAlchemy or libpq URL. Posts go to the new users or, with
    `users=0`, to the seeded users already there, else to any users; `SeedError`
    if there are none. Every post belongs to its author's personal organization.
    The same `seed` gives the same names and text (not ids or times). `passwords`
    hashes `SEEDED_PASSWORD`, once.

    `tenants` and `posts_per_tenant` instead make `tenants` users whose personal
    organizations hold exactly `posts_per_tenant` posts each (by their owner): even
    tenants for benchmarks. They don't mix with `users` and `posts`.
    """
    if min(users, posts, tenants, posts_per_tenant) < 0:
        raise ValueError("users, posts, tenants and posts_per_tenant must not be negative")
    if not 0.0 <= published_ratio <= 1.0:
        raise ValueError("published_ratio must be between 0 and 1")
    if (tenants or posts_per_tenant) and (users or posts):
        raise SeedError("--tenants/--posts-per-tenant don't mix with --users/--posts")
    if posts_per_tenant and not tenants:
        raise SeedError("--posts-per-tenant needs --tenants")
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
            new_users = users + tenants
            authors, since_us = await _seed_users(conn, fake, new_users, passwords, progress)
            users_seconds = time.perf_counter() - users_started
            posts_started = time.perf_counter()
            if posts_per_tenant:
                await _seed_tenant_posts(
                    conn, fake, posts_per_tenant, authors, since_us, published_ratio, progress
                )
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
        users=users + tenants,
        posts=posts + tenants * posts_per_tenant,
        reset=reset,
        tenants=tenants,
        posts_per_tenant=posts_per_tenant,
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


async def _seed_tenant_posts(
    conn: asyncpg.Connection,
    fake: FakeRows,
    per_tenant: int,
    owners: list[UUID],
    since_us: list[int],
    published_ratio: float,
    progress: ProgressCallback,
) -> None:
    """`per_tenant` posts in each owner's personal organization, COPY in batches."""
    total = per_tenant * len(owners)
    done, rows = 0, []
    progress("posts", 0, total)
    for owner, since in zip(owners, since_us, strict=True):
        rows += fake.posts_by(per_tenant, owner, since, published_ratio)
        if len(rows) >= BATCH_ROWS:
            await repository.copy_posts(conn, rows)
            done, rows = done + len(rows), []
            progress("posts", done, total)
    if rows:
        await repository.copy_posts(conn, rows)
        progress("posts", done + len(rows), total)
