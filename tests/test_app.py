"""create_app's production defaults: API docs are opt-in, /metrics needs a bearer token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from pydantic import ValidationError

from keel.app import create_app
from tests.conftest import make_settings

DOCS = ("/docs", "/redoc", "/openapi.json")
TOKEN = "metrics-token-0123456789"


async def get(settings: dict[str, Any], path: str, **headers: str) -> Any:
    application = create_app(make_settings(**settings))
    transport = ASGITransport(app=application)
    async with AsyncClient(transport=transport, base_url="http://localhost") as http:
        return await http.get(path, headers=headers)


@pytest.fixture
def production(tmp_path: Path) -> dict[str, Any]:
    # No request here reaches the database: the URL is never dialled.
    return {
        "database_url": "postgresql://nobody@127.0.0.1:1/none",
        "data_dir": tmp_path,
        "environment": "production",
        "secret_key": "s" * 48,
    }


@pytest.mark.parametrize("path", DOCS)
async def test_production_serves_no_api_docs_by_default(
    production: dict[str, Any], path: str
) -> None:
    response = await get(production, path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("path", DOCS)
async def test_production_serves_api_docs_when_asked(production: dict[str, Any], path: str) -> None:
    assert (await get({**production, "docs_enabled": True}, path)).status_code == 200


async def test_development_serves_api_docs(tmp_path: Path) -> None:
    settings = {"database_url": "postgresql://nobody@127.0.0.1:1/none", "data_dir": tmp_path}
    assert (await get({**settings, "environment": "development"}, "/docs")).status_code == 200
    assert (await get({**settings, "docs_enabled": False}, "/docs")).status_code == 404


async def test_production_metrics_are_closed_without_a_token(production: dict[str, Any]) -> None:
    response = await get(production, "/metrics", Authorization="Bearer anything")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert "keel_http_requests" not in response.text


@pytest.mark.parametrize("environment", ["production", "development"])
async def test_metrics_need_the_configured_token(
    production: dict[str, Any], environment: str
) -> None:
    settings = {**production, "environment": environment, "metrics_token": TOKEN}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = await get(settings, "/metrics", **headers)
        assert response.status_code == 401, headers
        assert response.json()["status"] == 401
    allowed = await get(settings, "/metrics", Authorization=f"Bearer {TOKEN}")
    assert allowed.status_code == 200
    assert "keel_http_requests" in allowed.text


def test_a_short_metrics_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="METRICS_TOKEN|metrics_token"):
        make_settings("postgresql://nobody@127.0.0.1:1/none", tmp_path, metrics_token="short")
