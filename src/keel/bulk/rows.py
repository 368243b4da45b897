"""Import rows in Python: validated off the event loop, passwords hashed in parallel, COPYed.

A row the row model refuses becomes a finding `(position, field, reason)`; the rest go
to the staging table in batches.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import orjson
from pydantic import BaseModel, ValidationError

from keel.bulk import staging
from keel.bulk.formats import Columns, Record
from keel.bulk.schemas import PostImportRow, UserImportRow
from keel.core.ids import uuid7
from keel.core.passwords import PasswordHasher

Finding = staging.Finding


def columns_of(model: type[BaseModel]) -> Columns:
    """The columns a CSV header may and must name for rows of `model`."""
    fields = model.model_fields
    required = {name for name, field in fields.items() if field.is_required()}
    return Columns(allowed=frozenset(fields), required=frozenset(required))


class BatchLoader:
    """Validates a batch off the event loop, hashes its passwords in parallel, COPYs it."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        table: staging.Staging,
        model: type[BaseModel],
        context: dict[str, Any] | None,
        passwords: PasswordHasher,
        pool: ThreadPoolExecutor,
    ) -> None:
        self.conn, self.table, self.model, self.context = conn, table, model, context
        self.passwords, self.pool = passwords, pool

    async def load(self, batch: list[Record]) -> list[Finding]:
        if not batch:
            return []
        rows, plain, findings = await asyncio.to_thread(_validate, self.model, self.context, batch)
        if plain:
            loop = asyncio.get_running_loop()
            hashes = await asyncio.gather(
                *(loop.run_in_executor(self.pool, self.passwords.hash_sync, p) for _, p in plain)
            )
            for (i, _), hashed in zip(plain, hashes, strict=True):
                rows[i][USER_HASH_INDEX] = hashed
        await staging.copy_rows(self.conn, self.table, [tuple(row) for row in rows])
        return findings


USER_HASH_INDEX = 5  # position of hashed_password in the users staging row


def _validate(
    model: type[BaseModel], context: dict[str, Any] | None, batch: list[Record]
) -> tuple[list[list[Any]], list[tuple[int, str]], list[Finding]]:
    """Staging rows, (row index, plain password) pairs to hash, and rejections."""
    rows: list[list[Any]] = []
    plain: list[tuple[int, str]] = []
    findings: list[Finding] = []
    for record in batch:
        if problem := _unstorable_text(record.values):
            findings.append((record.position, None, problem))
            continue
        try:
            row = model.model_validate(record.values, context=context)
        except ValidationError as exc:
            error = exc.errors(include_input=False, include_url=False)[0]
            field = ".".join(str(part) for part in error["loc"]) or None
            findings.append((record.position, field, error["msg"].removeprefix("Value error, ")))
            continue
        if isinstance(row, UserImportRow):
            if row.password is not None:
                plain.append((len(rows), row.password))
            rows.append(_user_row(record.position, row))
        elif isinstance(row, PostImportRow):
            rows.append(_post_row(record.position, row))
    return rows, plain, findings


def _unstorable_text(values: dict[str, Any]) -> str | None:
    """Why PostgreSQL could not store this row (NUL, lone surrogates, huge integers), if so."""
    try:
        encoded = orjson.dumps(values)
    except orjson.JSONEncodeError as exc:  # e.g. "str is not valid UTF-8: surrogates not allowed"
        return f"a value that can't be stored ({exc})"
    if b"\\u0000" in encoded:
        return "text with a NUL character, which PostgreSQL can't store"
    return None


def _user_row(line: int, row: UserImportRow) -> list[Any]:
    return [
        line,
        uuid7(),
        row.email,
        row.username,
        row.full_name,
        row.hashed_password,  # filled by the hasher for plain passwords
        row.is_active,
        row.is_verified,
        row.is_superuser,
        orjson.dumps(row.metadata).decode(),
        row.created_at,
    ]


def _post_row(line: int, row: PostImportRow) -> list[Any]:
    return [
        line,
        row.id or uuid7(),
        row.title,
        row.content,
        row.is_published,
        row.author_id,
        row.author_username,
        row.author_email,
        row.created_at,
    ]
