"""Documents from text alone: embedded inline when created one by one, by the job queue
when bulk-loaded; the answers say whether an embedding is pending."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from keel.search.embeddings import worker_for
from tests.documents.factory import as_document, dimension, docs_url, ndjson, unit_vectors
from tests.users.factory import signed_in

NDJSON = {"Content-Type": "application/x-ndjson"}
CAT = "The feline dozed on the sunny windowsill all afternoon"
BUDGET = "Quarterly spreadsheet totals for the finance department"


async def search(
    client: AsyncClient, docs: str, auth: dict[str, str], **query: Any
) -> list[dict[str, Any]]:
    response = await client.post(f"{docs}/search", headers=auth, json=query)
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()["items"]
    return hits


async def test_a_document_from_text_alone_is_embedded_at_once(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    docs = docs_url(user.id)
    created = await client.post(docs, headers=auth, json={"content": CAT, "metadata": {"n": 1}})
    assert created.status_code == 201, created.text
    document = created.json()
    assert document["embedding_pending"] is False
    await client.post(docs, headers=auth, json={"content": BUDGET})

    [nearest, *_] = await search(client, docs, auth, text="a cat sleeping in the sun")
    assert nearest["id"] == document["id"]
    [same] = await search(client, docs, auth, text=CAT, limit=1)  # the server's own vector
    assert abs(same["distance"]) < 1e-3


async def test_nothing_to_embed_is_refused(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    docs = docs_url(user.id)
    for body in ({}, {"content": "   "}, {"metadata": {"a": 1}}):
        refused = await client.post(docs, headers=auth, json=body)
        assert refused.status_code == 422, body
    bad_line = await client.post(f"{docs}/bulk", headers=auth | NDJSON, content=b'{"content":""}\n')
    assert bad_line.status_code == 422
    assert bad_line.json()["errors"][0]["line"] == 1


async def test_bulk_text_is_embedded_by_the_job_queue(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    docs = docs_url(user.id)
    vectors = unit_vectors(2, await dimension(db_session))
    lines = [
        as_document(vectors[0], content="with its own vector"),
        {"content": CAT},
        as_document(vectors[1], content="also its own"),
        {"content": BUDGET, "metadata": {"kind": "report"}},
    ]
    loaded = await client.post(f"{docs}/bulk", headers=auth | NDJSON, content=ndjson(lines))
    assert loaded.status_code == 201, loaded.text
    result = loaded.json()
    assert (result["inserted"], result["embeddings_pending"]) == (4, 2)
    cat_id = result["ids"][1]
    jobs = await db_session.execute(text("SELECT kind, payload, tenant_id FROM app.jobs"))
    [(kind, payload, tenant_id)] = jobs.all()
    assert kind == "embed_documents"
    payload = payload if isinstance(payload, dict) else orjson.loads(payload)
    # The job works for the organization: its payload and its row say which.
    assert payload == {
        "tenant_id": str(user.id),
        "document_ids": [result["ids"][1], result["ids"][3]],
    }
    assert tenant_id == user.id

    pending = await client.get(f"{docs}/{cat_id}", headers=auth)
    assert pending.json()["embedding_pending"] is True
    # Search sees only embedded documents, exact scans included, until the job runs.
    for exact in (False, True):
        hits = await search(client, docs, auth, vector=[float(x) for x in vectors[0]], exact=exact)
        assert {hit["id"] for hit in hits} == {result["ids"][0], result["ids"][2]}

    services = app.state.services
    assert await worker_for(services.settings, services.db, services.embedder).drain() == 1

    embedded = await client.get(f"{docs}/{cat_id}", headers=auth)
    assert embedded.json()["embedding_pending"] is False
    [nearest, *_] = await search(client, docs, auth, text="a cat sleeping in the sun")
    assert nearest["id"] == cat_id
    assert len(await search(client, docs, auth, text="cat", limit=10)) == 4
