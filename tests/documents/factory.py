"""Random vectors and documents, stored through the real service and repository."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any
from uuid import UUID

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from keel.app import create_app
from keel.config import Settings
from keel.core.ids import uuid7
from keel.documents import repository
from keel.documents.models import Document
from keel.documents.schemas import DocumentCreate, metadata_json
from keel.documents.service import create_document
from keel.users.models import User
from tests.orgs.factory import acting_in

Floats = npt.NDArray[np.float32]


def docs_url(org_id: UUID | str) -> str:
    """The organization's documents; a user's personal organization has the user's id."""
    return f"/api/v1/orgs/{org_id}/documents"


def unit_vectors(count: int, dimension: int, *, seed: int = 0) -> Floats:
    """`count` random unit vectors, in float32 as the database stores them."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dimension))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def as_list(vector: Floats) -> list[float]:
    return [float(x) for x in vector]


async def dimension(session: AsyncSession) -> int:
    return (await repository.load_layout(session)).dimension


async def make_document(
    session: AsyncSession,
    owner: User,
    embedding: Floats,
    content: str = "A document.",
    metadata: dict[str, Any] | None = None,
    org_id: UUID | None = None,
) -> Document:
    """A document `owner` stores in `org_id` (their personal organization by default)."""
    data = DocumentCreate(content=content, metadata=metadata or {}, embedding=as_list(embedding))
    layout = await repository.load_layout(session)
    return await create_document(session, acting_in(owner, org_id), layout, data)


async def copy_documents(
    session: AsyncSession,
    owner: User,
    vectors: Floats,
    metadata: Sequence[dict[str, Any]] | None = None,
    org_id: UUID | None = None,
) -> list[UUID]:
    """Many documents at once, by the bulk endpoint's COPY (no HTTP body size limit), in
    `org_id` (the owner's personal organization by default)."""
    ids = [uuid7() for _ in vectors]
    tenant_id = org_id or owner.id
    records = [
        (
            tenant_id,
            id_,
            owner.id,
            f"doc {i}",
            metadata_json(metadata[i] if metadata else {}),
            vector,
        )
        for i, (id_, vector) in enumerate(zip(ids, vectors, strict=True))
    ]
    async with repository.copy_connection(session) as driver:
        await repository.copy_documents(driver, records)
    return ids


def ndjson(documents: Sequence[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(document) + b"\n" for document in documents)


def as_document(vector: Floats, **fields: Any) -> dict[str, Any]:
    return {"embedding": as_list(vector), **fields}


@contextlib.asynccontextmanager
async def separate_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    """A separate app with its lifespan run: real commits, its own pool and settings."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            yield application, http
