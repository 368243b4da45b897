"""Request and response shapes for documents and vector search.

A vector is a JSON array of finite numbers: no strings, booleans, nulls or nested arrays,
no NaN or Infinity (Python's JSON parser accepts those literals; they are refused here).
Its length must equal the table's dimension; that check needs the catalog and is made by
the service.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Annotated, Any, Literal, Self
from uuid import UUID

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from keel.core.types import DbText
from keel.documents.models import Metric

CONTENT_MAX = 100_000
METADATA_MAX_BYTES = 16_384
METADATA_MAX_DEPTH = 16
QUERY_TEXT_MAX = 2_000
# pgvector's own cap on a vector's length, checked before looking at the components.
VECTOR_MAX_DIMENSIONS = 16_000
# `embedding_half` holds every vector at half precision, so components must fit in it.
HALF_MAX = 65_504.0
# Which HNSW index a search walks: on `embedding` or on `embedding_half`.
Precision = Literal["full", "half"]


def _vector(value: object) -> object:
    if not isinstance(value, list):
        raise ValueError("expected an array of numbers")
    if not value:
        raise ValueError("the vector is empty")
    if len(value) > VECTOR_MAX_DIMENSIONS:
        raise ValueError(f"a vector has at most {VECTOR_MAX_DIMENSIONS} components")
    for position, component in enumerate(value):
        # bool is an int to Python, and pydantic would read "1.5" as a number.
        if type(component) is not float and type(component) is not int:
            raise ValueError(f"component {position} is not a number")
    try:
        components = np.array(value, dtype=np.float64)
    except OverflowError:
        raise ValueError("a component is too large") from None
    if not np.isfinite(components).all():
        raise ValueError("components must be finite (no NaN or Infinity)")
    if np.abs(components).max() > HALF_MAX:
        raise ValueError(f"components must lie within ±{HALF_MAX:g} (half precision's range)")
    # A zero vector has no direction: cosine distances to it are NaN.
    if not components.astype(np.float16).any():
        raise ValueError("the vector is zero (at half precision)")
    return value


Vector = Annotated[
    list[float],
    BeforeValidator(_vector),
    Field(
        min_length=1,
        max_length=VECTOR_MAX_DIMENSIONS,
        description="Finite numbers within ±65504, not all zero; exactly as many as the "
        "table's dimension (EMBEDDING_DIMENSION, 384 by default).",
    ),
]


def _storable(value: str) -> str:
    # JSON's \ud800 escapes decode to lone surrogates, which UTF-8 (and so PostgreSQL) can't hold.
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("the text holds an unpaired surrogate") from None
    return value


def _json_value(value: Any, depth: int = 0) -> None:
    """Refuse what PostgreSQL's jsonb can't store: NUL, lone surrogates, NaN, Infinity."""
    if depth > METADATA_MAX_DEPTH:
        raise ValueError(f"nested more than {METADATA_MAX_DEPTH} levels deep")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("a string holds a NUL character")
        _storable(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite (no NaN or Infinity)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _json_value(key, depth + 1)
            _json_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _json_value(item, depth + 1)


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    _json_value(value)
    if len(metadata_json(value).encode()) > METADATA_MAX_BYTES:
        raise ValueError(f"larger than {METADATA_MAX_BYTES} bytes as JSON")
    return value


def metadata_json(value: dict[str, Any]) -> str:
    """The JSON text stored in the jsonb column (compact, non-ASCII kept as is)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


Metadata = Annotated[
    dict[str, Any],
    AfterValidator(_metadata),
    Field(description=f"Any JSON object, at most {METADATA_MAX_BYTES} bytes."),
]
Content = Annotated[DbText, Field(max_length=CONTENT_MAX), AfterValidator(_storable)]


_VECTOR_SCHEMA = TypeAdapter(Vector).json_schema()


