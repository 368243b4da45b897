"""Walk cases for `keel.documents.repository`.

Each case gives both organizations twin documents (the same vector, content and
metadata), embedded or still pending, then runs the function as organization A.
"""

from __future__ import annotations

from uuid import UUID

from keel.core.ids import uuid7
from keel.documents import repository
from keel.documents.models import FULL, Document, Metric
from keel.documents.repository import IndexScan, Nearest
from keel.documents.schemas import metadata_json
from tests.documents.factory import as_list, unit_vectors
from tests.tenancy.walk import Tenant, World, case

TWIN = {"twin": True}


async def _twins(world: World, *, pending: bool = False) -> list[float]:
    """One twin document in each organization (their ids under `documents`); the vector."""
    layout = await repository.load_layout(world.session)
    vector = unit_vectors(1, layout.dimension, seed=60)[0]
    async with repository.copy_connection(world.session) as driver:
        for tenant in (world.a, world.b):
            id_ = uuid7()
            embedding = None if pending else vector
            record = (tenant.id, id_, tenant.actor.user_id, "twin", metadata_json(TWIN), embedding)
            await repository.copy_documents(driver, [record])
            tenant.rows.setdefault("documents", []).append(id_)
    return as_list(vector)


def _all(world: World) -> list[UUID]:
    return world.a.rows["documents"] + world.b.rows["documents"]


def _mine(tenant: Tenant) -> set[UUID]:
    return set(tenant.rows["documents"])


@case(repository.copy_documents)
async def _copy_documents(world: World) -> set[UUID]:
    await _twins(world)
    assert await repository.count(world.session, world.b.id) == 1
    return _mine(world.a)


@case(repository.get)
async def _get(world: World) -> set[UUID]:
    await _twins(world)
    found = set()
    for document_id in _all(world):
        document = await repository.get(world.session, world.a.id, document_id)
        if document is not None:
            found.add(document.id)
    assert found == _mine(world.a)
    return found


@case(repository.get_with_status)
async def _get_with_status(world: World) -> set[UUID]:
    await _twins(world)
    found = set()
    for document_id in _all(world):
        got = await repository.get_with_status(world.session, world.a.id, document_id)
        if got is not None:
            found.add(got[0].id)
    assert found == _mine(world.a)
    return found


@case(repository.pending_contents)
async def _pending_contents(world: World) -> set[UUID]:
    await _twins(world, pending=True)
    waiting = await repository.pending_contents(world.session, world.a.id, _all(world))
    return {id_ for id_, _ in waiting}


@case(repository.store_embeddings)
async def _store_embeddings(world: World) -> set[UUID]:
    vector = await _twins(world, pending=True)
    ids = _all(world)
    stored = await repository.store_embeddings(world.session, world.a.id, ids, [vector] * 2)
    assert stored == 1
    left = await repository.pending_contents(world.session, world.b.id, ids)
    assert [id_ for id_, _ in left] == world.b.rows["documents"]  # B's still waits
    return _mine(world.a)


@case(repository.save)
async def _save(world: World) -> set[UUID]:
    vector = await _twins(world)
    document = Document(
        tenant_id=world.a.id, owner_id=world.a.actor.user_id, content="twin", embedding=vector
    )
    saved = await repository.save(world.session, document)
    return {saved.id}


@case(repository.delete)
async def _delete(world: World) -> set[UUID]:
    await _twins(world)
    deleted = {
        document_id
        for document_id in _all(world)
        if await repository.delete(world.session, world.a.id, document_id)
    }
    assert await repository.count(world.session, world.b.id) == 1
    return deleted


@case(repository.count)
async def _count(world: World) -> set[UUID]:
    await _twins(world)
    await _twins(world)
    assert await repository.count(world.session, world.a.id) == 2
    return _mine(world.a)


@case(repository.nearest)
async def _nearest(world: World) -> set[UUID]:
    vector = await _twins(world)
    metric: Metric = world.app.state.settings.vector_metric
    found: set[UUID] = set()
    async with world.app.state.db.sessionmaker() as tx:
        for filter_ in (None, TWIN):
            query = Nearest(vector, metric, FULL, 100, world.a.id, metadata_filter=filter_)
            for scan in (None, IndexScan(40, "relaxed_order", 20_000)):
                found |= {row.id for row in await repository.nearest(tx, query, len(vector), scan)}
        await tx.rollback()
    return found
