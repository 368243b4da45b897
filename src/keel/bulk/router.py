"""Bulk imports for administrators: `/api/v1/admin/import/{users,posts,json}`.

Files are streamed (JSON array, NDJSON or CSV), COPYed into a staging table and merged
with one `MERGE ... RETURNING`. `atomic=true` (the default) imports nothing unless every
row is valid; the report says what happened to each row either way.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from keel.bulk import service
from keel.bulk.formats import MEDIA_TYPES, format_for_media_type
from keel.bulk.schemas import (
    ImportReport,
    JsonTableImport,
    Kind,
    OnConflict,
    PostImportRow,
    UserImportRow,
)
from keel.core.db import SessionDep
from keel.core.deps import SIGNED_IN_ERRORS, AdminViewer, services_of
from keel.core.idempotency.deps import (
    IDEMPOTENCY_ERRORS,
    DeferredIdempotencyDep,
    Idempotency,
    IdempotentRoute,
)
from keel.core.routing import KeelRouter, Responses
from keel.core.uploads import UPLOAD_LIMITS, heavy_operations, release_connection, spool

router = KeelRouter(prefix="/admin/import", tags=["admin"], route_class=IdempotentRoute)
ROW_LEVEL_VALIDATION = "x-row-level-validation"

IMPORT_ERRORS: Responses = {
    **SIGNED_IN_ERRORS,
    403: {"description": "Administrators only"},
    **UPLOAD_LIMITS,
    409: IDEMPOTENCY_ERRORS[409],
    413: {"description": "The body or the row count is over its cap"},
    415: {"description": "Not JSON, NDJSON or CSV"},
    422: {
        "description": "Malformed file, or an atomic import with rejected rows: nothing was "
        "imported; the `report` member lists the rejected rows"
    },
}
ConflictQuery = Annotated[
    OnConflict, Query(description="What to do with a row that matches a stored one.")
]
AtomicQuery = Annotated[bool, Query(description="true: import nothing if any row is rejected.")]


JSON_TABLE_SCHEMA = JsonTableImport.model_json_schema(ref_template="#/components/schemas/{model}")


def _file_body(row_model: type[Any]) -> dict[str, Any]:
    """The request body in OpenAPI: the same rows as a JSON array, NDJSON or CSV."""
    row = row_model.model_json_schema(ref_template="#/components/schemas/{model}")
    text = {"schema": {"type": "string"}}
    content = {media_type: text for media_type in MEDIA_TYPES}
    content["application/json"] = {"schema": {"type": "array", "items": row}}
    return {
        "requestBody": {"required": True, "content": content},
        # Rows that break this schema are reported one by one (a 200 with atomic=false).
        ROW_LEVEL_VALIDATION: True,
    }


async def upload_slot(request: Request, admin: AdminViewer) -> AsyncIterator[None]:
    """One of the caller's (and the process's) heavy-operation slots, for the request."""
    with heavy_operations(request).slot(admin.user_id):
        yield


UploadSlot = Annotated[None, Depends(upload_slot, scope="function")]


async def _import(
    request: Request,
    session: SessionDep,
    key: Idempotency,
    kind: Kind,
    on_conflict: OnConflict,
    atomic: bool,
) -> ImportReport:
    services = services_of(request)
    fmt = format_for_media_type(request.headers.get("content-type"))
    # The whole file first, with no connection held: a slow client must not hold one.
    await release_connection(session)
    async with spool(request.stream()) as body:
        await key.check(body.sha256)
        return await service.import_file(
            session,
            kind,
            body.chunks(),
            fmt,
            service.ImportOptions(on_conflict, atomic),
            passwords=services.passwords,
            limits=service.ImportLimits.from_settings(services.settings),
        )


@router.post(
    "/users",
    response_model=ImportReport,
    responses=IMPORT_ERRORS,
    openapi_extra=_file_body(UserImportRow),
    summary="Import accounts (plain passwords are hashed with argon2id)",
)
async def import_users(
    request: Request,
    session: SessionDep,
    admin: AdminViewer,
    _slot: UploadSlot,
    key: DeferredIdempotencyDep,
    on_conflict: ConflictQuery = OnConflict.ERROR,
    atomic: AtomicQuery = True,
) -> ImportReport:
    return await _import(request, session, key, Kind.USERS, on_conflict, atomic)


@router.post(
    "/posts",
    response_model=ImportReport,
    responses=IMPORT_ERRORS,
    openapi_extra=_file_body(PostImportRow),
    summary="Import posts (authors named by id, username or email)",
)
async def import_posts(
    request: Request,
    session: SessionDep,
    admin: AdminViewer,
    _slot: UploadSlot,
    key: DeferredIdempotencyDep,
    on_conflict: ConflictQuery = OnConflict.ERROR,
    atomic: AtomicQuery = True,
) -> ImportReport:
    return await _import(request, session, key, Kind.POSTS, on_conflict, atomic)


@router.post(
    "/json",
    response_model=ImportReport,
    responses={
        **IMPORT_ERRORS,
        422: {
            "description": "A path the server can't parse, a path that matches nothing, or "
            "an atomic import with rejected rows (type mismatches name their path)"
        },
    },
    summary="Import posts from any JSON document, shredded server-side by JSON_TABLE",
    openapi_extra={
        ROW_LEVEL_VALIDATION: True,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": JSON_TABLE_SCHEMA}},
        },
    },
)
async def import_json(
    request: Request,
    session: SessionDep,
    admin: AdminViewer,
    _slot: UploadSlot,
    key: DeferredIdempotencyDep,
    on_conflict: ConflictQuery = OnConflict.ERROR,
    atomic: AtomicQuery = True,
) -> ImportReport:
    # Read here, not by FastAPI: only after the caller has a slot, with no connection held.
    # The document is parsed whole (JSON_TABLE takes it as one value); the slots bound
    # how many such documents a process holds.
    await release_connection(session)
    raw = await request.body()
    await key.check(hashlib.sha256(raw).digest())
    spec = _json_table_spec(raw)
    return await service.import_json_table(
        session,
        spec,
        service.ImportOptions(on_conflict, atomic),
        limits=service.ImportLimits.from_settings(services_of(request).settings),
    )


def _json_table_spec(raw: bytes) -> JsonTableImport:
    """The body as a JsonTableImport, or the 422 FastAPI would have answered."""
    try:
        return JsonTableImport.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from None
