"""Vector search per tenant: what the planner does for a small and a big organization, and
that a short walk of the HNSW graph never shortens the page."""

from __future__ import annotations

from dataclasses import replace

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from keel.documents import repository
from keel.documents.models import FULL, HALF, Metric
from keel.documents.repository import IndexScan, Nearest
from tests.documents.factory import as_list, copy_documents, docs_url, unit_vectors
from tests.users.factory import make_user, signed_in


async def _plan(session: AsyncSession, query: Nearest, dimension: int) -> str:
    sql = f"EXPLAIN {repository.nearest_sql(query, dimension)}"
    rows = await session.execute(text(sql), repository.nearest_params(query))
    return "\n".join(rows.scalars().all())


async def test_a_small_tenant_is_read_by_its_btree_a_big_one_by_the_hnsw_graph(
    app: FastAPI, db_session: AsyncSession
) -> None:
    layout = await repository.load_layout(db_session)
    metric: Metric = app.state.settings.vector_metric
    column = HALF if layout.index_for(HALF, metric) else FULL
    big, small = await make_user(app, db_session), await make_user(app, db_session)
    await copy_documents(db_session, big, unit_vectors(3_000, layout.dimension, seed=50))
    await copy_documents(db_session, small, unit_vectors(20, layout.dimension, seed=51))
    await db_session.execute(text("ANALYZE app.documents"))
    query = as_list(unit_vectors(1, layout.dimension, seed=52)[0])
    async with app.state.db.sessionmaker() as tx:
        await repository.apply_scan(tx, IndexScan(40, "relaxed_order", 20_000))
        big_plan = await _plan(tx, Nearest(query, metric, column, 10, big.id), layout.dimension)
        assert f"Index Scan using {layout.index_for(column, metric)}" in big_plan, big_plan
        small_plan = await _plan(tx, Nearest(query, metric, column, 10, small.id), layout.dimension)
        # 20 rows by the (tenant_id, ...) btree and a sort: exact, and cheaper than a walk.
        assert "hnsw" not in small_plan, small_plan
        assert "ix_documents_tenant_id" in small_plan, small_plan
        await tx.rollback()


async def test_a_walk_cut_short_by_max_scan_tuples_is_answered_exactly(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, auth = await signed_in(app, db_session, client)
    services = app.state.services
    tiny = services.settings.model_copy(update={"hnsw_max_scan_tuples": 1})
    monkeypatch.setattr(app.state, "services", replace(services, settings=tiny))
    size = (await repository.load_layout(db_session)).dimension
    vectors = unit_vectors(300, size, seed=53)
    rare = {"tag": "rare"}
    metadata = [rare if i % 75 == 0 else {"tag": "common"} for i in range(300)]  # 4 rare
    await copy_documents(db_session, user, vectors, metadata)
    query = unit_vectors(1, size, seed=54)[0]
    search = f"{docs_url(user.id)}/search"

    async def hits(**body: object) -> list[dict[str, object]]:
        response = await client.post(search, headers=auth, json={"vector": as_list(query), **body})
        assert response.status_code == 200, response.text
        items: list[dict[str, object]] = response.json()["items"]
        return items

    found = await hits(filter=rare, limit=10)
    assert len(found) == 4  # every match, though the walk stops after one tuple
    assert all(hit["metadata"] == rare for hit in found)
    distances = [float(str(hit["distance"])) for hit in found]
    assert distances == sorted(distances)
    assert len(await hits(limit=7)) == 7
