"""Documents: `/api/v1/orgs/{org_id}/documents`, an organization's vector store.

Documents are shared within their organization: any member reads and searches them,
members add them, admins delete them (the permission matrix). Another organization's
document id is a 404, as is an organization the caller doesn't belong to. Search walks
an HNSW index filtered by the organization (iterative scan) unless asked for `exact`.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Request, status

from keel.core.db import SessionDep
from keel.core.deps import SIGNED_IN_ERRORS, ServicesDep
from keel.core.idempotency.deps import (
    IDEMPOTENCY_ERRORS,
    DeferredIdempotencyDep,
    IdempotentRoute,
)
from keel.core.routing import KeelRouter, Responses
from keel.core.uploads import UPLOAD_LIMITS, heavy_operations, release_connection, spool
from keel.documents import loading, service
from keel.documents.embeddings import embed_content
from keel.documents.schemas import (
    BulkLoadResult,
    DocumentCreate,
    DocumentPublic,
    DocumentSearch,
    DocumentSearchResult,
)
from keel.documents.service import VectorLayout
from keel.orgs.deps import ORG_ERRORS, ActiveOrg

router = KeelRouter(
    prefix="/orgs/{org_id}/documents", tags=["documents"], route_class=IdempotentRoute
)

AUTH: Responses = {**SIGNED_IN_ERRORS, **ORG_ERRORS}
WRITE: Responses = {403: {"description": "Your role may not add documents (viewers)"}}
MISSING: Responses = {
    404: {"description": "No such organization (or not a member), or no such document in it"}
}
# What the schema can't say: the dimension is the table's, read from the catalog.
INVALID: Responses = {
    422: {
        "description": "Not valid; see `errors`. Besides the schema: a vector must have "
        "exactly the table's dimension (EMBEDDING_DIMENSION) and not be zero at half precision."
    }
}
INVALID_SEARCH: Responses = {
    422: {
        "description": f"{INVALID[422]['description']} Exactly one of `vector` and `text`; "
        "`limit` at most VECTOR_SEARCH_MAX_LIMIT."
    }
}


async def get_layout(request: Request, session: SessionDep) -> VectorLayout:
    """The table's dimension and HNSW indexes, read from the catalog once per process."""
    layout: VectorLayout | None = getattr(request.app.state, "vector_layout", None)
    if layout is None:
        layout = request.app.state.vector_layout = await service.load_layout(session)
    return layout


async def upload_slot(request: Request, actor: ActiveOrg) -> AsyncIterator[None]:
    """One of the caller's (and the process's) heavy-operation slots, for the request."""
    with heavy_operations(request).slot(actor.user_id):
        yield


LayoutDep = Annotated[VectorLayout, Depends(get_layout)]
UploadSlot = Annotated[None, Depends(upload_slot, scope="function")]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DocumentPublic,
    responses={
        **AUTH,
        **WRITE,
        **INVALID,
        **IDEMPOTENCY_ERRORS,
        503: {"description": "No `embedding`, and no embedding model fits the table"},
    },
    summary="Store a document: its own embedding, or the server embeds its content",
)
async def create_document(
    request: Request,
    data: DocumentCreate,
    session: SessionDep,
    actor: ActiveOrg,
    services: ServicesDep,
    layout: LayoutDep,
    key: DeferredIdempotencyDep,
) -> Any:
    service.require_writer(actor)  # before the model runs for someone who may not write
    embedding = None
    if data.embedding is None:
        # The model runs before the request's transaction opens: no connection waits on it.
        await release_connection(session)
        embedding = await embed_content(services.embedder, layout, data.content)
    await key.check(hashlib.sha256(await request.body()).digest())
    return await service.create_document(session, actor, layout, data, embedding)


BULK_BODY: dict[str, Any] = {
    "required": True,
    "description": "One document per line, each shaped like `DocumentCreate`. All lines are "
    "stored or none: a bad line is a 422 listing every bad line (1-based) and why. Past "
    "DOCUMENTS_BULK_MAX_ROWS documents or DOCUMENTS_BULK_MAX_BYTES bytes: 413.",
    "content": {
        media_type: {"schema": {"$ref": "#/components/schemas/DocumentCreate"}}
        for media_type in loading.NDJSON_MEDIA_TYPES
    },
}


@router.post(
    "/bulk",
    status_code=status.HTTP_201_CREATED,
    response_model=BulkLoadResult,
    responses={
        **AUTH,
        **WRITE,
        **INVALID,
        **UPLOAD_LIMITS,
        **IDEMPOTENCY_ERRORS,
        415: {"description": "The body is not NDJSON"},
    },
    summary="Store many documents from NDJSON, all or none (binary COPY)",
    openapi_extra={"requestBody": BULK_BODY},
)
async def bulk_load(
    request: Request,
    session: SessionDep,
    actor: ActiveOrg,
    services: ServicesDep,
    layout: LayoutDep,
    _slot: UploadSlot,
    key: DeferredIdempotencyDep,
) -> Any:
    service.require_writer(actor)  # before a byte of the upload is read
    loading.check_ndjson(request.headers.get("content-type"))
    # The whole body first, with no connection held: a slow client must not hold one.
    await release_connection(session)
    async with spool(request.stream()) as body:
        await key.check(body.sha256)
        loaded = await loading.load_ndjson(
            session,
            actor,
            layout,
            body.chunks(),
            max_rows=services.settings.documents_bulk_max_rows,
            max_bytes=services.settings.documents_bulk_max_bytes,
        )
    return BulkLoadResult(
        inserted=len(loaded.ids), ids=loaded.ids, embeddings_pending=len(loaded.pending)
    )


@router.post(
    "/search",
    response_model=DocumentSearchResult,
    responses={
        **AUTH,
        **INVALID_SEARCH,
        503: {"description": "`text` given but no embedding model is set up"},
    },
    summary="The organization's nearest documents to a vector or a text, nearest first",
)
async def search_documents(
    search: DocumentSearch,
    session: SessionDep,
    actor: ActiveOrg,
    services: ServicesDep,
    layout: LayoutDep,
) -> Any:
    return await service.search_documents(
        session, actor, layout, services.settings, search, services.embedder
    )


@router.get(
    "/{document_id:uuid}",
    response_model=DocumentPublic,
    responses={**AUTH, **MISSING},
    summary="Read a document (without its vector)",
)
async def read_document(document_id: UUID, session: SessionDep, actor: ActiveOrg) -> Any:
    return await service.read_document(session, actor, document_id)


@router.delete(
    "/{document_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **AUTH,
        **MISSING,
        403: {"description": "Your role may not delete documents (members, viewers)"},
    },
    summary="Delete a document",
)
async def delete_document(document_id: UUID, session: SessionDep, actor: ActiveOrg) -> None:
    await service.delete_document(session, actor, document_id)
