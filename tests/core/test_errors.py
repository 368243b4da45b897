"""Every error comes out as RFC 9457 problem+json with the request id."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.db import SessionDep
from keel.core.errors import Conflict, NotFound
from tests.users.factory import signed_in

PROBLEM = "application/problem+json"


def _assert_problem(response_json: dict[str, object], status: int, request_id: str) -> None:
    assert response_json["status"] == status
    assert isinstance(response_json["title"], str)
    assert response_json["title"]
    assert response_json["type"]
    assert response_json["request_id"] == request_id


async def test_unknown_path_is_a_problem_404(client: AsyncClient) -> None:
    response = await client.get("/no/such/path")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    _assert_problem(response.json(), 404, response.headers["x-request-id"])
    assert response.json()["instance"] == "/no/such/path"


async def test_wrong_method_is_a_problem_405(client: AsyncClient) -> None:
    response = await client.post("/health")
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["allow"] == "GET"
    _assert_problem(response.json(), 405, response.headers["x-request-id"])


@pytest.fixture
async def error_client(app: FastAPI, client: AsyncClient) -> AsyncIterator[AsyncClient]:
    """The session app plus routes that raise each kind of error."""
    extra = FastAPI()

    @extra.get("/typed/{number}")
    async def typed(number: int, limit: int = 10) -> dict[str, int]:
        return {"number": number, "limit": limit}

    @extra.get("/missing")
    async def missing() -> None:
        raise NotFound("Widget 7 does not exist.", widget_id=7)

    @extra.get("/conflict")
    async def conflict() -> None:
        raise Conflict("Already there.")

    @extra.post("/duplicate")
    async def duplicate(session: SessionDep) -> None:
        await session.execute(text("CREATE TEMP TABLE dup (k int PRIMARY KEY) ON COMMIT DROP"))
        await session.execute(text("INSERT INTO dup VALUES (1)"))
        await session.execute(text("INSERT INTO dup VALUES (1)"))

    app.router.routes.extend(extra.router.routes)
    try:
        yield client
    finally:
        for route in extra.router.routes:
            app.router.routes.remove(route)


async def test_validation_error_lists_fields_without_inputs(error_client: AsyncClient) -> None:
    response = await error_client.get("/typed/abc", params={"limit": "hunter2"})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    _assert_problem(body, 422, response.headers["x-request-id"])
    assert {tuple(err["loc"]) for err in body["errors"]} == {("path", "number"), ("query", "limit")}
    assert "hunter2" not in response.text


async def test_domain_error_keeps_status_type_and_extensions(error_client: AsyncClient) -> None:
    response = await error_client.get("/missing")
    assert response.status_code == 404
    body = response.json()
    assert body["type"] == "urn:keel:problem:not-found"
    assert body["detail"] == "Widget 7 does not exist."
    assert body["widget_id"] == 7
    conflict = await error_client.get("/conflict")
    assert conflict.status_code == 409
    assert conflict.json()["type"] == "urn:keel:problem:conflict"


async def test_unique_violation_maps_to_409(error_client: AsyncClient) -> None:
    response = await error_client.post("/duplicate")
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["detail"] == "A record with the same unique value already exists."
    assert body["constraint"] == "dup_pkey"


async def test_problem_without_request_context_still_renders() -> None:
    # A bare app (no middleware) still renders problems; request_id is simply null.
    bare = FastAPI()
    from keel.core.errors import install_error_handlers

    install_error_handlers(bare)
    async with AsyncClient(transport=ASGITransport(app=bare), base_url="http://t") as http:
        response = await http.get("/nothing")
    assert response.status_code == 404
    assert response.json()["request_id"] is None


async def test_405_allow_lists_every_method_of_the_resource(client: AsyncClient) -> None:
    response = await client.put("/api/v1/users")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"


async def test_a_value_postgres_cannot_store_is_422(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    # JSONB can't hold \u0000: the database refuses the value, and so do we, with a 422.
    _, auth = await signed_in(app, db_session, client)
    response = await client.patch(
        "/api/v1/users/me", headers=auth, json={"metadata": {"note": "a\u0000b"}}
    )
    assert response.status_code == 422
    assert response.json()["type"] == "urn:keel:problem:unprocessable-value"
    assert (await client.get("/api/v1/users/me", headers=auth)).json()["metadata"] == {}
