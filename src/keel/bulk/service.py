"""Imports: stream → validate → (hash) → COPY into staging → check → MERGE → report.

The HTTP endpoints and `keel import` both call `import_file`; only where the bytes come
from differs. Nothing lands unless the whole pipeline succeeds: an atomic import with any
rejected row raises `ImportRejected` and the caller's transaction rolls back.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from keel.bulk import json_table, repository, staging
from keel.bulk.formats import BadRecord, Columns, Format, Record, read
from keel.bulk.schemas import (
    ROW_MODELS,
    ImportReport,
    JsonTableImport,
    Kind,
    OnConflict,
    PostImportRow,
    Rejection,
    UserImportRow,
    text_cells,
)
from keel.config import Settings
from keel.core.db import driver_connection
from keel.core.errors import ContentTooLarge, KeelError
from keel.core.ids import uuid7
from keel.core.passwords import PasswordHasher

Finding = staging.Finding
JSON_TABLE = "json_table"  # the report's format for JSON_TABLE imports


class TooManyRows(ContentTooLarge):
    slug, title = "too-many-rows", "Too Many Rows"


class ImportRejected(KeelError):
    """An atomic import with rejected rows: nothing was written. Carries the report."""

    status_code, slug, title = 422, "import-rejected", "Import Rejected"


@dataclass(frozen=True, slots=True)
class ImportLimits:
    max_rows: int | None  # None: no cap (the CLI, run by an operator on a local file)
    max_line_bytes: int
    batch_rows: int
    hash_workers: int
    max_reported: int
    statement_timeout_ms: int
    max_json_depth: int  # of a CSV cell's JSON; JSON bodies are capped by the middleware

    @classmethod
    def from_settings(cls, settings: Settings, *, capped: bool = True) -> ImportLimits:
        return cls(
            max_rows=settings.import_max_rows if capped else None,
            max_line_bytes=settings.import_max_line_bytes,
            batch_rows=settings.import_batch_rows,
            hash_workers=settings.import_hash_workers or os.cpu_count() or 1,
            max_reported=settings.import_max_reported_rejections,
            statement_timeout_ms=settings.import_statement_timeout_ms,
            max_json_depth=settings.max_json_depth,
        )


@dataclass(frozen=True, slots=True)
class ImportOptions:
    on_conflict: OnConflict = OnConflict.ERROR
    atomic: bool = True


async def import_file(
    session: AsyncSession,
    kind: Kind,
    chunks: AsyncIterator[bytes],
    fmt: Format,
    options: ImportOptions,
    *,
    passwords: PasswordHasher,
    limits: ImportLimits,
) -> ImportReport:
    """Import a users or posts file. Raises `ImportRejected` for a failed atomic import."""
    conn = await _begin(session, limits)
    table = await staging.create(conn, kind)
    model = ROW_MODELS[kind]
    findings: list[Finding] = []
    rows_read = 0
    batch: list[Record] = []
    with ThreadPoolExecutor(max_workers=limits.hash_workers, thread_name_prefix="hash") as pool:
        context = text_cells(limits.max_json_depth) if fmt is Format.CSV else None
        loader = _BatchLoader(conn, table, model, context, passwords, pool)
        items = read(chunks, fmt, columns=_columns(model), max_line_bytes=limits.max_line_bytes)
        async for item in items:
            rows_read += 1
            if limits.max_rows is not None and rows_read > limits.max_rows:
                raise TooManyRows(f"The import is capped at {limits.max_rows} rows.")
            if isinstance(item, BadRecord):
                findings.append((item.position, None, item.reason))
                continue
            batch.append(item)
            if len(batch) >= limits.batch_rows:
                findings += await loader.load(batch)
                batch = []
        findings += await loader.load(batch)
    return await _check_and_merge(conn, table, fmt.value, rows_read, findings, options, limits)


def _columns(model: type[BaseModel]) -> Columns:
    fields = model.model_fields
    required = {name for name, field in fields.items() if field.is_required()}
    return Columns(allowed=frozenset(fields), required=frozenset(required))


async def _begin(session: AsyncSession, limits: ImportLimits) -> asyncpg.Connection:
    conn = await driver_connection(session)
    # Transaction-scoped: a long import gets its own budget, pooled connections keep theirs.
    await conn.execute(f"SET LOCAL statement_timeout = {int(limits.statement_timeout_ms)}")
    return conn


async def _check_and_merge(
    conn: asyncpg.Connection,
    table: staging.Staging,
    source: str,
    rows_read: int,
    findings: list[Finding],
    options: ImportOptions,
    limits: ImportLimits,
) -> ImportReport:
    check, merge = _STEPS[table.kind]
    findings += await check(conn, table, options.on_conflict)
    rejected = _first_per_row(findings)
    report = ImportReport(
        kind=table.kind,
        format=source,
        on_conflict=options.on_conflict,
        atomic=options.atomic,
        rows=rows_read,
        rejected_count=len(rejected),
        rejected=[_rejection(source, f) for f in rejected[: limits.max_reported]],
        rejected_truncated=len(rejected) > limits.max_reported,
        committed=not (options.atomic and rejected),
    )
    if not report.committed:
        raise ImportRejected(
            f"{len(rejected)} of {rows_read} rows were rejected; nothing was imported "
            "(send atomic=false to import the valid rows).",
            report=report.model_dump(mode="json"),
        )
    await staging.discard(conn, table, [line for line, _, _ in rejected])
    staged = await staging.count(conn, table)
    counts = await merge(conn, table, options.on_conflict)
    await staging.drop(conn, table)
    matched = staged - counts.inserted - counts.updated
    report.inserted, report.updated = counts.inserted, counts.updated
    if options.on_conflict is OnConflict.SKIP:
        report.skipped = matched
    else:
        report.unchanged = matched
    return report


_STEPS = {
    Kind.USERS: (repository.check_users, repository.merge_users),
    Kind.POSTS: (repository.check_posts, repository.merge_posts),
}


def _first_per_row(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per row (the first check that rejected it), in row order."""
    first: dict[int, Finding] = {}
    for finding in findings:
        first.setdefault(finding[0], finding)
    return [first[line] for line in sorted(first)]


def _rejection(source: str, finding: Finding) -> Rejection:
    position, field, reason = finding
    if source in {Format.JSON.value, JSON_TABLE}:
        return Rejection(index=position, field=field, reason=reason)
    return Rejection(line=position, field=field, reason=reason)


async def import_json_table(
    session: AsyncSession, spec: JsonTableImport, options: ImportOptions, *, limits: ImportLimits
) -> ImportReport:
    """Import posts shredded server-side from one JSON document by JSON_TABLE."""
    conn = await _begin(session, limits)
    await json_table.check_paths(conn, spec)
    table = await staging.create(conn, Kind.POSTS)
    findings = await json_table.stage(conn, table, spec)
    rows = await staging.count(conn, table)
    if rows == 0:
        raise json_table.InvalidJsonPath(
            f"rows: `{spec.rows}` matched no items in the document.", field="rows", path=spec.rows
        )
    if limits.max_rows is not None and rows > limits.max_rows:
        raise TooManyRows(f"The import is capped at {limits.max_rows} rows.")
    return await _check_and_merge(conn, table, JSON_TABLE, rows, findings, options, limits)


class _BatchLoader:
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
