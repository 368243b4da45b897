"""The imports scenario's data: deterministic users and posts files, and the child steps
that need Keel in-process (hashing, the naive ORM baseline)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import orjson

SHARED_PASSWORD = "bench-import-password"  # noqa: S105 - hashed once, shared by every row
FIXED_NOW = datetime(2026, 1, 1, tzinfo=UTC)  # "now" of the generated data: files repeat

USER_APP_COLUMNS = (
    "email",
    "username",
    "full_name",
    "hashed_password",
    "is_active",
    "is_verified",
    "metadata",
    "created_at",
)
USER_COPY_COLUMNS = (
    "id",
    "email",
    "username",
    "full_name",
    "hashed_password",
    "is_active",
    "is_verified",
    "is_superuser",
    "metadata",
    "created_at",
)
POST_APP_COLUMNS = ("id", "title", "content", "is_published", "author_username", "created_at")
POST_COPY_COLUMNS = ("id", "title", "content", "is_published", "author_id", "created_at")


def child_prepare(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Migrate; one argon2id hash for every row; the raw hash cost (run pinned to CPU 0)."""
    from keel.config import Settings
    from keel.core.passwords import PasswordHasher
    from keel.migrations import runner

    runner.upgrade(spec["url"])
    settings = Settings()
    hasher = PasswordHasher.from_settings(settings)
    hashed = hasher.hash_sync(SHARED_PASSWORD)
    hash_ms = []
    for _ in range(spec["hash_repeats"]):
        t0 = time.perf_counter()
        hasher.hash_sync(SHARED_PASSWORD)
        hash_ms.append((time.perf_counter() - t0) * 1e3)
    return {
        "hashed": hashed,
        "hash_ms": hash_ms,
        "params": {
            "memory_kib": settings.argon2_memory_kib,
            "time_cost": settings.argon2_time_cost,
            "parallelism": settings.argon2_parallelism,
        },
        "hash_workers": settings.import_hash_workers or os.cpu_count() or 1,
    }


def child_naive(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Insert the rows one ORM object at a time: seconds.

    Each row is flushed (one INSERT ... RETURNING round trip) inside one transaction committed
    at the end; with spec["commit_each"], each row is committed instead (autocommit style).
    """
    from sqlalchemy import text

    import keel.models  # noqa: F401 - registers every mapper
    from keel.config import Settings
    from keel.core.db import create_database
    from keel.posts.models import Post
    from keel.users.models import User

    rows = orjson.loads(Path(spec["rows"]).read_bytes())
    commit_each = bool(spec.get("commit_each"))
    kwargs: list[dict[str, Any]] = []
    model: Any
    if spec["kind"] == "posts":
        model = Post
        for r in rows:
            kwargs.append(
                {
                    "id": UUID(r["id"]),
                    "title": r["title"],
                    "content": r["content"],
                    "is_published": r["is_published"],
                    "author_id": UUID(r["author_id"]),
                    "created_at": datetime.fromisoformat(r["created_at"]),
                }
            )
    else:
        model = User
        for r in rows:
            kwargs.append(
                {
                    "email": r["email"],
                    "username": r["username"],
                    "full_name": r.get("full_name"),
                    "hashed_password": r["hashed_password"],
                    "is_active": r["is_active"],
                    "is_verified": r["is_verified"],
                    "metadata_": r["metadata"],
                    "created_at": datetime.fromisoformat(r["created_at"]),
                }
            )

    async def go() -> float:
        database = create_database(Settings(), spec["url"])
        try:
            async with database.sessionmaker() as session:
                await session.execute(text("SELECT 1"))  # connected, transaction open
                t0 = time.perf_counter()
                for kw in kwargs:
                    session.add(model(**kw))
                    if commit_each:
                        await session.commit()
                    else:
                        await session.flush()
                await session.commit()
                return time.perf_counter() - t0
        finally:
            await database.dispose()

    seconds = asyncio.run(go())
    return {"rows": len(kwargs), "seconds": seconds}


@dataclass
class Data:
    """The generated rows (in memory) and the files made from them."""

    users: list[dict[str, Any]]
    posts: list[dict[str, Any]]  # author as "author_username"
    files: dict[str, Path] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


def _iso(value: datetime) -> str:
    return value.isoformat()


def generate(n_users: int, n_posts: int, seed: int, hashed: str) -> Data:
    """Users and posts with keel.seed's Faker pools; ids and times from `seed` as well."""
    from keel.seed.fake import FakeRows, seeded_uuid7

    fake = FakeRows(seed)
    fake.now_us = (FIXED_NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    id_rng = random.Random(seed + 1)  # noqa: S311 - fake data
    times = fake.user_times(n_users)
    users = []
    for serial, created_us in enumerate(times, 1):
        row = fake.user(created_us, serial, hashed)
        users.append(
            {
                "id": str(seeded_uuid7(created_us // 1000, id_rng)),  # for \copy only
                "email": row[1],
                "username": row[2],
                "full_name": row[3],
                "hashed_password": hashed,
                "is_active": row[5],
                "is_verified": row[6],
                "is_superuser": False,
                "metadata": orjson.loads(row[8]),
                "created_at": _iso(row[9]),
            }
        )
    authors = cast(Any, list(range(n_users)))  # FakeRows.posts hands these back per post
    posts = []
    for row in fake.posts(n_posts, authors, times, 0.8):
        created: datetime = row[5]
        created_us = (created - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        posts.append(
            {
                "id": str(seeded_uuid7(created_us // 1000, id_rng)),
                "title": row[1],
                "content": row[2],
                "is_published": row[3],
                "author_username": users[row[4]]["username"],
                "created_at": _iso(created),
            }
        )
    return Data(users, posts)


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return "" if value is None else value


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
    return path


def write_ndjson(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    with path.open("wb") as handle:
        for row in rows:
            handle.write(orjson.dumps({c: row[c] for c in columns if row.get(c) is not None}))
            handle.write(b"\n")
    return path


def changed_titles(posts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every title different (and still at most 255 characters)."""
    return [{**p, "title": ("Revised: " + p["title"])[:255]} for p in posts]


def plain_users(count: int) -> list[dict[str, Any]]:
    return [
        {
            "email": f"plain.{i}@example.com",
            "username": f"plain.user.{i}",
            "password": f"plain-password-{i:06d}",
        }
        for i in range(count)
    ]


def write_files(args: argparse.Namespace, data: Data, workdir: Path) -> None:
    f = data.files
    f["users_csv"] = write_csv(workdir / "users.csv", USER_APP_COLUMNS, data.users)
    f["users_copy"] = write_csv(workdir / "users_copy.csv", USER_COPY_COLUMNS, data.users)
    f["posts_csv"] = write_csv(workdir / "posts.csv", POST_APP_COLUMNS, data.posts)
    changed = changed_titles(data.posts)
    f["posts_changed"] = write_csv(workdir / "posts_changed.csv", POST_APP_COLUMNS, changed)
    if args.ndjson:
        f["users_ndjson"] = write_ndjson(workdir / "users.ndjson", USER_APP_COLUMNS, data.users)
        f["posts_ndjson"] = write_ndjson(workdir / "posts.ndjson", POST_APP_COLUMNS, data.posts)
    plain = plain_users(args.plain_users)
    f["plain_csv"] = write_csv(
        workdir / "plain_users.csv", ("email", "username", "password"), plain
    )
    data.sizes = {k: p.stat().st_size for k, p in f.items()}
