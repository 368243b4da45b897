"""`keel import users FILE` and `keel import posts FILE --org ORG`, run as a real subprocess
against a scratch database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests.conftest import MakeDatabase, asyncpg_dsn

USERS_CSV = (
    "email,username,password,full_name\n"
    "cli1@example.com,cli_one,long enough 1,One\n"
    "cli2@example.com,cli_two,long enough 2,Two\n"
)


def keel_import(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "ENVIRONMENT": "testing", "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "keel", "import", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def counts(url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM app.users), (SELECT count(*) FROM app.posts)"
        )
        assert row is not None
        return int(row[0]), int(row[1])
    finally:
        await conn.close()


async def tenants_of_posts(url: str) -> list[str]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT DISTINCT u.username FROM app.posts p JOIN app.users u ON u.id = p.tenant_id"
        )
        return [row[0] for row in rows]
    finally:
        await conn.close()


async def records(url: str) -> list[tuple[str, object]]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch("SELECT status, actor_id FROM app.imports ORDER BY id")
        return [(row[0], row[1]) for row in rows]
    finally:
        await conn.close()


async def test_import_users_then_posts(make_database: MakeDatabase, tmp_path: Path) -> None:
    url = await make_database(migrated=True)
    users = tmp_path / "users.csv"
    users.write_text(USERS_CSV)
    posts = tmp_path / "posts.ndjson"
    posts.write_text(
        '{"title": "Hello", "content": "x", "author_username": "cli_one"}\n'
        '{"title": "Again", "author_email": "cli1@example.com"}\n'
    )
    outsider = tmp_path / "outsider.ndjson"
    outsider.write_text('{"title": "Not here", "author_email": "cli2@example.com"}\n')

    imported_users = keel_import(url, "users", str(users))
    imported_posts = keel_import(url, "posts", str(posts), "--org", "~cli_one")
    refused = keel_import(url, "posts", str(outsider), "--org", "~cli_one")
    nowhere = keel_import(url, "posts", str(posts), "--org", "~nobody")
    again = keel_import(url, "users", str(users), "--on-conflict", "skip")

    assert imported_users.returncode == 0, imported_users.stderr
    assert "inserted" in imported_users.stdout
    assert imported_posts.returncode == 0, imported_posts.stderr
    assert refused.returncode == 1
    assert "not a member of this organization" in refused.stdout
    assert nowhere.returncode == 1
    assert "No organization with the id or slug '~nobody'" in nowhere.stderr
    assert again.returncode == 0, again.stderr
    assert "│    2 │        0 │       0 │         0 │       2 │" in again.stdout
    assert await counts(url) == (2, 2)
    assert await tenants_of_posts(url) == ["cli_one"]
    assert await records(url) == [("committed", None), ("rejected", None)]
    assert "long enough" not in imported_users.stdout + imported_users.stderr


async def test_rejected_rows_exit_non_zero(make_database: MakeDatabase, tmp_path: Path) -> None:
    url = await make_database(migrated=True)
    bad = tmp_path / "users.csv"
    bad.write_text(USERS_CSV + "not-an-email,cli_three,long enough 3,Three\n")

    atomic = keel_import(url, "users", str(bad))
    assert atomic.returncode == 1
    assert "Nothing was imported" in atomic.stdout
    assert "not-an-email" not in atomic.stdout  # reasons never echo the value
    assert await counts(url) == (0, 0)

    partial = keel_import(url, "users", str(bad), "--no-atomic")
    assert partial.returncode == 1
    assert "Rejected rows" in partial.stdout
    assert await counts(url) == (2, 0)


async def test_bad_files_fail_cleanly(make_database: MakeDatabase, tmp_path: Path) -> None:
    url = await make_database(migrated=True)
    unknown = tmp_path / "users.xml"
    unknown.write_text("<users/>")
    broken = tmp_path / "users.csv"
    broken.write_text('email,username\n"unterminated,x\n')

    for path, message in ((unknown, "Can't tell the format"), (broken, "never closed")):
        result = keel_import(url, "users", str(path))
        assert result.returncode == 1
        assert message in result.stderr
        assert "Traceback" not in result.stderr
    assert await counts(url) == (0, 0)
