"""`keel users create-superuser`, run as a real subprocess against the test database."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine


def _keel(
    database_url: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "ENVIRONMENT": "testing"}
    return subprocess.run(
        [sys.executable, "-m", "keel", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def _admin_flags(database_url: str, username: str) -> list[tuple[bool, bool]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            rows = await conn.execute(
                text("SELECT is_superuser, is_verified FROM app.users WHERE username = :u"),
                {"u": username},
            )
            flags = [(row[0], row[1]) for row in rows]
            await conn.execute(text("DELETE FROM app.users WHERE username = :u"), {"u": username})
            return flags
    finally:
        await engine.dispose()


async def test_create_superuser_with_flags(database_url: str) -> None:
    args = ("users", "create-superuser", "--email", "boss@example.com", "--username", "the_boss")
    result = _keel(database_url, *args, "--password", "a strong password")
    assert result.returncode == 0, result.stderr
    assert "created superuser the_boss" in result.stdout
    duplicate = _keel(database_url, *args, "--password", "a strong password")
    assert duplicate.returncode == 1
    assert "already exists" in duplicate.stderr
    assert await _admin_flags(database_url, "the_boss") == [(True, True)]


async def test_create_superuser_prompts_for_missing_values(database_url: str) -> None:
    answers = "prompted@example.com\nprompted_boss\nanother strong one\nanother strong one\n"
    result = _keel(database_url, "users", "create-superuser", stdin=answers)
    assert result.returncode == 0, result.stderr
    assert await _admin_flags(database_url, "prompted_boss") == [(True, True)]


async def test_create_superuser_rejects_a_weak_password(database_url: str) -> None:
    result = _keel(
        database_url,
        "users",
        "create-superuser",
        "--email",
        "weak@example.com",
        "--username",
        "weakling",
        "--password",
        "short",
    )
    assert result.returncode == 1
    assert "password" in result.stderr
    assert "Traceback" not in result.stderr
