"""Talking to Keel from outside: over HTTP (sign up, sign in) and through its CLI (seed)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.harness.base import API, REPO_ROOT, BenchError
from bench.harness.proc import child_env, pinned

SIGNUP, LOGIN = f"{API}/auth/signup", f"{API}/auth/login"
# `keel seed` documents it: every seeded user signs in with this password.
SEEDED_PASSWORD = "seeded-password"  # noqa: S105


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def expect(reply: httpx.Response, status: int, what: str) -> httpx.Response:
    if reply.status_code != status:
        raise BenchError(f"{what} answered {reply.status_code}: {reply.text[:300]}")
    return reply


def signup(client: httpx.Client, username: str, password: str, full_name: str = "Bench") -> None:
    """Create a user through the API (`POST /auth/signup`)."""
    body = {
        "email": f"{username}@example.com",
        "username": username,
        "password": password,
        "full_name": full_name,
    }
    expect(client.post(SIGNUP, json=body), 201, "signup")


def login(client: httpx.Client, username: str, password: str) -> str:
    """Sign in (`POST /auth/login`, form); the access token."""
    form = {"username": username, "password": password}
    reply = expect(client.post(LOGIN, data=form), 200, f"login as {username}")
    token: str = reply.json()["access_token"]
    return token


def get_ok(client: httpx.Client, path: str, headers: Mapping[str, str] | None = None) -> object:
    """GET path, expect 200, the decoded JSON body."""
    reply = expect(client.get(path, headers=dict(headers or {})), 200, f"GET {path}")
    body: object = reply.json()
    return body


def walk_cursor(
    client: httpx.Client, auth: Mapping[str, str], path: str, page: int, limit: int
) -> tuple[str, list[str], float]:
    """Follow next_cursor on the list at `path` from page 1 to `page` (> 1); the cursor that
    fetches `page`, that page's item ids, and the seconds the walk took."""
    t0 = time.perf_counter()
    cursor: str | None = None
    items: list[str] = []
    for n in range(1, page + 1):
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        reply = client.get(path, params=params, headers=dict(auth))
        if reply.status_code != 200:
            raise BenchError(f"page {n} of {path} answered {reply.status_code}: {reply.text[:300]}")
        body = reply.json()
        if n == page:
            items = [item["id"] for item in body["items"]]
            break
        cursor = body["next_cursor"]
        if not cursor:
            raise BenchError(f"{path}: no next_cursor after page {n}")
    if cursor is None:
        raise BenchError("page must be > 1")
    return cursor, items, time.perf_counter() - t0


def keel_cli(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    src: Path | None = None,
    cpu: int | None = None,
    timeout: float | None = None,
) -> str:
    """Run `python -m keel ARGV` (the served source tree's, with --ref); its output.

    `env` is the server's environment (DATABASE_URL, SECRET_KEY, ...), so the command sees
    the same database and settings as the servers.
    """
    proc = subprocess.run(
        pinned(cpu, [sys.executable, "-m", "keel", *argv]),
        env=child_env(src, {**env, "COLUMNS": "160"}),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr)[-3000:]
        raise BenchError(f"keel {' '.join(argv)} failed ({proc.returncode}):\n{output}")
    return proc.stdout


def seed(
    pg_url: str,
    *,
    users: int = 0,
    posts: int = 0,
    seed: int,
    env: Mapping[str, str],
    src: Path | None = None,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """`keel seed` (it migrates first); the summary it prints and the seconds it took.

    `extra`: more options (`--tenants=N`, `--posts-per-tenant=M`, `--published-ratio=R`).
    Every seeded user signs in with SEEDED_PASSWORD.
    """
    counts = [f"--users={users}"] if users else []
    counts += [f"--posts={posts}"] if posts else []
    args = ["seed", *counts, f"--seed={seed}", *extra]
    t0 = time.perf_counter()
    out = keel_cli(args, env={**env, "DATABASE_URL": pg_url}, src=src)
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    return {
        "command": "keel " + " ".join(args),
        "users": users,
        "posts": posts,
        "seed": seed,
        "seconds": round(time.perf_counter() - t0, 1),
        "summary": lines[-3:],
    }
