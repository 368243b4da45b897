"""Streaming readers for import files: a JSON array, NDJSON or CSV, never buffered whole.

Each reader turns an async stream of byte chunks into `Record`s (a 1-based position and
the raw values) and `BadRecord`s (a row that could not even be read). A problem with the
file as a whole (broken CSV quoting, a bad header, malformed JSON) raises `MalformedFile`.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import ijson
import orjson

from keel.core.errors import KeelError, UnsupportedMediaType


class Format(StrEnum):
    JSON = "json"  # one array of objects; rows are numbered by 1-based index
    NDJSON = "ndjson"  # one object per line; rows are numbered by line
    CSV = "csv"  # a header naming the columns, then one record per row; numbered by line


MEDIA_TYPES = {
    "application/json": Format.JSON,
    "application/x-ndjson": Format.NDJSON,
    "application/jsonl": Format.NDJSON,
    "text/csv": Format.CSV,
}
EXTENSIONS = {".json": Format.JSON, ".ndjson": Format.NDJSON, ".jsonl": Format.NDJSON}
EXTENSIONS[".csv"] = Format.CSV


class MalformedFile(KeelError):
    status_code, slug, title = 422, "malformed-import", "Malformed Import File"


@dataclass(frozen=True, slots=True)
class Record:
    position: int
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BadRecord:
    position: int
    reason: str


Item = Record | BadRecord


def format_for_media_type(content_type: str | None) -> Format:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        return MEDIA_TYPES[media_type]
    except KeyError:
        raise UnsupportedMediaType(
            f"Send the rows as one of: {', '.join(MEDIA_TYPES)} (got {media_type or 'none'})."
        ) from None


@dataclass(frozen=True, slots=True)
class Columns:
    """The columns a CSV header may name, and those it must."""

    allowed: frozenset[str]
    required: frozenset[str]


def read(
    chunks: AsyncIterator[bytes], fmt: Format, *, columns: Columns, max_line_bytes: int
) -> AsyncIterator[Item]:
    """The records of a file in `fmt`."""
    if fmt is Format.JSON:
        return _json_array(chunks)
    if fmt is Format.NDJSON:
        return _ndjson(chunks, max_line_bytes)
    return _csv(chunks, columns, max_line_bytes)


async def physical_lines(
    chunks: AsyncIterator[bytes], max_line_bytes: int
) -> AsyncIterator[bytes | None]:
    """Physical lines without their ending; None stands for a line over the cap (dropped)."""
    pending = bytearray()
    oversized = False
    async for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            if oversized or len(pending) + end - start > max_line_bytes:
                yield None
            else:
                pending += chunk[start:end]
                yield bytes(pending)
            pending.clear()
            oversized = False
            start = end + 1
        if not oversized:
            pending += chunk[start:]
            if len(pending) > max_line_bytes:
                oversized = True
                pending.clear()
    if oversized:
        yield None
    elif pending:
        yield bytes(pending)


async def _ndjson(chunks: AsyncIterator[bytes], max_line_bytes: int) -> AsyncIterator[Item]:
    line_number = 0
    seen_content = False
    async for line in physical_lines(chunks, max_line_bytes):
        line_number += 1
        if line is None:
            seen_content = True
            yield BadRecord(line_number, f"the line is longer than {max_line_bytes} bytes")
            continue
        line = line.removesuffix(b"\r")
        if line_number == 1:
            line = line.removeprefix(codecs.BOM_UTF8)
        if not line.strip():
            continue
        seen_content = True
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            reason = "invalid UTF-8" if "utf-8" in str(exc).lower() else "invalid JSON"
            yield BadRecord(line_number, reason)
            continue
        if isinstance(value, dict):
            yield Record(line_number, value)
        else:
            yield BadRecord(line_number, "expected a JSON object")
    if not seen_content:
        raise MalformedFile("The file is empty.")


class _ChunkReader:
    """The `read(n)` coroutine ijson wants, over an async stream of chunks."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._first = True

    async def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""  # ijson probes the type of the stream with read(0)
        async for chunk in self._chunks:
            if self._first:
                chunk = chunk.lstrip()
                if not chunk:
                    continue
                self._first = False
                if chunk.startswith(codecs.BOM_UTF8):
                    chunk = chunk.removeprefix(codecs.BOM_UTF8).lstrip()
                if not chunk.startswith(b"["):
                    raise MalformedFile("Expected a JSON array of objects.")
            if chunk:
                return chunk
        if self._first:
            raise MalformedFile("The file is empty.")
        return b""


