"""Small helpers for import tests: callers, file bodies in each format, where they go, counts."""

from __future__ import annotations

import csv
import io
from typing import Any
from uuid import UUID

import orjson
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from keel.posts.models import Post
from keel.users.models import User
from tests.orgs.factory import add_member
from tests.users.factory import make_user, signed_in

CONTENT_TYPES = {"json": "application/json", "ndjson": "application/x-ndjson", "csv": "text/csv"}


async def admin_headers(app: FastAPI, session: AsyncSession, client: AsyncClient) -> dict[str, str]:
    _, headers = await signed_in(app, session, client, admin=True)
    return headers


async def member_of(
    app: FastAPI, session: AsyncSession, org_id: UUID, role: str = "member", **fields: Any
) -> User:
    """A new account that is a `role` of the organization (besides their personal one)."""
    user = await make_user(app, session, **fields)
    await add_member(session, org_id, user.id, role)
    return user


def import_url(kind: str, org: UUID | None = None) -> str:
    """Users: the platform admins' route. Posts and JSON_TABLE: the organization's."""
    if kind == "users":
        return "/api/v1/admin/import/users"
    assert org is not None, "posts land in an organization"
    return f"/api/v1/orgs/{org}/imports/{kind}"


def encode(rows: list[dict[str, Any]], fmt: str) -> bytes:
    """`rows` as a JSON array, NDJSON or CSV (header from the first row's keys)."""
    if fmt == "json":
        return orjson.dumps(rows)
    if fmt == "ndjson":
        return b"".join(orjson.dumps(row) + b"\n" for row in rows)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return out.getvalue().encode()


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return value


async def send(
    client: AsyncClient,
    kind: str,
    body: bytes,
    fmt: str,
    headers: dict[str, str],
    *,
    org: UUID | None = None,
    **params: Any,
) -> Response:
    params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}
    return await client.post(
        import_url(kind, org),
        content=body,
        headers={**headers, "Content-Type": CONTENT_TYPES.get(fmt, fmt)},
        params=params,
    )


async def count_users(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(User)) or 0)


async def count_posts(session: AsyncSession, tenant_id: UUID | None = None) -> int:
    statement = select(func.count()).select_from(Post)
    if tenant_id is not None:
        statement = statement.where(col(Post.tenant_id) == tenant_id)
    return int(await session.scalar(statement) or 0)
