"""The SQL of idempotency keys: one request per key at a time, look up, store, purge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

PURGE_BATCH = 100  # expired keys deleted by each keyed request, at most


@dataclass(frozen=True, slots=True)
class StoredResponse:
    fingerprint: bytes
    status_code: int
    headers: dict[str, str]
    body: bytes


async def try_lock(session: AsyncSession, user_id: UUID, key: str) -> bool:
    """Take the key for this transaction; False if a request with it is still running."""
    locked = await session.scalar(
        text("SELECT pg_try_advisory_xact_lock(hashtextextended(:name, 0))"),
        {"name": f"idempotency:{user_id}:{key}"},
    )
    return bool(locked)


async def find(session: AsyncSession, user_id: UUID, key: str) -> StoredResponse | None:
    """The answer stored under this key, unless it has expired."""
    row = (
        await session.execute(
            text(
                "SELECT fingerprint, status_code, headers, body FROM app.idempotency_keys "
                "WHERE user_id = :user_id AND key = :key AND expires_at > now()"
            ).columns(headers=JSONB),
            {"user_id": user_id, "key": key},
        )
    ).first()
    if row is None:
        return None
    return StoredResponse(bytes(row.fingerprint), row.status_code, dict(row.headers), row.body)


async def store(
    session: AsyncSession,
    user_id: UUID,
    key: str,
    response: StoredResponse,
    ttl_seconds: int,
) -> None:
    """Keep the answer (replacing an expired one under the same key) and purge a few old ones."""
    params: dict[str, Any] = {
        "user_id": user_id,
        "key": key,
        "fingerprint": response.fingerprint,
        "status_code": response.status_code,
        "headers": orjson.dumps(response.headers).decode(),
        "body": response.body,
        "ttl": ttl_seconds,
    }
    await session.execute(
        text(
            "INSERT INTO app.idempotency_keys "
            "(user_id, key, fingerprint, status_code, headers, body, expires_at) "
            "VALUES (:user_id, :key, :fingerprint, :status_code, CAST(:headers AS jsonb), :body, "
            "now() + make_interval(secs => :ttl)) "
            "ON CONFLICT (user_id, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
            "status_code = EXCLUDED.status_code, headers = EXCLUDED.headers, "
            "body = EXCLUDED.body, created_at = now(), expires_at = EXCLUDED.expires_at"
        ),
        params,
    )
    await purge_expired(session, PURGE_BATCH)


async def purge_expired(session: AsyncSession, limit: int) -> int:
    """Delete up to `limit` expired keys (skipping rows another transaction holds)."""
    result = await session.execute(
        text(
            "DELETE FROM app.idempotency_keys WHERE (user_id, key) IN ("
            "SELECT user_id, key FROM app.idempotency_keys WHERE expires_at <= now() "
            "LIMIT :limit FOR UPDATE SKIP LOCKED)"
        ),
        {"limit": limit},
    )
    return int(getattr(result, "rowcount", 0) or 0)
