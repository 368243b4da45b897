"""`keel seed`: fake users and posts, a documented password, a reset that spares real data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from keel.config import Settings
from keel.core.db import create_database
from keel.core.passwords import PasswordHasher
from keel.seed import SEEDED_PASSWORD, SeedError, is_seeded_id, seed
from keel.users.schemas import AdminUserCreate
from keel.users.service import create_user
from tests.conftest import MakeDatabase, asyncpg_dsn, make_settings, running
from tests.posts.factory import make_post

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
SEEDED_USERS = "SELECT username, email FROM app.users WHERE metadata @> '{\"seeded\": true}'"
ScratchSettings = Callable[[str], Settings]


@pytest.fixture
def scratch_settings(data_dir: Path) -> ScratchSettings:
    return lambda url: make_settings(url, data_dir)


@pytest.fixture(scope="module")
def passwords() -> PasswordHasher:
    return PasswordHasher.from_settings(Settings(_env_file=None))


async def _fetch(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def _counts(url: str) -> tuple[int, int]:
    [row] = await _fetch(
        url, "SELECT (SELECT count(*) FROM app.users), (SELECT count(*) FROM app.posts)"
    )
    return row[0], row[1]


async def _make_real_user(settings: Settings, name: str, **fields: Any) -> None:
    """A user and one post of theirs (in their personal organization), through the
    services, as the app would make them."""
    database = create_database(settings, str(settings.database_url))
    try:
        async with database.sessionmaker() as session:
            data = AdminUserCreate(
                email=f"{name}@real.example.com", username=name, password="real user password"
            )
            user = await create_user(session, PasswordHasher.from_settings(settings), data)
            for field, value in fields.items():
                setattr(user, field, value)
            await make_post(session, user, f"by {name}", "Real words.")
            await session.commit()
    finally:
        await database.dispose()


async def test_seed_makes_the_rows_asked_for(
    make_database: MakeDatabase, passwords: PasswordHasher
) -> None:
    url = await make_database(migrated=True)
    report = await seed(url, passwords=passwords, users=25, posts=300, seed=1)
    assert (report.users, report.posts) == (25, 300)
    assert await _counts(url) == (25, 300)

    users = await _fetch(url, "SELECT id, email, username, metadata FROM app.users")
    assert len({u["email"].lower() for u in users}) == 25
    assert len({u["username"].lower() for u in users}) == 25
    for user in users:
        assert USERNAME.match(user["username"]), user["username"]
        assert 3 <= len(user["username"]) <= 50
        assert user["email"] == user["email"].lower()
        assert user["metadata"] == '{"seeded": true}'
        assert is_seeded_id(user["id"])
    posts = await _fetch(
        url,
        "SELECT p.id, p.author_id, p.tenant_id, length(p.search) AS terms, p.content,"
        " p.is_published, p.created_at >= u.created_at AS after_author"
        " FROM app.posts p JOIN app.users u ON u.id = p.author_id",
    )
    user_ids = {user["id"] for user in users}
    for post in posts:
        assert post["tenant_id"] == post["author_id"]  # the author's personal organization
        assert post["terms"] > 0  # PostgreSQL filled the generated tsvector
        assert post["author_id"] in user_ids
        assert post["after_author"]
        assert is_seeded_id(post["id"])
    assert any("\n\n" in p["content"] for p in posts)  # multi-paragraph content
    published = sum(p["is_published"] for p in posts)
    assert 150 < published < 300  # about 80%

    # Again, with no new users: more posts by the seeded users, all published.
    again = await seed(url, passwords=passwords, posts=40, seed=1, published_ratio=1.0)
    assert again.posts == 40
    assert await _counts(url) == (25, 340)
    [row] = await _fetch(url, "SELECT count(*) FILTER (WHERE is_published) FROM app.posts")
    assert row[0] == published + 40


async def test_the_same_seed_makes_the_same_names_and_text(
    make_database: MakeDatabase, passwords: PasswordHasher
) -> None:
    url = await make_database(migrated=True)
    query_users = "SELECT username, full_name FROM app.users ORDER BY username"
    query_posts = "SELECT title, content FROM app.posts ORDER BY title, content"
    await seed(url, passwords=passwords, users=5, posts=20, seed=42)
    first = (await _fetch(url, query_users), await _fetch(url, query_posts))
    await seed(url, passwords=passwords, users=5, posts=20, seed=42, reset=True)
    assert (await _fetch(url, query_users), await _fetch(url, query_posts)) == first


async def test_a_seeded_user_signs_in_with_the_documented_password(
    make_database: MakeDatabase, passwords: PasswordHasher, scratch_settings: ScratchSettings
) -> None:
    url = await make_database(migrated=True)
    await seed(url, passwords=passwords, users=5, seed=3)
    [user] = await _fetch(url, "SELECT username FROM app.users WHERE is_active LIMIT 1")
    async with running(scratch_settings(url)) as http:
        wrong = await http.post(
            "/api/v1/auth/login", data={"username": user[0], "password": "not-the-password"}
        )
        assert wrong.status_code == 401
        response = await http.post(
            "/api/v1/auth/login", data={"username": user[0], "password": SEEDED_PASSWORD}
        )
        assert response.status_code == 200, response.text
        assert response.json()["access_token"]


async def test_reset_deletes_only_seeded_rows(
    make_database: MakeDatabase, passwords: PasswordHasher, scratch_settings: ScratchSettings
) -> None:
    url = await make_database(migrated=True)
    settings = scratch_settings(url)
    await _make_real_user(settings, "real_one")
    # A user may set this metadata on themselves: it must not make them deletable.
    await _make_real_user(settings, "pretender", metadata_={"seeded": True})
    # No seeded users yet: these posts go to the real users, yet count as seeded.
    await seed(url, passwords=passwords, posts=10, seed=5)
    await seed(url, passwords=passwords, users=6, posts=30, seed=6)
    assert await _counts(url) == (8, 42)

    report = await seed(url, passwords=passwords, reset=True)
    assert (report.deleted_users, report.deleted_posts) == (6, 40)
    assert await _counts(url) == (2, 2)
    rows = await _fetch(
        url,
        "SELECT u.username, p.title FROM app.users u JOIN app.posts p ON p.author_id = u.id"
        " ORDER BY u.username",
    )
    assert [tuple(row) for row in rows] == [
        ("pretender", "by pretender"),
        ("real_one", "by real_one"),
    ]


async def test_seeded_names_step_around_names_already_taken(
    make_database: MakeDatabase, passwords: PasswordHasher, scratch_settings: ScratchSettings
) -> None:
    url = await make_database(migrated=True)
    await _make_real_user(scratch_settings(url), "someone")
    await seed(url, passwords=passwords, users=3, seed=9)
    planned = await _fetch(url, f"{SEEDED_USERS} ORDER BY created_at")
    await seed(url, passwords=passwords, reset=True)
    # The real user takes the first planned username and the second planned email.
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(
            "UPDATE app.users SET username = $1, email = $2 WHERE username = 'someone'",
            planned[0]["username"].upper(),
            planned[1]["email"],
        )
    finally:
        await conn.close()

    await seed(url, passwords=passwords, users=3, seed=9)
    names = {row["username"] for row in await _fetch(url, SEEDED_USERS)}
    assert len(names) == 3
    assert planned[2]["username"] in names  # untouched by the clash, so made as planned
    assert not names & {planned[0]["username"], planned[1]["username"]}


async def test_posts_without_any_users_is_an_error(
    make_database: MakeDatabase, passwords: PasswordHasher
) -> None:
    url = await make_database(migrated=True)
    with pytest.raises(SeedError, match="no users"):
        await seed(url, passwords=passwords, posts=10)
    assert await _counts(url) == (0, 0)


async def test_tenants_get_the_same_number_of_posts_each(
    make_database: MakeDatabase, passwords: PasswordHasher
) -> None:
    url = await make_database(migrated=True)
    report = await seed(url, passwords=passwords, tenants=4, posts_per_tenant=2_600, seed=2)
    assert (report.users, report.posts, report.tenants) == (4, 10_400, 4)
    assert "tenants: 4 personal organizations with 2,600 posts each" in report.summary()
    rows = await _fetch(
        url,
        "SELECT p.tenant_id, count(*) AS posts, count(DISTINCT p.author_id) AS authors,"
        " bool_and(p.author_id = p.tenant_id) AS by_owner, bool_and(o.personal) AS personal,"
        " bool_and(m.role = 'owner') AS owned, bool_and(p.created_at >= u.created_at) AS after"
        " FROM app.posts p JOIN app.organizations o ON o.id = p.tenant_id"
        " JOIN app.memberships m ON (m.tenant_id, m.user_id) = (p.tenant_id, p.author_id)"
        " JOIN app.users u ON u.id = p.author_id GROUP BY p.tenant_id",
    )
    assert len(rows) == 4
    for row in rows:
        assert (row["posts"], row["authors"]) == (2_600, 1)
        assert (row["by_owner"], row["personal"], row["owned"], row["after"]) == (True,) * 4

    # A reset deletes the tenants' owners, and with them their organizations and posts.
    await seed(url, passwords=passwords, reset=True)
    assert await _counts(url) == (0, 0)
    [row] = await _fetch(url, "SELECT count(*) FROM app.organizations")
    assert row[0] == 0


@pytest.mark.parametrize(
    "asked",
    [
        {"tenants": 2, "posts_per_tenant": 3, "users": 1},
        {"tenants": 2, "posts": 3},
        {"posts_per_tenant": 3},
    ],
)
async def test_tenants_do_not_mix_with_users_and_posts(
    make_database: MakeDatabase, passwords: PasswordHasher, asked: dict[str, Any]
) -> None:
    url = await make_database(migrated=True)
    with pytest.raises(SeedError, match="tenants"):
        await seed(url, passwords=passwords, **asked)
    assert await _counts(url) == (0, 0)


def _keel(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "ENVIRONMENT": "testing"}
    return subprocess.run(
        [sys.executable, "-m", "keel", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_cli_seeds_and_reports(make_database: MakeDatabase) -> None:
    url = await make_database(migrated=True)
    result = _keel(url, "seed", "--users", "7", "--posts", "60", "--seed", "11")
    assert result.returncode == 0, result.stderr
    assert "users: 7 rows" in result.stdout
    assert "posts: 60 rows" in result.stdout
    assert SEEDED_PASSWORD in result.stdout
    assert await _counts(url) == (7, 60)

    reset = _keel(url, "seed", "--reset")
    assert reset.returncode == 0, reset.stderr
    assert "deleted the seeded 7 users and 60 posts" in reset.stdout
    assert await _counts(url) == (0, 0)


async def test_cli_seeds_tenants(make_database: MakeDatabase) -> None:
    url = await make_database(migrated=True)
    result = _keel(url, "seed", "--tenants", "3", "--posts-per-tenant", "20", "--seed", "4")
    assert result.returncode == 0, result.stderr
    assert "users: 3 rows" in result.stdout
    assert "posts: 60 rows" in result.stdout
    assert "tenants: 3 personal organizations with 20 posts each" in result.stdout
    rows = await _fetch(url, "SELECT tenant_id, count(*) FROM app.posts GROUP BY tenant_id")
    assert sorted(row[1] for row in rows) == [20, 20, 20]


async def test_cli_refuses_posts_without_users(make_database: MakeDatabase) -> None:
    url = await make_database(migrated=True)
    result = _keel(url, "seed", "--posts", "10")
    assert result.returncode == 1
    assert "no users to write the posts" in result.stderr
    assert "Traceback" not in result.stderr
    assert await _counts(url) == (0, 0)
    idle = _keel(url, "seed")
    assert idle.returncode == 1
    assert "nothing to do" in idle.stderr
