"""Request context, security headers, GZip, CORS, trusted hosts and the body cap."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from structlog.testing import capture_logs

from keel.app import create_app
from keel.core.docs import DOCS_CSP
from keel.core.logging import add_request_id
from tests.conftest import make_settings


async def _client_for(application: FastAPI, base_url: str = "http://test") -> AsyncClient:
    return AsyncClient(transport=ASGITransport(app=application), base_url=base_url)


@pytest.fixture
def bare_settings(tmp_path: Path) -> dict[str, Any]:
    # Liveness, CORS and host checks need no database; the URL is never dialled.
    return {"database_url": "postgresql://nobody@127.0.0.1:1/none", "data_dir": tmp_path}


async def test_generates_request_id_when_missing(client: AsyncClient) -> None:
    response = await client.get("/health")
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


async def test_echoes_a_sane_incoming_request_id(client: AsyncClient) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "trace-1234.abc:9"})
    assert response.headers["x-request-id"] == "trace-1234.abc:9"


@pytest.mark.parametrize("bad", ["short", "x" * 200, "<script>alert(1)</script>", "a b c d e f"])
async def test_replaces_an_insane_request_id(client: AsyncClient, bad: str) -> None:
    response = await client.get("/health", headers={"X-Request-ID": bad})
    assert response.headers["x-request-id"] != bad
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


async def test_process_time_header(client: AsyncClient) -> None:
    response = await client.get("/health")
    assert float(response.headers["x-process-time"]) >= 0


async def test_security_headers_without_hsts_over_http(client: AsyncClient) -> None:
    response = await client.get("/health")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert "geolocation=()" in response.headers["permissions-policy"]
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert "x-xss-protection" not in response.headers
    assert "strict-transport-security" not in response.headers
    assert "server" not in response.headers


async def test_hsts_over_https(app: FastAPI) -> None:
    async with await _client_for(app, "https://test") as https:
        response = await https.get("/health")
    assert response.headers["strict-transport-security"].startswith("max-age=31536000")


async def test_hsts_forced_by_setting(bare_settings: dict[str, Any]) -> None:
    application = create_app(make_settings(hsts=True, **bare_settings))
    async with await _client_for(application) as http:
        response = await http.get("/health")
    assert "strict-transport-security" in response.headers


async def test_docs_page_has_its_own_csp_not_the_apis(client: AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    # One policy: the docs' self-only one (tests/core/test_docs.py), not `default-src 'none'`.
    assert response.headers.get_list("content-security-policy") == [DOCS_CSP]


async def test_gzip_for_large_responses(client: AsyncClient) -> None:
    response = await client.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.json()["openapi"].startswith("3.")


async def test_cors_allowlist(bare_settings: dict[str, Any]) -> None:
    settings = make_settings(cors_origins="https://app.example.com", **bare_settings)
    application = create_app(settings)
    preflight = {"Access-Control-Request-Method": "GET"}
    async with await _client_for(application) as http:
        allowed = await http.options(
            "/health", headers={"Origin": "https://app.example.com", **preflight}
        )
        denied = await http.options(
            "/health", headers={"Origin": "https://evil.example.com", **preflight}
        )
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-origin" not in denied.headers


async def test_cors_credentials_go_only_to_listed_origins(bare_settings: dict[str, Any]) -> None:
    listed = make_settings(cors_origins="https://app.example.com", **bare_settings)
    wildcard = make_settings(cors_origins="*", cors_allow_credentials=False, **bare_settings)
    headers = {"Origin": "https://evil.example.com", "Cookie": "session=1"}
    async with await _client_for(create_app(wildcard)) as http:
        anyone = await http.get("/health", headers=headers)
        preflight = await http.options(
            "/health", headers={**headers, "Access-Control-Request-Method": "GET"}
        )
    async with await _client_for(create_app(listed)) as http:
        friend = await http.get("/health", headers={**headers, "Origin": "https://app.example.com"})
    for response in (anyone, preflight):
        assert response.headers["access-control-allow-origin"] == "*"  # never reflected
        assert "access-control-allow-credentials" not in response.headers
    assert friend.headers["access-control-allow-origin"] == "https://app.example.com"
    assert friend.headers["access-control-allow-credentials"] == "true"


async def test_trusted_hosts_in_production(bare_settings: dict[str, Any]) -> None:
    settings = make_settings(
        environment="production",
        secret_key="s" * 48,
        allowed_hosts="api.example.com,*.internal.example.com",
        **bare_settings,
    )
    application = create_app(settings)
    async with await _client_for(application, "http://api.example.com") as http:
        good = await http.get("/health")
        wildcard = await http.get("/health", headers={"Host": "a.internal.example.com"})
        bad = await http.get("/health", headers={"Host": "evil.com"})
    assert good.status_code == 200
    assert wildcard.status_code == 200
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"
    assert bad.json()["request_id"] == bad.headers["x-request-id"]


@pytest.fixture
async def echo_client(bare_settings: dict[str, Any]) -> AsyncIterator[AsyncClient]:
    application = create_app(make_settings(max_body_bytes=1024, **bare_settings))

    @application.post("/echo")
    async def echo(payload: dict[str, str]) -> dict[str, str]:
        return payload

    @application.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    async with await _client_for(application) as http:
        yield http


async def test_body_within_cap_is_accepted(echo_client: AsyncClient) -> None:
    response = await echo_client.post("/echo", json={"a": "b"})
    assert response.status_code == 200
    assert response.json() == {"a": "b"}


async def test_declared_body_over_cap_gets_413(echo_client: AsyncClient) -> None:
    response = await echo_client.post("/echo", json={"a": "x" * 2000})
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 413


async def test_streamed_body_over_cap_gets_413(echo_client: AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"a": "'
        for _ in range(10):
            yield b"x" * 200
        yield b'"}'

    response = await echo_client.post(
        "/echo", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


async def test_bulk_caps_follow_organization_paths(bare_settings: dict[str, Any]) -> None:
    settings = make_settings(max_body_bytes=1024, documents_bulk_max_bytes=8192, **bare_settings)
    application = create_app(settings)

    @application.post("/api/v1/orgs/{org_id}/documents/bulk/echo")
    async def echo(org_id: str, payload: dict[str, str]) -> dict[str, str]:
        return payload

    big = {"a": "x" * 4000}  # over the general cap, under the bulk one
    async with await _client_for(application) as http:
        bulk = await http.post("/api/v1/orgs/0190-any/documents/bulk/echo", json=big)
        other = await http.post("/api/v1/orgs/0190-any/posts", json=big)
        nested = await http.post("/api/v1/orgs/a/b/documents/bulk/echo", json=big)
    assert bulk.status_code == 200
    assert other.status_code == 413
    assert nested.status_code == 413  # `{org_id}` is one path segment, no more


async def test_unexpected_error_is_a_generic_500(echo_client: AsyncClient) -> None:
    with capture_logs(processors=[add_request_id]) as logs:
        response = await echo_client.get("/boom", headers={"X-Request-ID": "boom-request-1"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["request_id"] == "boom-request-1" == response.headers["x-request-id"]
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text
    errors = [entry for entry in logs if entry["event"] == "unhandled_error"]
    assert errors
    assert errors[0]["request_id"] == "boom-request-1"
    assert errors[0]["exc_info"] is True


async def test_access_log_carries_request_context(client: AsyncClient) -> None:
    with capture_logs(processors=[add_request_id]) as logs:
        await client.get("/health", headers={"X-Request-ID": "access-log-1"})
    entries = [entry for entry in logs if entry["event"] == "request"]
    assert entries == [
        {
            "event": "request",
            "log_level": "info",
            "method": "GET",
            "route": "/health",
            "path": "/health",
            "status": 200,
            "duration_ms": entries[0]["duration_ms"],
            "request_id": "access-log-1",
        }
    ]
