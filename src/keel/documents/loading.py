"""Bulk loads of documents: NDJSON streamed in, checked line by line, binary COPY in
batches, all or none, into the caller's organization."""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np
import orjson
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from keel.bulk.formats import physical_lines
from keel.core.errors import (
    DATA_EXCEPTION_CLASS,
    FOREIGN_KEY_VIOLATION,
    Conflict,
    ContentTooLarge,
    UnsupportedMediaType,
)
from keel.core.ids import uuid7
from keel.documents import repository
from keel.documents.embeddings import queue_embeddings
from keel.documents.repository import VectorLayout
from keel.documents.schemas import DocumentCreate, metadata_json
from keel.documents.service import InvalidDocuments, dimension_error
from keel.orgs.permissions import OrgActor, Permission

NDJSON_MEDIA_TYPES = ("application/x-ndjson", "application/jsonl")
BULK_BATCH_ROWS = 1_000  # rows per COPY: bounds the memory a large upload needs
MAX_LINE_BYTES = 2 * 1024 * 1024  # one document: 100k characters, metadata and a vector
MAX_REPORTED_ERRORS = 100


@dataclass(frozen=True, slots=True)
class BulkLoaded:
    ids: list[UUID]  # every new document, in line order
    pending: list[UUID]  # those whose content the job queue will embed


def check_ndjson(content_type: str | None) -> None:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in NDJSON_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"Send one JSON document per line as {' or '.join(NDJSON_MEDIA_TYPES)} "
            f"(got {media_type or 'no Content-Type'})."
        )


async def _capped(chunks: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > max_bytes:
            raise ContentTooLarge(
                f"The upload is larger than {max_bytes} bytes.", max_bytes=max_bytes
            )
        yield chunk


async def _numbered_lines(
    chunks: AsyncIterator[bytes],
) -> AsyncIterator[tuple[int, bytes | None]]:
    """(1-based number, line) for each line that isn't blank; CRLF and a BOM are fine."""
    number = 0
    async for line in physical_lines(chunks, MAX_LINE_BYTES):
        number += 1
        if line is not None:
            line = line.removesuffix(b"\r")
            if number == 1:
                line = line.removeprefix(codecs.BOM_UTF8)
            if not line.strip():
                continue
        yield number, line


def _line_error(
    line: int, message: str, type_: str, loc: Sequence[str | int] = ()
) -> dict[str, Any]:
    return {"line": line, "loc": list(loc), "msg": message, "type": type_}


def _parse_line(
    raw: bytes | None, number: int, actor: OrgActor, dimension: int
) -> tuple[tuple[Any, ...] | None, list[dict[str, Any]]]:
    """A COPY record for one NDJSON line, or what is wrong with the line."""
    if raw is None:
        return None, [_line_error(number, f"longer than {MAX_LINE_BYTES} bytes", "line_too_long")]
    try:
        value = orjson.loads(raw)  # refuses NaN and Infinity, unlike the json module
    except orjson.JSONDecodeError as exc:
        reason = "invalid UTF-8" if "utf-8" in str(exc).lower() else f"invalid JSON: {exc}"
        return None, [_line_error(number, reason, "json_invalid")]
    if not isinstance(value, dict):
        return None, [_line_error(number, "expected a JSON object", "model_type")]
    try:
        document = DocumentCreate.model_validate(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        return None, [_line_error(number, e["msg"], e["type"], e["loc"]) for e in errors]
    embedding = None  # to be embedded from the content, by the job queue
    if document.embedding is not None:
        if (message := dimension_error(document.embedding, dimension)) is not None:
            return None, [_line_error(number, message, "vector_dimension", ["embedding"])]
        embedding = np.asarray(document.embedding, dtype=np.float32)
    return (
        (
            actor.organization_id,
            uuid7(),
            actor.user_id,
            document.content,
            metadata_json(document.metadata),
            embedding,
        ),
        [],
    )


async def load_ndjson(
    session: AsyncSession,
    actor: OrgActor,
    layout: VectorLayout,
    chunks: AsyncIterator[bytes],
    *,
    max_rows: int,
    max_bytes: int,
) -> BulkLoaded:
    """Store one document per line in the actor's organization, all or none; the new ids
    in line order.

    COPY runs in batches while the body streams in. Once a line is bad nothing more is
    copied, the remaining lines are still checked (to report them all), and the error
    rolls the request's transaction back, batches already copied included. Lines without
    `embedding` are stored without one, and `embed_documents` jobs (queued in the same
    transaction) embed their content.
    """
    actor.require(Permission.DOCUMENTS_WRITE)
    ids: list[UUID] = []
    pending: list[UUID] = []
    batch: list[tuple[Any, ...]] = []
    errors: list[dict[str, Any]] = []
    invalid_lines = rows = 0
    async with repository.copy_connection(session) as driver:
        async for number, line in _numbered_lines(_capped(chunks, max_bytes)):
            rows += 1
            if rows > max_rows:
                raise ContentTooLarge(
                    f"More than {max_rows} documents in one upload.", max_rows=max_rows
                )
            record, problems = _parse_line(line, number, actor, layout.dimension)
            if record is None:
                invalid_lines += 1
                errors.extend(problems[: MAX_REPORTED_ERRORS - len(errors)])
            elif not invalid_lines:  # after a bad line, only check the rest
                ids.append(record[1])
                if record[-1] is None:
                    pending.append(record[1])
                batch.append(record)
                if len(batch) >= BULK_BATCH_ROWS:
                    await _copy(driver, batch)
                    batch.clear()
        if invalid_lines:
            raise InvalidDocuments(
                f"{invalid_lines} line(s) are not valid documents; nothing was stored. "
                "See `errors` (1-based line numbers).",
                errors=errors,
                invalid_lines=invalid_lines,
            )
        if not rows:
            raise InvalidDocuments("The upload holds no documents.", errors=[])
        if batch:
            await _copy(driver, batch)
    await queue_embeddings(session, actor.organization_id, pending)
    return BulkLoaded(ids=ids, pending=pending)


async def _copy(driver: asyncpg.Connection, batch: Sequence[tuple[Any, ...]]) -> None:
    try:
        await repository.copy_documents(driver, batch)
    except asyncpg.PostgresError as exc:
        sqlstate = str(getattr(exc, "sqlstate", ""))
        if sqlstate == FOREIGN_KEY_VIOLATION:
            raise Conflict(
                "The account or organization these documents belong to no longer exists."
            ) from exc
        if sqlstate.startswith(DATA_EXCEPTION_CLASS):
            raise InvalidDocuments(
                "A value in the upload cannot be stored; nothing was stored.", errors=[]
            ) from exc
        raise