class DocumentCreate(BaseModel):
    """One document. The owner is always the caller; `id` and `owner_id` are refused.

    Without `embedding`, the server embeds `content` with its own model: at once for
    `POST /documents`, through the job queue for bulk loads.
    """

    model_config = ConfigDict(extra="forbid")

    content: Content = ""
    metadata: Metadata = Field(default_factory=dict)
    # Optional, but never null (see below): the published schema is the vector's alone.
    embedding: Annotated[Vector | None, WithJsonSchema(_VECTOR_SCHEMA)] = Field(
        default=None, description="Omit to have the server embed `content` (EMBEDDER)."
    )

    @field_validator("embedding", mode="before")
    @classmethod
    def _no_null_vector(cls, value: object) -> object:
        if value is None:  # only a value sent: leaving the field out is how to ask
            raise ValueError("expected an array of numbers; leave `embedding` out instead")
        return value

    @model_validator(mode="after")
    def _something_to_embed(self) -> Self:
        if self.embedding is None and not self.content.strip():
            raise ValueError("give `embedding`, or a non-blank `content` for the server to embed")
        return self


class DocumentPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    owner_id: UUID
    content: str
    metadata: dict[str, Any] = Field(validation_alias="metadata_")
    created_at: datetime
    updated_at: datetime
    embedding_pending: bool = Field(
        default=False,
        description="True while the server has yet to embed `content` (a bulk-loaded "
        "document without `embedding`); such a document is not found by search until then.",
    )


class BulkLoadResult(BaseModel):
    inserted: int
    ids: list[UUID] = Field(description="The new documents' ids, in the order of the lines.")
    embeddings_pending: int = Field(
        default=0,
        description="How many of them came without `embedding`: the job queue embeds their "
        "`content`; each reads `embedding_pending: true` until then.",
    )


QueryText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=QUERY_TEXT_MAX, pattern=r"\S"),
    AfterValidator(_storable),
]


class DocumentSearch(BaseModel):
    """Exactly one of `vector` and `text`."""

    model_config = ConfigDict(extra="forbid")

    vector: Vector | None = None
    text: QueryText | None = Field(
        default=None, description="Embedded by the server's model; 503 when none is set up."
    )
    metric: Metric | None = Field(
        default=None,
        description="Default: the indexed metric (VECTOR_METRIC). A metric without an HNSW "
        "index is still answered, by an exact scan.",
    )
    limit: Annotated[StrictInt, Field(ge=1, description="At most VECTOR_SEARCH_MAX_LIMIT.")] = 10
    ef_search: Annotated[
        StrictInt | None,
        Field(ge=1, le=1000, description="HNSW candidate list size (default HNSW_EF_SEARCH)."),
    ] = None
    filter: Metadata | None = Field(
        default=None, description="Only documents whose metadata contains this object (`@>`)."
    )
    exact: StrictBool = Field(
        default=False, description="Scan every candidate instead of the index (exact recall)."
    )
    precision: Precision | None = Field(
        default=None,
        description="Which HNSW index to walk when both exist: `full` (embedding) or `half` "
        "(embedding_half, re-ranked at full precision). Default: VECTOR_INDEX's choice.",
    )

    @model_validator(mode="after")
    def _one_query(self) -> Self:
        if (self.vector is None) == (self.text is None):
            raise ValueError("give exactly one of `vector` and `text`")
        return self


class DocumentHit(BaseModel):
    id: UUID
    owner_id: UUID
    content: str
    metadata: dict[str, Any]
    created_at: datetime
    distance: float = Field(
        description="pgvector's distance at full precision (smaller is nearer); for "
        "inner_product it is the negative inner product."
    )
    score: float | None = Field(
        description="cosine: 1 - distance; inner_product: the inner product; else null."
    )


class DocumentSearchResult(BaseModel):
    items: list[DocumentHit]
    metric: Metric
    limit: int
    column: Literal["embedding", "embedding_half"] = Field(
        description="The column the nearest candidates were chosen by."
    )
    index: str | None = Field(
        description="The HNSW index the query is written for; null for an exact scan. The "
        "planner may still prefer an exact plan for a small organization or a very "
        "selective filter. When the index walk returns fewer than `limit` documents (it "
        "stops after HNSW_MAX_SCAN_TUPLES), the search is answered by an exact scan "
        "instead, and this is null."
    )
    exact: bool
    ef_search: int | None
    iterative_scan: str | None = Field(
        description="pgvector's iterative scan mode: every index search filters by the "
        "organization, so this is set whenever `index` is."
    )