async def _json_array(chunks: AsyncIterator[bytes]) -> AsyncIterator[Item]:
    index = 0
    try:
        async for value in ijson.items_async(_ChunkReader(chunks), "item", use_float=True):
            index += 1
            if isinstance(value, dict):
                yield Record(index, value)
            else:
                yield BadRecord(index, "expected a JSON object")
    except ijson.JSONError as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else "truncated input"
        raise MalformedFile(f"Malformed JSON after item {index}: {reason}.") from None


async def _csv(
    chunks: AsyncIterator[bytes], columns: Columns, max_line_bytes: int
) -> AsyncIterator[Item]:
    header: list[str] | None = None
    async for start_line, text in _csv_records(chunks, max_line_bytes):
        try:
            fields = next(csv.reader([text], strict=True))
        except csv.Error as exc:
            raise MalformedFile(f"Line {start_line}: malformed CSV ({exc}).") from None
        if header is None:
            header = _header(fields, columns)
            continue
        if fields in ([], [""]):
            continue  # a blank line
        if len(fields) != len(header):
            yield BadRecord(start_line, f"expected {len(header)} fields, found {len(fields)}")
            continue
        yield Record(start_line, {k: v for k, v in zip(header, fields, strict=True) if v != ""})
    if header is None:
        raise MalformedFile("The file is empty: a CSV import needs a header line.")


def _header(fields: list[str], columns: Columns) -> list[str]:
    names = [name.strip() for name in fields]
    if names == [""]:
        raise MalformedFile("Line 1: the header is empty; it must name the columns.")
    unknown = sorted(set(names) - columns.allowed)
    if unknown:
        raise MalformedFile(
            f"Line 1: unknown columns {', '.join(unknown)}; "
            f"the columns are {', '.join(sorted(columns.allowed))}."
        )
    missing = sorted(columns.required - set(names))
    if missing:
        raise MalformedFile(f"Line 1: missing required columns {', '.join(missing)}.")
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise MalformedFile(f"Line 1: columns named twice: {', '.join(duplicated)}.")
    return names


async def _csv_records(
    chunks: AsyncIterator[bytes], max_line_bytes: int
) -> AsyncIterator[tuple[int, str]]:
    """Logical CSV records (a quoted field may span lines) with their first line's number.

    Quotes inside a field are doubled, so an odd count of `"` so far means the record
    continues on the next line.
    """
    decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
    line_number = 0
    record: list[str] = []
    record_start = 1
    quotes = 0
    size = 0
    async for raw in physical_lines(chunks, max_line_bytes):
        line_number += 1
        if raw is None:
            raise MalformedFile(f"Line {line_number} is longer than {max_line_bytes} bytes.")
        try:
            line = decoder.decode(raw + b"\n")
        except UnicodeDecodeError:
            raise MalformedFile(f"Line {line_number} is not valid UTF-8.") from None
        if not record:
            record_start = line_number
        record.append(line)
        quotes += line.count('"')
        size += len(raw)
        if size > max_line_bytes:
            raise MalformedFile(
                f"The record starting on line {record_start} is longer than {max_line_bytes} bytes."
            )
        if quotes % 2 == 0:
            yield record_start, "".join(record)
            record, quotes, size = [], 0, 0
    if record:
        raise MalformedFile(f"Line {record_start}: a quoted field is never closed.")
