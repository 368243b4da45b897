"""Small helpers for import tests: an admin, file bodies in each format, row counts."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from keel.posts.models import Post
from keel.users.models import User
from tests.users.factory import signed_in

CONTENT_TYPES = {"json": "application/json", "ndjson": "application/x-ndjson", "csv": "text/csv"}


async def admin_headers(app: FastAPI, session: AsyncSession, client: AsyncClient) -> dict[str, str]:
    _, headers = await signed_in(app, session, client, admin=True)
    return headers


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
    **params: Any,
) -> Response:
    params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}
    return await client.post(
        f"/api/v1/admin/import/{kind}",
        content=body,
        headers={**headers, "Content-Type": CONTENT_TYPES.get(fmt, fmt)},
        params=params,
    )


async def count_users(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(User)) or 0)


async def count_posts(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Post)) or 0)
