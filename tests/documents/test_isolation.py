"""Tenant isolation for documents: organization A never sees, changes, deletes or finds
organization B's documents (CRUD, bulk, vector, text and metadata search, the embedding
jobs), and the roles inside one organization."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.viewer import Role
from keel.documents import repository
from keel.documents.embeddings import EMBED_DOCUMENTS
from keel.documents.models import FULL, Metric
from keel.documents.repository import IndexScan, Nearest
from keel.jobs import service as jobs
from keel.search.embeddings import worker_for
from tests.documents.factory import (
    as_document,
    as_list,
    docs_url,
    make_document,
    ndjson,
    unit_vectors,
)
from tests.orgs.factory import add_member, create_org
from tests.users.factory import signed_in

NDJSON = {"Content-Type": "application/x-ndjson"}
SHARED = {"team": "shared"}  # the same metadata in both organizations


async def _two_orgs(app: FastAPI, db_session: AsyncSession, client: AsyncClient) -> dict[str, Any]:
    """Alice owns A, Bob owns B; each holds one document with the same vector and metadata."""
    alice, alice_auth = await signed_in(app, db_session, client)
    bob, bob_auth = await signed_in(app, db_session, client)
    a = UUID((await create_org(client, alice_auth))["id"])
    b = UUID((await create_org(client, bob_auth))["id"])
    layout = await repository.load_layout(db_session)
    vector = unit_vectors(1, layout.dimension, seed=40)[0]
    a_doc = await make_document(db_session, alice, vector, "A's", SHARED, org_id=a)
    b_doc = await make_document(db_session, bob, vector, "B's", SHARED, org_id=b)
    return {
        "a": a,
        "b": b,
        "alice": alice_auth,
        "bob": bob_auth,
        "vector": vector,
        "a_doc": str(a_doc.id),
        "b_doc": str(b_doc.id),
        "dimension": layout.dimension,
    }


async def _hits(client: AsyncClient, org: UUID, auth: dict[str, str], **body: Any) -> list[str]:
    response = await client.post(f"{docs_url(org)}/search", headers=auth, json=body)
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["items"]]


async def test_a_member_of_a_never_reads_changes_or_deletes_bs_documents(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    w = await _two_orgs(app, db_session, client)
    a_docs, b_docs, alice = docs_url(w["a"]), docs_url(w["b"]), w["alice"]

    # B's id through A's path: the same 404 as an id that never existed.
    missing = await client.get(f"{a_docs}/{uuid4()}", headers=alice)
    for response in (
        await client.get(f"{a_docs}/{w['b_doc']}", headers=alice),
        await client.delete(f"{a_docs}/{w['b_doc']}", headers=alice),
    ):
        assert response.status_code == 404
        assert response.json()["detail"] == missing.json()["detail"]

    # B's own path: Alice is no member, so B doesn't exist for her (before any body is read).
    document = as_document(w["vector"])
    for response in (
        await client.get(f"{b_docs}/{w['b_doc']}", headers=alice),
        await client.delete(f"{b_docs}/{w['b_doc']}", headers=alice),
        await client.post(b_docs, headers=alice, json=document),
        await client.post(f"{b_docs}/bulk", headers=alice | NDJSON, content=ndjson([document])),
        await client.post(f"{b_docs}/search", headers=alice, json={"vector": as_list(w["vector"])}),
    ):
        assert response.status_code == 404, response.request.url
        assert response.json()["detail"] == "No such organization."

    assert await repository.count(db_session, w["b"]) == 1
    read = await client.get(f"{b_docs}/{w['b_doc']}", headers=w["bob"])
    assert read.status_code == 200
    assert read.json()["content"] == "B's"


async def test_a_member_of_a_never_finds_bs_documents(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    w = await _two_orgs(app, db_session, client)
    query = as_list(w["vector"])  # B's document is at distance 0 from it, as is A's
    for body in (
        {"vector": query},
        {"vector": query, "exact": True},
        {"vector": query, "filter": SHARED},
        {"vector": query, "filter": SHARED, "exact": True},
        {"vector": query, "precision": "full", "limit": 100},
        {"vector": query, "metric": "l1"},  # no index for it: an exact scan
    ):
        assert await _hits(client, w["a"], w["alice"], **body) == [w["a_doc"]], body
        assert await _hits(client, w["b"], w["bob"], **body) == [w["b_doc"]], body
    # Text search, when this server's model fits the table.
    if app.state.services.embedder.dimension == w["dimension"]:
        assert w["b_doc"] not in await _hits(client, w["a"], w["alice"], text="B's", limit=100)


async def test_bulk_loads_and_their_embedding_jobs_stay_in_their_organization(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    w = await _two_orgs(app, db_session, client)
    lines = [{"content": "a cat on a windowsill"}, as_document(w["vector"], content="own")]
    loaded = await client.post(
        f"{docs_url(w['a'])}/bulk", headers=w["alice"] | NDJSON, content=ndjson(lines)
    )
    assert loaded.status_code == 201, loaded.text
    assert await repository.count(db_session, w["a"]) == 3
    assert await repository.count(db_session, w["b"]) == 1
    rows = await db_session.execute(text("SELECT tenant_id, payload FROM app.jobs"))
    [(tenant_id, payload)] = rows.all()
    payload = payload if isinstance(payload, dict) else orjson.loads(payload)
    assert tenant_id == w["a"]
    assert payload["tenant_id"] == str(w["a"])

    # A job naming A cannot reach B's documents, even given their ids.
    pending_b = await client.post(
        f"{docs_url(w['b'])}/bulk", headers=w["bob"] | NDJSON, content=ndjson(lines[:1])
    )
    b_pending = UUID(pending_b.json()["ids"][0])
    assert await repository.pending_contents(db_session, w["a"], [b_pending]) == []
    vector = [0.5] * w["dimension"]
    assert await repository.store_embeddings(db_session, w["a"], [b_pending], [vector]) == 0
    b_read = await client.get(f"{docs_url(w['b'])}/{b_pending}", headers=w["bob"])
    assert b_read.json()["embedding_pending"] is True


async def test_jobs_queued_before_tenants_still_embed_each_tenants_documents(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    services = app.state.services
    w = await _two_orgs(app, db_session, client)
    ids = []
    for org, auth in ((w["a"], w["alice"]), (w["b"], w["bob"])):
        body = ndjson([{"content": "text alone"}])
        loaded = await client.post(f"{docs_url(org)}/bulk", headers=auth | NDJSON, content=body)
        ids.append(loaded.json()["ids"][0])
    await db_session.execute(text("DELETE FROM app.jobs"))
    # A payload as queued before migration 0014: ids of two tenants, no tenant_id.
    await jobs.enqueue(db_session, EMBED_DOCUMENTS, [{"document_ids": ids}])
    assert await worker_for(services.settings, services.db, services.embedder).drain() == 1
    for org, auth, id_ in ((w["a"], w["alice"], ids[0]), (w["b"], w["bob"], ids[1])):
        read = await client.get(f"{docs_url(org)}/{id_}", headers=auth)
        assert read.json()["embedding_pending"] is False


async def test_every_repository_query_takes_the_tenant(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    w = await _two_orgs(app, db_session, client)
    a, b_doc = w["a"], UUID(w["b_doc"])
    assert await repository.get(db_session, a, b_doc) is None
    assert await repository.get_with_status(db_session, a, b_doc) is None
    assert await repository.delete(db_session, a, b_doc) is False
    metric: Metric = app.state.settings.vector_metric
    query = Nearest(as_list(w["vector"]), metric, FULL, 100, tenant_id=a)
    async with app.state.db.sessionmaker() as tx:
        for scan in (None, IndexScan(100, "relaxed_order", 20_000)):
            rows = await repository.nearest(tx, query, w["dimension"], scan)
            assert [str(row.id) for row in rows] == [w["a_doc"]]
        await tx.rollback()
    assert await repository.count(db_session, w["b"]) == 1
    assert await repository.count_all_tenants(db_session) >= 2


# operation -> expected status for owner, admin, member, viewer.
EXPECTED = {
    "read": (200, 200, 200, 200),
    "search": (200, 200, 200, 200),
    "create": (201, 201, 201, 403),
    "bulk": (201, 201, 201, 403),
    "delete": (204, 204, 403, 403),
}


@pytest.mark.parametrize("role", list(Role))
async def test_roles_in_one_organization(
    role: Role, app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    """Documents are shared in the organization: everyone reads and searches them all,
    members and up add them, admins and up delete them (anyone's)."""
    w = await _two_orgs(app, db_session, client)
    if role is Role.OWNER:
        auth = w["alice"]
    else:
        user, auth = await signed_in(app, db_session, client)
        await add_member(db_session, w["a"], user.id, role)
    docs, vector = docs_url(w["a"]), w["vector"]
    before = await repository.count(db_session, w["a"])
    column = list(Role).index(role)

    read = await client.get(f"{docs}/{w['a_doc']}", headers=auth)  # Alice's document
    search = await client.post(f"{docs}/search", headers=auth, json={"vector": as_list(vector)})
    create = await client.post(docs, headers=auth, json=as_document(vector))
    bulk = await client.post(
        f"{docs}/bulk", headers=auth | NDJSON, content=ndjson([as_document(vector)])
    )
    delete = await client.delete(f"{docs}/{w['a_doc']}", headers=auth)
    got = {"read": read, "search": search, "create": create, "bulk": bulk, "delete": delete}
    for operation, response in got.items():
        assert response.status_code == EXPECTED[operation][column], (operation, response.text)
        if response.status_code == 403:
            assert response.json()["type"] == "urn:keel:problem:forbidden"
    assert w["a_doc"] in [hit["id"] for hit in search.json()["items"]]
    if role is Role.VIEWER:  # refused before the server's model would embed the text
        text_only = await client.post(docs, headers=auth, json={"content": "no vector"})
        assert text_only.status_code == 403
    added = (create.status_code == 201) + (bulk.status_code == 201)
    removed = delete.status_code == 204
    assert await repository.count(db_session, w["a"]) == before + added - removed
    assert await repository.count(db_session, w["b"]) == 1
