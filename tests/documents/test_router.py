"""Documents API: CRUD in an organization, refused vectors and metadata, NDJSON bulk loads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from keel.documents import repository
from tests.conftest import MakeDatabase, make_settings
from tests.documents.factory import (
    as_document,
    as_list,
    dimension,
    docs_url,
    make_document,
    ndjson,
    separate_app,
    unit_vectors,
)
from tests.users.factory import bearer, make_user, sign_in, signed_in

BULK_TEMPLATE = "/api/v1/orgs/{org_id}/documents/bulk"
NDJSON = {"Content-Type": "application/x-ndjson"}
VALIDATION_FAILED = "urn:keel:problem:validation-failed"


async def test_create_read_delete(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    docs = docs_url(user.id)
    vector = unit_vectors(1, await dimension(db_session))[0]
    metadata = {"lang": "en", "tags": ["a", "b"], "n": 1.5, "nested": {"ok": True}}
    created = await client.post(
        docs, headers=auth, json=as_document(vector, content="Hello", metadata=metadata)
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["owner_id"] == str(user.id)
    assert (body["content"], body["metadata"]) == ("Hello", metadata)
    assert "embedding" not in body
    url = f"{docs}/{body['id']}"
    read = await client.get(url, headers=auth)
    assert read.status_code == 200
    assert read.json() == body
    assert (await client.delete(url, headers=auth)).status_code == 204
    assert (await client.get(url, headers=auth)).status_code == 404
    assert (await client.delete(url, headers=auth)).status_code == 404
    assert (await client.post(docs, json=as_document(vector))).status_code == 401


@pytest.mark.parametrize(
    "forged",
    [{"owner_id": str(uuid4())}, {"id": str(uuid4())}, {"tenant_id": str(uuid4())}],
)
async def test_owner_id_and_tenant_cannot_be_chosen(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, forged: dict[str, str]
) -> None:
    user, auth = await signed_in(app, db_session, client)
    vector = unit_vectors(1, await dimension(db_session))[0]
    before = await repository.count_all_tenants(db_session)
    body = {**as_document(vector), **forged}
    response = await client.post(docs_url(user.id), headers=auth, json=body)
    assert response.status_code == 422
    assert await repository.count_all_tenants(db_session) == before


async def test_platform_admins_reach_any_organizations_documents(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    owner = await make_user(app, db_session)
    vector = unit_vectors(1, await dimension(db_session))[0]
    document = await make_document(db_session, owner, vector)
    admin_user, admin = await signed_in(app, db_session, client, admin=True)
    owner_auth = bearer(await sign_in(client, owner.username))
    url = f"{docs_url(owner.id)}/{document.id}"

    assert (await client.get(url, headers=owner_auth)).status_code == 200
    assert (await client.get(url, headers=admin)).json()["owner_id"] == str(owner.id)
    search = {"vector": as_list(vector), "limit": 5}
    admin_hits = await client.post(f"{docs_url(owner.id)}/search", headers=admin, json=search)
    assert str(document.id) in [hit["id"] for hit in admin_hits.json()["items"]]
    # In their own organization, an admin sees only that organization's documents.
    own_hits = await client.post(f"{docs_url(admin_user.id)}/search", headers=admin, json=search)
    assert own_hits.json()["items"] == []
    own_path = f"{docs_url(admin_user.id)}/{document.id}"
    assert (await client.get(own_path, headers=admin)).status_code == 404

    assert (await client.delete(url, headers=admin)).status_code == 204
    assert (await client.get(url, headers=owner_auth)).status_code == 404


async def test_documents_go_with_their_owner(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    owner = await make_user(app, db_session)
    document = await make_document(
        db_session, owner, unit_vectors(1, await dimension(db_session))[0]
    )
    _, admin = await signed_in(app, db_session, client, admin=True)
    assert (await client.delete(f"/api/v1/users/{owner.id}", headers=admin)).status_code == 204
    url = f"{docs_url(owner.id)}/{document.id}"
    assert (await client.get(url, headers=admin)).status_code == 404
    assert await repository.count(db_session, owner.id) == 0


def _bad_vectors(size: int) -> dict[str, str]:
    """Raw JSON for vectors that must be refused, by name."""
    ones = ["0.5"] * size

    def vector(*last: str) -> str:
        return "[" + ",".join(ones[: size - len(last)] + list(last)) + "]"

    return {
        "too short": "[" + ",".join(ones[:-1]) + "]",
        "too long": "[" + ",".join([*ones, "0.5"]) + "]",
        "empty": "[]",
        "NaN": vector("NaN"),
        "Infinity": vector("Infinity"),
        "-Infinity": vector("-Infinity"),
        "overflows to infinity": vector("1e400"),
        "huge integer": vector("1" + "0" * 400),
        "beyond half precision": vector("70000"),
        "all zeros": "[" + ",".join(["0"] * size) + "]",
        "strings": "[" + ",".join(['"0.5"'] * size) + "]",
        "booleans": "[" + ",".join(["true"] * size) + "]",
        "nulls": vector("null"),
        "nested": "[" + vector() + "]",
        "nested rows": "[" + ",".join("[0.5]" for _ in range(size)) + "]",
        "a string": '"' + vector() + '"',
        "an object": '{"0": 0.5}',
        "null": "null",
    }


BAD_VECTOR_NAMES = list(_bad_vectors(4))


@pytest.mark.parametrize("name", BAD_VECTOR_NAMES)
async def test_bad_vectors_are_refused_and_never_stored(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, name: str
) -> None:
    user, auth = await signed_in(app, db_session, client)
    docs = docs_url(user.id)
    raw = _bad_vectors(await dimension(db_session))[name]
    before = await repository.count(db_session, user.id)
    json_headers = {**auth, "Content-Type": "application/json"}

    one = await client.post(docs, headers=json_headers, content=f'{{"embedding": {raw}}}')
    assert one.status_code == 422, one.text
    assert one.json()["type"] == VALIDATION_FAILED
    assert one.json()["errors"][0]["loc"][:2] == ["body", "embedding"]

    bulk = await client.post(
        f"{docs}/bulk", headers={**auth, **NDJSON}, content=f'{{"embedding": {raw}}}\n'.encode()
    )
    assert bulk.status_code == 422, bulk.text
    assert [error["line"] for error in bulk.json()["errors"]] == [1]

    search = await client.post(
        f"{docs}/search", headers=json_headers, content=f'{{"vector": {raw}}}'
    )
    assert search.status_code == 422, search.text
    assert await repository.count(db_session, user.id) == before


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"content": "x" * 100_001}, "content too long"),
        ({"content": "nul \u0000 here"}, "NUL in content"),
        ({"metadata": {"k": "v" * 20_000}}, "metadata too large"),
        ({"metadata": {"k": "nul \u0000"}}, "NUL in metadata"),
        ({"metadata": {"k\u0000": 1}}, "NUL in a metadata key"),
        ({"metadata": ["not", "an", "object"]}, "metadata not an object"),
    ],
)
async def test_content_and_metadata_are_checked(
    app: FastAPI,
    db_session: AsyncSession,
    client: AsyncClient,
    fields: dict[str, object],
    reason: str,
) -> None:
    user, auth = await signed_in(app, db_session, client)
    docs = docs_url(user.id)
    vector = unit_vectors(1, await dimension(db_session))[0]
    before = await repository.count(db_session, user.id)
    response = await client.post(docs, headers=auth, json={**as_document(vector), **fields})
    assert response.status_code == 422, reason
    assert await repository.count(db_session, user.id) == before


async def test_deep_metadata_lone_surrogates_and_nan_in_metadata_are_refused(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    docs = docs_url(user.id)
    size = await dimension(db_session)
    vector = "[" + ",".join(["0.5"] * size) + "]"
    headers = {**auth, "Content-Type": "application/json"}
    before = await repository.count(db_session, user.id)
    deep = '{"a":' * 40 + "1" + "}" * 40
    for body in (
        f'{{"embedding": {vector}, "metadata": {deep}}}',
        f'{{"embedding": {vector}, "content": "\\ud800"}}',
        f'{{"embedding": {vector}, "metadata": {{"k": "\\udfff"}}}}',
        f'{{"embedding": {vector}, "metadata": {{"k": [1, NaN]}}}}',
        f'{{"embedding": {vector}, "metadata": {{"k": -Infinity}}}}',
    ):
        response = await client.post(docs, headers=headers, content=body)
        assert response.status_code == 422, body[-60:]
    assert await repository.count(db_session, user.id) == before


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_bulk_load_stores_every_line(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    docs = docs_url(user.id)
    vectors = unit_vectors(5, await dimension(db_session))
    lines = ndjson(
        [as_document(v, content=f"doc {i}", metadata={"i": i}) for i, v in enumerate(vectors)]
    )
    # A BOM, CRLF endings, a blank line, and no newline after the last line.
    body = b"\xef\xbb\xbf" + lines.replace(b"\n", b"\r\n", 2).replace(b"\n", b"\n\n", 1)[:-1]
    before = await repository.count(db_session, user.id)
    response = await client.post(
        f"{docs}/bulk", headers={**auth, **NDJSON}, content=_chunks(body, 1000)
    )
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["inserted"] == 5
    assert await repository.count(db_session, user.id) == before + 5
    third = await client.get(f"{docs}/{result['ids'][2]}", headers=auth)
    assert third.json()["content"] == "doc 2"
    assert third.json()["metadata"] == {"i": 2}
    assert third.json()["owner_id"] == str(user.id)
    # The ORM still writes vectors on this connection: COPY's codec was taken off again.
    after = await client.post(docs, headers=auth, json=as_document(vectors[0]))
    assert after.status_code == 201, after.text


async def test_bulk_load_reports_every_bad_line_and_stores_nothing(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    docs = docs_url(user.id)
    size = await dimension(db_session)
    good = ndjson([as_document(v) for v in unit_vectors(3, size)]).splitlines()
    short = ndjson([{"embedding": [0.5] * (size - 1)}]).strip()
    lines = [good[0], b"{not json", good[1], short, b"[1, 2]", b'{"embedding": [NaN]}', good[2]]
    before = await repository.count(db_session, user.id)
    response = await client.post(
        f"{docs}/bulk", headers={**auth, **NDJSON}, content=b"\n".join(lines)
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == VALIDATION_FAILED
    assert problem["invalid_lines"] == 4
    assert [error["line"] for error in problem["errors"]] == [2, 4, 5, 6]
    assert problem["errors"][1]["msg"] == f"expected {size} dimensions, got {size - 1}"
    assert await repository.count(db_session, user.id) == before


async def test_bulk_load_refuses_other_media_types_empty_bodies_and_too_many_rows(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    docs = docs_url(user.id)
    line = ndjson([as_document(unit_vectors(1, await dimension(db_session))[0])])
    before = await repository.count(db_session, user.id)
    as_json = await client.post(
        f"{docs}/bulk", headers={**auth, "Content-Type": "application/json"}, content=line
    )
    assert as_json.status_code == 415
    assert (
        await client.post(f"{docs}/bulk", headers={**auth, **NDJSON}, content=b"\n\n")
    ).status_code == 422
    too_many = b"{}\n" * (app.state.settings.documents_bulk_max_rows + 1)
    response = await client.post(f"{docs}/bulk", headers={**auth, **NDJSON}, content=too_many)
    assert response.status_code == 413
    assert response.json()["max_rows"] == app.state.settings.documents_bulk_max_rows
    assert await repository.count(db_session, user.id) == before


async def test_bulk_load_is_atomic_across_copy_batches_and_caps_bytes(
    make_database: MakeDatabase, data_dir: Path
) -> None:
    url = await make_database(migrated=True)
    settings = make_settings(
        url,
        data_dir,
        max_body_bytes=64 * 1024 * 1024,
        documents_bulk_max_rows=1_600,
        documents_bulk_max_bytes=32 * 1024 * 1024,
    )
    async with separate_app(settings) as (application, http):
        async with application.state.db.sessionmaker() as session:
            user = await make_user(application, session)
            await session.commit()
            size = await dimension(session)
        auth = bearer(await sign_in(http, user.username))
        docs = docs_url(user.id)
        headers = {**auth, **NDJSON}
        lines = ndjson([as_document(v) for v in unit_vectors(1_500, size, seed=1)])

        # 1,500 lines: the first 1,000 are copied before the bad line arrives.
        bad = await http.post(
            f"{docs}/bulk", headers=headers, content=lines + b'{"embedding": []}\n'
        )
        assert bad.status_code == 422
        assert [error["line"] for error in bad.json()["errors"]] == [1_501]
        more = b"".join(lines.splitlines(keepends=True)[:200])
        too_many = await http.post(f"{docs}/bulk", headers=headers, content=lines + more)
        assert too_many.status_code == 413
        async with application.state.db.sessionmaker() as session:
            assert await repository.count(session, user.id) == 0

        loaded = await http.post(f"{docs}/bulk", headers=headers, content=_chunks(lines, 65_536))
        assert loaded.status_code == 201, loaded.text
        assert loaded.json()["inserted"] == 1_500
        async with application.state.db.sessionmaker() as session:
            assert await repository.count(session, user.id) == 1_500

    small = make_settings(url, data_dir, documents_bulk_max_bytes=2048)
    async with separate_app(small) as (_, http):
        auth = bearer(await sign_in(http, user.username))
        response = await http.post(f"{docs}/bulk", headers={**auth, **NDJSON}, content=lines[:4096])
        assert response.status_code == 413
        assert response.json()["max_bytes"] == 2048


async def test_bulk_body_is_documented_as_ndjson(client: AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    body = schema["paths"][BULK_TEMPLATE]["post"]["requestBody"]
    assert body["content"]["application/x-ndjson"]["schema"] == {
        "$ref": "#/components/schemas/DocumentCreate"
    }
    assert "DocumentCreate" in schema["components"]["schemas"]


async def test_bulk_loads_get_their_own_body_cap(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    vectors = unit_vectors(200, await dimension(db_session), seed=2)
    body = ndjson([as_document(v) for v in vectors])
    assert len(body) > app.state.settings.max_body_bytes  # the cap of ordinary requests
    response = await client.post(f"{docs_url(user.id)}/bulk", headers=auth | NDJSON, content=body)
    assert response.status_code == 201, response.text
    assert response.json()["inserted"] == 200
