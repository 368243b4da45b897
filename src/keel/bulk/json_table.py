"""Shred a JSON document into the posts staging table with JSON_TABLE (PostgreSQL 17).

JSON_TABLE only takes string constants as paths, so each path is first parsed by the
server (`$1::jsonpath`, a bound parameter); only a path the server accepts is then written
into the statement, as a quoted literal under `standard_conforming_strings`.
"""

from __future__ import annotations

import re

import asyncpg
import orjson

from keel.bulk.schemas import JsonTableImport
from keel.bulk.staging import Finding, Staging, find
from keel.core.errors import KeelError
from keel.posts.models import TITLE_MAX
from keel.posts.schemas import CONTENT_MAX

# SQL type of each post column a path may fill, and how a mismatch is described.
COLUMN_TYPES: dict[str, tuple[str, str]] = {
    "id": ("uuid", "a UUID"),
    "title": ("text", "a string"),
    "content": ("text", "a string"),
    "is_published": ("boolean", "a boolean"),
    "author_id": ("uuid", "a UUID"),
    "author_username": ("text", "a string"),
    "author_email": ("text", "a string"),
    "created_at": ("timestamptz", "an ISO 8601 date-time"),
}

# A UUIDv7 from the clock and gen_random_uuid() (uuidv7() is PostgreSQL 18 only).
_UUID7 = (
    "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing "
    "substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) "
    "FROM 3) FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid"
)


class InvalidJsonPath(KeelError):
    status_code, slug, title = 422, "invalid-json-path", "Invalid JSON Path"


# In a path as PostgreSQL prints it, a variable is `$"name"` and every string literal is
# quoted with its quotes escaped: match literals too, so a `$"` inside one isn't taken.
_LITERAL_OR_VARIABLE = re.compile(r'(\$?)"((?:[^"\\]|\\.)*)"')


async def check_paths(conn: asyncpg.Connection, spec: JsonTableImport) -> None:
    for field, path in [("rows", spec.rows), *spec.columns.items()]:
        try:
            canonical = await conn.fetchval("SELECT $1::jsonpath::text", path)
        except asyncpg.PostgresError as exc:
            raise InvalidJsonPath(
                f"{field}: `{path}` is not a valid SQL/JSON path ({exc.args[0]}).",
                field=field,
                path=path,
            ) from None
        if variables := _variables(canonical):
            # JSON_TABLE would fail on the first row that reaches one (42704, a 500).
            raise InvalidJsonPath(
                f"{field}: `{path}` uses the variable ${variables[0]}; imports define no "
                "path variables.",
                field=field,
                path=path,
            )


def _variables(canonical_path: str) -> list[str]:
    return [name for dollar, name in _LITERAL_OR_VARIABLE.findall(canonical_path) if dollar == "$"]


def _literal(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


async def stage(conn: asyncpg.Connection, table: Staging, spec: JsonTableImport) -> list[Finding]:
    """Fill the staging table from the document; return the rows whose values mismatched."""
    await conn.execute("SET LOCAL standard_conforming_strings = on")
    columns = ["line FOR ORDINALITY"]
    mismatch = []
    for name, path in spec.columns.items():
        sql_type, _ = COLUMN_TYPES[name]
        columns.append(f"{name} {sql_type} PATH {_literal(path)} NULL ON EMPTY NULL ON ERROR")
        columns.append(f"{name}__json jsonb PATH {_literal(path)} NULL ON EMPTY NULL ON ERROR")
        mismatch.append(
            f"WHEN {name} IS NULL AND {name}__json IS NOT NULL "
            f"AND {name}__json <> 'null'::jsonb THEN '{name}'"
        )
    targets = [name for name in spec.columns if name != "id"]
    sql = f"""
        WITH shredded AS MATERIALIZED (
            SELECT * FROM JSON_TABLE($1::jsonb, {_literal(spec.rows)}
                                     COLUMNS ({", ".join(columns)})) AS jt
        ),
        staged AS (
            INSERT INTO {table.table} (line, id, {", ".join(targets)})
            SELECT line, {"coalesce(id, " + _UUID7 + ")" if "id" in spec.columns else _UUID7},
                   {", ".join(targets)}
            FROM shredded
        )
        SELECT line, CASE {" ".join(mismatch)} END AS field FROM shredded
    """
    findings = []
    for line, field in await conn.fetch(sql, _document_text(spec)):
        if field is not None:
            _, expected = COLUMN_TYPES[field]
            path = dict(spec.columns)[field]
            findings.append((line, field, f"expected {expected} at {path}"))
    return findings + await _invalid_values(conn, table)


def _document_text(spec: JsonTableImport) -> str:
    return orjson.dumps(spec.document).decode()


async def _invalid_values(conn: asyncpg.Connection, table: Staging) -> list[Finding]:
    """The rules the file formats get from the row model, in SQL."""
    t = table.table
    return await find(
        conn,
        f"SELECT line, 'title', CASE WHEN title IS NULL THEN 'missing' "
        f"WHEN title !~ '[^[:space:]]' THEN 'blank' "
        f"ELSE 'longer than {TITLE_MAX} characters' END FROM {t} "
        f"WHERE title IS NULL OR title !~ '[^[:space:]]' OR char_length(title) > {TITLE_MAX} "
        f"UNION ALL SELECT line, 'content', 'longer than {CONTENT_MAX} characters' FROM {t} "
        f"WHERE char_length(content) > {CONTENT_MAX} "
        f"UNION ALL SELECT line, 'author', 'missing' FROM {t} "
        "WHERE author_id IS NULL AND author_username IS NULL AND author_email IS NULL",
    )
