"""MAX_JSON_DEPTH: the gauge on raw bytes, and every kind of JSON body through the app."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.json_depth import JsonDepthGauge
from tests.bulk.helpers import admin_headers
from tests.documents.factory import as_document, dimension, ndjson, unit_vectors
from tests.users.factory import signed_in

MAX_DEPTH = 32  # the default


def nested(depth: int) -> Any:
    """A value `depth` levels deep, objects and arrays alternating."""
    value: Any = "leaf"
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


def fed(gauge: JsonDepthGauge, data: bytes, sizes: list[int]) -> bool:
    too_deep, start = False, 0
    for size in sizes:
        too_deep |= gauge.too_deep(data[start : start + size])
        start += size
    return too_deep | gauge.too_deep(data[start:])


@pytest.mark.parametrize("depth", [1, 31, 32, 33, 255])
def test_the_gauge_measures_depth_in_any_chunking(depth: int) -> None:
    data = json.dumps(nested(depth)).encode()
    for sizes in ([len(data)], [1] * len(data), [3, 7] * len(data)):
        assert fed(JsonDepthGauge(MAX_DEPTH), data, sizes) is (depth > MAX_DEPTH)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": "' + b"[" * 100 + b'"}',  # brackets inside a string
        b'{"a": "\\"' + b"[" * 100 + b'\\\\"}',  # after an escaped quote, before an escaped \\
        b'["\\\\", "\\u005b", {"\\"{": "]]]"}]',
        b'{"a": 1}\n' * 100,  # NDJSON: every line closes what it opens
        b"]" * 20 + b"[[[]]]",  # malformed: for the parser to refuse, not too deep
    ],
)
def test_the_gauge_ignores_strings_escapes_and_separate_lines(data: bytes) -> None:
    assert not fed(JsonDepthGauge(8), data, [1] * len(data))
    assert not JsonDepthGauge(8).too_deep(data)


def test_the_gauge_agrees_with_a_parser_on_random_documents() -> None:
    rng = random.Random(7)  # noqa: S311 - reproducible test data, not secrets
    alphabet = ['"', "\\", "[", "]", "{", "}", "a", "é", "\n"]

    def value(level: int) -> Any:
        if level > 12 or rng.random() < 0.3:
            return "".join(rng.choices(alphabet, k=rng.randint(0, 5)))
        if rng.random() < 0.5:
            return [value(level + 1) for _ in range(rng.randint(0, 3))]
        return {"".join(rng.choices(alphabet, k=2)): value(level + 1) for _ in range(2)}

    for _ in range(2000):
        document = value(0)
        data = json.dumps(document, ensure_ascii=rng.random() < 0.5).encode()
        limit = rng.randint(1, 10)
        sizes = [rng.randint(1, 9) for _ in range(len(data))]
        assert fed(JsonDepthGauge(limit), data, sizes) is (depth_of(document) > limit), data


def assert_too_deep(response: Any) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert f"deeper than {MAX_DEPTH} levels" in response.json()["detail"]


async def test_deep_user_metadata_is_a_422_and_changes_nothing(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    for depth in (MAX_DEPTH, 255, 2000):  # the body adds one level around the metadata
        response = await client.patch(
            "/api/v1/users/me", headers=auth, json={"metadata": nested(depth)}
        )
        assert_too_deep(response)
    stored = await db_session.scalar(
        text("SELECT metadata FROM app.users WHERE id = :id"), {"id": user.id}
    )
    assert stored == {}
    fits = await client.patch(
        "/api/v1/users/me", headers=auth, json={"metadata": {"k": nested(MAX_DEPTH - 2)}}
    )
    assert fits.status_code == 200, fits.text


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_deep_json_is_refused_on_every_kind_of_body(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin = await admin_headers(app, db_session, client)
    vector = unit_vectors(1, await dimension(db_session))[0]
    deep_document = as_document(vector, metadata={"k": nested(255)})
    before = await db_session.scalar(text("SELECT count(*) FROM app.documents"))

    # A JSON body FastAPI parses, a streamed NDJSON upload, and the admin JSON_TABLE import.
    assert_too_deep(await client.post("/api/v1/documents", headers=admin, json=deep_document))
    lines = ndjson([as_document(vector)]) + json.dumps(deep_document).encode() + b"\n"
    bulk_headers = {**admin, "Content-Type": "application/x-ndjson"}
    bulk = await client.post(
        "/api/v1/documents/bulk", headers=bulk_headers, content=_chunks(lines, 1000)
    )
    assert_too_deep(bulk)
    spec = {
        "document": nested(255),
        "rows": "$[*]",
        "columns": {"title": "$.t", "author_id": "$.a"},
    }
    assert_too_deep(await client.post("/api/v1/admin/import/json", headers=admin, json=spec))
    problem_json = {**admin, "Content-Type": "application/merge-patch+json"}
    deep_patch = json.dumps({"metadata": nested(255)})
    assert_too_deep(
        await client.patch("/api/v1/users/me", headers=problem_json, content=deep_patch)
    )
    assert await db_session.scalar(text("SELECT count(*) FROM app.documents")) == before
