"""Prometheus metrics: route templates as labels, pool gauges."""

from __future__ import annotations

import re

from fastapi import FastAPI
from httpx import AsyncClient

from keel.core.routing import KeelRouter


def _sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    match = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_requests_are_counted_by_route_template(app: FastAPI, client: AsyncClient) -> None:
    router = KeelRouter(prefix="/things")

    @router.get("/{thing_id}")
    async def thing(thing_id: int) -> dict[str, int]:
        return {"thing_id": thing_id}

    app.include_router(router)
    before = _sample(
        (await client.get("/metrics")).text,
        "keel_http_requests_total",
        method="GET",
        route="/things/{thing_id}",
        status="200",
    )
    for thing_id in (1, 2, 3):
        assert (await client.get(f"/things/{thing_id}")).status_code == 200
    text = (await client.get("/metrics")).text
    after = _sample(
        text, "keel_http_requests_total", method="GET", route="/things/{thing_id}", status="200"
    )
    assert after - before == 3
    assert 'route="/things/1"' not in text
    latency_histogram = "keel_http_request_duration_seconds_bucket"
    assert latency_histogram in text


async def test_unmatched_paths_share_one_label(client: AsyncClient) -> None:
    def unmatched(text: str) -> float:
        labels = {"method": "GET", "route": "<unmatched>", "status": "404"}
        return _sample(text, "keel_http_requests_total", **labels) or 0.0

    before = unmatched((await client.get("/metrics")).text)
    await client.get("/definitely/not/here/42")
    await client.get("/another/unknown/path")
    text = (await client.get("/metrics")).text
    assert unmatched(text) == before + 2
    assert "/definitely/not/here" not in text


async def test_pool_gauges_are_published(client: AsyncClient) -> None:
    text = (await client.get("/metrics")).text
    assert re.search(r"^keel_db_pool_size 10\.0$", text, re.MULTILINE)
    assert re.search(r"^keel_db_pool_checked_out \d", text, re.MULTILINE)


async def test_collection_paths_answer_with_and_without_slash(
    app: FastAPI, client: AsyncClient
) -> None:
    router = KeelRouter(prefix="/widgets")

    @router.get("")
    async def widgets() -> list[int]:
        return [1, 2]

    app.include_router(router)
    bare = await client.get("/widgets")
    slashed = await client.get("/widgets/")
    assert bare.status_code == slashed.status_code == 200
    assert bare.json() == slashed.json() == [1, 2]
    app.openapi_schema = None  # rebuilt with the router just added
    schema_paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/widgets" in schema_paths
    assert "/widgets/" not in schema_paths
