"""Vector search in an organization: nearest first, exact distances, metrics, ef_search,
filters, iterative scans over the tenant's rows, settings that end with the request."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from keel.documents import repository
from keel.documents.models import FULL, HALF, METRICS, Metric
from keel.documents.repository import IndexScan, Nearest
from keel.embeddings import make_embedder
from tests.conftest import MakeDatabase, make_settings
from tests.documents.factory import (
    Floats,
    as_document,
    as_list,
    copy_documents,
    dimension,
    docs_url,
    ndjson,
    separate_app,
    unit_vectors,
)
from tests.users.factory import bearer, make_user, sign_in, signed_in

TOLERANCE = 1e-5


def distances(vectors: Floats, query: Floats, metric: Metric) -> np.ndarray[Any, Any]:
    """What pgvector's operators compute, in float64 from the stored float32 values."""
    stored, q = vectors.astype(np.float64), query.astype(np.float64)
    if metric == "cosine":
        return 1 - stored @ q / (np.linalg.norm(stored, axis=1) * np.linalg.norm(q))
    if metric == "l2":
        return np.asarray(np.linalg.norm(stored - q, axis=1))
    if metric == "inner_product":
        return -(stored @ q)
    return np.asarray(np.abs(stored - q).sum(axis=1))


@pytest.mark.parametrize("metric", METRICS)
async def test_search_returns_the_nearest_first_with_their_distances(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, metric: Metric
) -> None:
    user, auth = await signed_in(app, db_session, client)
    search_url = f"{docs_url(user.id)}/search"
    size = await dimension(db_session)
    vectors = unit_vectors(60, size, seed=2) * np.float32(3.0)  # not unit: metrics differ
    ids = await copy_documents(db_session, user, vectors)
    query = (unit_vectors(1, size, seed=3)[0] * 2 + vectors[7] * 0.5).astype(np.float32)
    expected = distances(vectors, query, metric)
    order = np.argsort(expected)
    assert expected[order[5]] - expected[order[4]] > 1e-3  # a clear top 5, even at fp16

    response = await client.post(
        search_url, headers=auth, json={"vector": as_list(query), "limit": 5, "metric": metric}
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert [hit["id"] for hit in result["items"]] == [str(ids[i]) for i in order[:5]]
    got = [hit["distance"] for hit in result["items"]]
    assert got == pytest.approx(list(expected[order[:5]]), abs=TOLERANCE, rel=TOLERANCE)
    scores = [hit["score"] for hit in result["items"]]
    if metric == "cosine":
        assert scores == pytest.approx([1 - d for d in got])
    elif metric == "inner_product":
        assert scores == pytest.approx([-d for d in got])
    else:
        assert scores == [None] * 5

    layout = await repository.load_layout(db_session)
    indexed = layout.index_for(HALF, metric) or layout.index_for(FULL, metric)
    assert result["metric"] == metric
    assert result["index"] == indexed
    assert result["exact"] is (indexed is None)  # no index for this metric: an exact scan


async def test_the_default_metric_is_the_indexed_one(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    search_url = f"{docs_url(user.id)}/search"
    vectors = unit_vectors(10, await dimension(db_session), seed=4)
    await copy_documents(db_session, user, vectors)
    response = await client.post(search_url, headers=auth, json={"vector": as_list(vectors[0])})
    result = response.json()
    assert result["metric"] == app.state.settings.vector_metric
    assert result["index"] is not None
    assert result["exact"] is False
    assert result["ef_search"] == app.state.settings.hnsw_ef_search_default
    assert result["items"][0]["distance"] == pytest.approx(0, abs=TOLERANCE)


async def test_exact_search_skips_the_index_and_agrees_with_numpy(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    search_url = f"{docs_url(user.id)}/search"
    size = await dimension(db_session)
    vectors = unit_vectors(80, size, seed=5)
    ids = await copy_documents(db_session, user, vectors)
    query = unit_vectors(1, size, seed=6)[0]
    expected = np.argsort(distances(vectors, query, "cosine"))[:10]
    body = {"vector": as_list(query), "limit": 10, "metric": "cosine", "exact": True}
    result = (await client.post(search_url, headers=auth, json=body)).json()
    assert [hit["id"] for hit in result["items"]] == [str(ids[i]) for i in expected]
    assert (result["index"], result["exact"], result["ef_search"]) == (None, True, None)


async def test_ef_search_limit_and_query_shape_are_checked(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    search_url = f"{docs_url(user.id)}/search"
    vectors = unit_vectors(20, await dimension(db_session), seed=7)
    await copy_documents(db_session, user, vectors)
    vector = as_list(vectors[3])
    tuned = await client.post(search_url, headers=auth, json={"vector": vector, "ef_search": 7})
    assert tuned.status_code == 200
    assert tuned.json()["ef_search"] == 7
    max_limit = app.state.settings.vector_search_max_limit
    for bad in (
        {"ef_search": 0},
        {"ef_search": 1001},
        {"ef_search": True},
        {"ef_search": "10"},
        {"limit": 0},
        {"limit": max_limit + 1},
        {"limit": 2.5},
        {"metric": "hamming"},
        {"exact": "yes"},
        {"filter": ["not", "an", "object"]},
        {"text": "both a text and a vector"},
        {"unknown": 1},
    ):
        response = await client.post(search_url, headers=auth, json={"vector": vector, **bad})
        assert response.status_code == 422, bad
    neither = await client.post(search_url, headers=auth, json={"limit": 3})
    assert neither.status_code == 422


async def test_text_search_without_an_embedder_is_503(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, auth = await signed_in(app, db_session, client)
    search_url = f"{docs_url(user.id)}/search"
    services = app.state.services
    monkeypatch.setattr(app.state, "services", replace(services, embedder=None))
    response = await client.post(search_url, headers=auth, json={"text": "a question"})
    assert response.status_code == 503
    assert response.json()["type"] == "urn:keel:problem:service-unavailable"


async def test_text_search_embeds_the_query_with_the_servers_model(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedder = make_embedder("minilm")
    if embedder.dimension != await dimension(db_session):
        pytest.skip("documents were migrated for another model's dimension")
    monkeypatch.setattr(app.state, "embedder", embedder, raising=False)
    user, auth = await signed_in(app, db_session, client)
    search_url = f"{docs_url(user.id)}/search"
    texts = [
        "The cat slept on the warm windowsill all afternoon.",
        "Central banks raised interest rates to fight inflation.",
        "Whisk the eggs and sugar, then fold in the melted chocolate.",
    ]
    vectors = np.asarray(await embedder.embed(texts), dtype=np.float32)
    ids = await copy_documents(db_session, user, vectors)
    for question, expected in (
        ("a kitten napping in the sun", 0),
        ("monetary policy and the economy", 1),
        ("how do I bake a chocolate cake", 2),
    ):
        response = await client.post(search_url, headers=auth, json={"text": question, "limit": 3})
        assert response.status_code == 200, response.text
        assert response.json()["items"][0]["id"] == str(ids[expected]), question


async def test_filter_is_metadata_containment(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    search_url = f"{docs_url(user.id)}/search"
    vectors = unit_vectors(4, await dimension(db_session), seed=8)
    metadata: list[dict[str, Any]] = [
        {"lang": "en", "tags": ["a", "b"]},
        {"lang": "en", "tags": ["b"]},
        {"lang": "de", "tags": ["a"], "extra": {"x": 1}},
        {},
    ]
    ids = await copy_documents(db_session, user, vectors, metadata)

    async def matching(filter_: dict[str, Any]) -> set[str]:
        body = {"vector": as_list(vectors[0]), "limit": 10, "filter": filter_}
        response = await client.post(search_url, headers=auth, json=body)
        assert response.status_code == 200, response.text
        return {hit["id"] for hit in response.json()["items"]}

    assert await matching({"lang": "en"}) == {str(ids[0]), str(ids[1])}
    assert await matching({"tags": ["a"]}) == {str(ids[0]), str(ids[2])}
    assert await matching({"extra": {"x": 1}, "lang": "de"}) == {str(ids[2])}
    assert await matching({"lang": "fr"}) == set()
    assert await matching({}) == {str(i) for i in ids}


async def _plan(session: AsyncSession, query: Nearest, dimension: int) -> str:
    sql = f"EXPLAIN {repository.nearest_sql(query, dimension)}"
    rows = await session.execute(text(sql), repository.nearest_params(query))
    return "\n".join(rows.scalars().all())


async def test_selective_filter_still_fills_the_page_thanks_to_iterative_scan(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    admin, auth = await signed_in(app, db_session, client, admin=True)
    search_url = f"{docs_url(admin.id)}/search"
    layout = await repository.load_layout(db_session)
    metric: Metric = app.state.settings.vector_metric
    column = HALF if layout.index_for(HALF, metric) else FULL
    index = layout.index_for(column, metric)
    assert index is not None
    vectors = unit_vectors(500, layout.dimension, seed=9)
    rare = {"tag": "rare"}
    metadata = [rare if i % 50 == 0 else {"tag": "common"} for i in range(500)]  # 2%
    await copy_documents(db_session, admin, vectors, metadata)
    query = unit_vectors(1, layout.dimension, seed=10)[0]
    # With so few rows the planner would rather read the tenant's btree or GIN index and
    # sort (exact, and fine); take that away so the HNSW index has to serve the filtered
    # query (the outer re-sort stays, disabled or not, in every plan).
    # SET LOCAL needs a transaction: db_session runs in autocommit.
    async with app.state.db.sessionmaker() as tx:
        await tx.execute(text("SET LOCAL enable_seqscan = off"))
        await tx.execute(text("SET LOCAL enable_bitmapscan = off"))
        await tx.execute(text("SET LOCAL enable_sort = off"))
        nearest = Nearest(
            as_list(query), metric, column, limit=5, tenant_id=admin.id, metadata_filter=rare
        )
        assert f"Index Scan using {index}" in await _plan(tx, nearest, layout.dimension)

        # Without iterative scan, HNSW yields its ef_search=10 candidates and the filter
        # keeps about 2% of them: the page comes back short.
        await repository.apply_scan(tx, IndexScan(10, None, 20_000))
        sql = text(repository.nearest_sql(nearest, layout.dimension))
        short = await tx.execute(sql, repository.nearest_params(nearest))
        assert len(short.all()) < 5
        await tx.rollback()

    body = {"vector": as_list(query), "limit": 5, "ef_search": 10, "filter": rare}
    result = (await client.post(search_url, headers=auth, json=body)).json()
    assert len(result["items"]) == 5
    assert all(hit["metadata"] == rare for hit in result["items"])
    assert result["iterative_scan"] == "relaxed_order"
    assert result["index"] == index
    got = [hit["distance"] for hit in result["items"]]
    assert got == sorted(got)

    unfiltered = {"vector": as_list(query), "limit": 5, "ef_search": 10}
    result = (await client.post(search_url, headers=auth, json=unfiltered)).json()
    assert len(result["items"]) == 5
    # The tenant is always a filter: every index scan is iterative.
    assert result["iterative_scan"] == "relaxed_order"


async def test_unfiltered_search_is_served_by_the_hnsw_index(
    app: FastAPI, db_session: AsyncSession
) -> None:
    admin = await make_user(app, db_session, admin=True)
    layout = await repository.load_layout(db_session)
    metric: Metric = app.state.settings.vector_metric
    await copy_documents(db_session, admin, unit_vectors(2_000, layout.dimension, seed=11))
    await db_session.execute(text("ANALYZE app.documents"))
    query = as_list(unit_vectors(1, layout.dimension, seed=12)[0])
    indexed = [column for column in (HALF, FULL) if layout.index_for(column, metric)]
    assert indexed
    for column in indexed:
        nearest = Nearest(query, metric, column, 10, tenant_id=admin.id)
        plan = await _plan(db_session, nearest, layout.dimension)
        assert f"Index Scan using {layout.index_for(column, metric)}" in plan, plan


async def _settings_on(conn: Any) -> dict[str, str | None]:
    names = ("hnsw.ef_search", "hnsw.iterative_scan", "hnsw.max_scan_tuples", "enable_indexscan")
    values = {}
    for name in names:
        values[name] = await conn.scalar(
            text("SELECT current_setting(:name, true)"), {"name": name}
        )
    return values


async def test_set_local_settings_end_with_the_request(
    make_database: MakeDatabase, data_dir: Path
) -> None:
    url = await make_database(migrated=True)
    settings = make_settings(
        url, data_dir, db_pool_size=1, hnsw_ef_search_default=33, hnsw_max_scan_tuples=12_345
    )
    async with separate_app(settings) as (application, http):
        async with application.state.db.sessionmaker() as session:
            user = await make_user(application, session)
            await session.commit()
            size = await dimension(session)
        auth = bearer(await sign_in(http, user.username))
        vectors = unit_vectors(30, size, seed=13)
        lines = ndjson([as_document(v, metadata={"n": i % 3}) for i, v in enumerate(vectors)])
        headers = {**auth, "Content-Type": "application/x-ndjson"}
        assert (
            await http.post(f"{docs_url(user.id)}/bulk", headers=headers, content=lines)
        ).is_success
        async with application.state.db.engine.connect() as conn:
            before = await _settings_on(conn)

        vector = as_list(vectors[0])
        for body in (
            {"vector": vector, "ef_search": 7, "filter": {"n": 1}},  # iterative, ef_search 7
            {"vector": vector},  # the settings' defaults: ef_search 33, 12,345 tuples
            {"vector": vector, "exact": True},  # enable_indexscan off
        ):
            response = await http.post(f"{docs_url(user.id)}/search", headers=auth, json=body)
            assert response.status_code == 200, response.text
            assert len(response.json()["items"]) > 0

        # One pooled connection: every request above ran on the connection checked here.
        assert application.state.db.pool_status().size == 1
        async with application.state.db.engine.connect() as conn:
            assert await _settings_on(conn) == before
        # pgvector's and PostgreSQL's defaults (the bulk load already loaded pgvector).
        assert before == {
            "hnsw.ef_search": "40",
            "hnsw.iterative_scan": "off",
            "hnsw.max_scan_tuples": "20000",
            "enable_indexscan": "on",
        }
