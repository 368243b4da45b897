"""A bare FastAPI + asyncpg app: the baseline for Keel's read path (`bench.apps.bare:create_app`).

What a hand-written service does for the same reads, and nothing more: no middleware, no
auth, no ORM, no validation models; one pooled asyncpg connection, one prepared statement
per request (no reset query on release), the row turned into the same JSON Keel answers
with (orjson). It reads Keel's tables (`app.posts`, `app.users`), so it runs against a
database Keel migrated.

- `GET /orgs/{org}/posts/{id}`: one post by primary key `(tenant_id, id)` with its
  author's public columns, the columns of Keel's `PostPublic`;
- `GET /orgs/{org}/posts`: the organization's 20 newest published posts (`?limit=` up to
  100), same columns, in the shape of Keel's page (`items`, `limit`, `next_cursor` null);
- `GET /users/{id}`: one user row, the columns of Keel's `UserPrivate` (`/users/me`);
- `GET /health`: `{"status": "ok"}` without touching the database.

DATABASE_URL as Keel takes it; DB_READ_POOL_SIZE (default 10, as Keel's read pool) sets
the pool size.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from fastapi import FastAPI, HTTPException, Request, Response

POST_COLUMNS = """
    p.id, p.title, p.content, p.is_published, p.created_at, p.updated_at,
    u.id AS author_id, u.username AS author_username, u.full_name AS author_full_name,
    u.created_at AS author_created_at
"""
POST_BY_ID = f"""
    SELECT {POST_COLUMNS}
    FROM app.posts p JOIN app.users u ON u.id = p.author_id
    WHERE p.tenant_id = $1 AND p.id = $2
"""  # noqa: S608 - constants
NEWEST_POSTS = f"""
    SELECT {POST_COLUMNS}
    FROM app.posts p JOIN app.users u ON u.id = p.author_id
    WHERE p.tenant_id = $1 AND p.is_published
    ORDER BY p.created_at DESC, p.id DESC
    LIMIT $2
"""  # noqa: S608 - constants
USER_BY_ID = """
    SELECT id, username, full_name, created_at, email, is_active, is_superuser, is_verified,
           last_login, metadata, updated_at
    FROM app.users WHERE id = $1
"""
MAX_LIMIT = 100


def _dsn() -> str:
    url = os.environ.get("DATABASE_URL", "")
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url.removeprefix(prefix)
    if not url.startswith("postgresql://"):
        raise RuntimeError("bench.apps.bare needs DATABASE_URL=postgresql://...")
    return url


def json_reply(body: object) -> Response:
    # OPT_UTC_Z: datetimes end in "Z", as pydantic writes them in Keel's replies.
    # default=str: asyncpg's own UUID type, which orjson does not know.
    content = orjson.dumps(body, default=str, option=orjson.OPT_UTC_Z)
    return Response(content, media_type="application/json")


def post_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "title": row["title"],
        "content": row["content"],
        "is_published": row["is_published"],
        "author": {
            "id": row["author_id"],
            "username": row["author_username"],
            "full_name": row["author_full_name"],
            "created_at": row["author_created_at"],
        },
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _encode_json(value: object) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    # metadata is jsonb: decode it as Keel's response carries it (an object).
    await conn.set_type_codec(
        "jsonb", encoder=_encode_json, decoder=orjson.loads, schema="pg_catalog"
    )


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Nothing to reset: no request changes session state. asyncpg's default (advisory
    unlock, CLOSE ALL, UNLISTEN, RESET ALL) would add a round trip to every request."""


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    size = int(os.environ.get("DB_READ_POOL_SIZE", "10"))  # Keel's read pool, same default
    pool = await asyncpg.create_pool(
        _dsn(), min_size=size, max_size=size, init=_init_connection, reset=_no_reset
    )
    app.state.pool = pool
    try:
        yield
    finally:
        await pool.close()


def create_app() -> FastAPI:
    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    async def health() -> Response:
        return json_reply({"status": "ok"})

    @app.get("/orgs/{org_id}/posts/{post_id}")
    async def post_by_id(org_id: UUID, post_id: UUID, request: Request) -> Response:
        row = await request.app.state.pool.fetchrow(POST_BY_ID, org_id, post_id)
        if row is None:
            raise HTTPException(404)
        return json_reply(post_json(row))

    @app.get("/orgs/{org_id}/posts")
    async def newest_posts(org_id: UUID, request: Request, limit: int = 20) -> Response:
        limit = max(1, min(limit, MAX_LIMIT))
        rows = await request.app.state.pool.fetch(NEWEST_POSTS, org_id, limit)
        return json_reply(
            {"items": [post_json(r) for r in rows], "limit": limit, "next_cursor": None}
        )

    @app.get("/users/{user_id}")
    async def user_by_id(user_id: UUID, request: Request) -> Response:
        row = await request.app.state.pool.fetchrow(USER_BY_ID, user_id)
        if row is None:
            raise HTTPException(404)
        return json_reply(dict(row))

    return app
