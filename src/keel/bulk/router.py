"""Bulk imports: posts into an organization, accounts for platform administrators.

- `POST /api/v1/orgs/{org_id}/imports/{posts,json}`: owners and admins of the
  organization (`imports.run`), checked before the body is read. Posts land in the
  organization; their authors must be its members.
- `GET /api/v1/orgs/{org_id}/imports[/{import_id}]`: the organization's import records
  (`imports.view`).
- `POST /api/v1/admin/import/users`: platform administrators (accounts are global).

Files are streamed (JSON array, NDJSON or CSV), COPYed into a staging table and landed
with one statement (`MERGE`, or `INSERT ... ON CONFLICT` on Citus). `atomic=true` (the
default) imports nothing unless every row is valid; the report says what happened to
each row either way.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from keel.bulk import history, service
from keel.bulk.formats import MEDIA_TYPES, format_for_media_type
from keel.bulk.schemas import (
    ImportPage,
    ImportRecordDetail,
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
    IdempotentRoute,
)
from keel.core.routing import KeelRouter, Responses
from keel.core.uploads import UPLOAD_LIMITS, heavy_operations, release_connection, spool
from keel.orgs.deps import ORG_ERRORS, ActiveOrg
from keel.orgs.permissions import OrgActor

org_router = KeelRouter(
    prefix="/orgs/{org_id}/imports", tags=["imports"], route_class=IdempotentRoute
)
admin_router = KeelRouter(prefix="/admin/import", tags=["admin"], route_class=IdempotentRoute)
ROW_LEVEL_VALIDATION = "x-row-level-validation"

_UPLOAD_ERRORS: Responses = {
    **SIGNED_IN_ERRORS,
    **UPLOAD_LIMITS,
    409: IDEMPOTENCY_ERRORS[409],
    413: {"description": "The body or the row count is over its cap"},
    415: {"description": "Not JSON, NDJSON or CSV"},
    422: {
        "description": "Malformed file, or an atomic import with rejected rows: nothing was "
        "imported; the `report` member lists the rejected rows"
    },
}
ADMIN_IMPORT_ERRORS: Responses = {**_UPLOAD_ERRORS, 403: {"description": "Administrators only"}}
ORG_IMPORT_ERRORS: Responses = {
    **_UPLOAD_ERRORS,
    **ORG_ERRORS,
    403: {"description": "Your role may not run imports (owners and admins may)"},
}
VIEW_ERRORS: Responses = {
    **SIGNED_IN_ERRORS,
    **ORG_ERRORS,
    403: {"description": "Your role may not see imports (owners and admins may)"},
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


async def import_runner(actor: ActiveOrg) -> OrgActor:
    """The caller, if their role may run imports here: checked before the body is read
    (these endpoints read it themselves, after every dependency)."""
    service.may_run_imports(actor)
    return actor


ImportRunner = Annotated[OrgActor, Depends(import_runner)]


async def admin_upload_slot(request: Request, admin: AdminViewer) -> AsyncIterator[None]:
    """One of the caller's (and the process's) heavy-operation slots, for the request."""
    with heavy_operations(request).slot(admin.user_id):
        yield


async def org_upload_slot(request: Request, actor: ImportRunner) -> AsyncIterator[None]:
    with heavy_operations(request).slot(actor.user_id):
        yield


AdminUploadSlot = Annotated[None, Depends(admin_upload_slot, scope="function")]
OrgUploadSlot = Annotated[None, Depends(org_upload_slot, scope="function")]


@admin_router.post(
    "/users",
    response_model=ImportReport,
    responses=ADMIN_IMPORT_ERRORS,
    openapi_extra=_file_body(UserImportRow),
    summary="Import accounts (plain passwords are hashed with argon2id)",
)
async def import_users(
    request: Request,
    session: SessionDep,
    admin: AdminViewer,
    _slot: AdminUploadSlot,
    key: DeferredIdempotencyDep,
    on_conflict: ConflictQuery = OnConflict.ERROR,
    atomic: AtomicQuery = True,
) -> ImportReport:
    services = services_of(request)
    fmt = format_for_media_type(request.headers.get("content-type"))
    # The whole file first, with no connection held: a slow client must not hold one.
    await release_connection(session)
    async with spool(request.stream()) as body:
        await key.check(body.sha256)
        return await service.import_file(
            session,
            Kind.USERS,
            body.chunks(),
            fmt,
            service.ImportOptions(on_conflict, atomic),
            passwords=services.passwords,
            limits=service.ImportLimits.from_settings(services.settings),
        )


@org_router.post(
    "/posts",
    response_model=ImportReport,
    responses=ORG_IMPORT_ERRORS,
    openapi_extra=_file_body(PostImportRow),
    summary="Import posts into the organization (authors: members, by id, username or email)",
)
async def import_posts(
    request: Request,
    session: SessionDep,
    actor: ImportRunner,
    _slot: OrgUploadSlot,
    key: DeferredIdempotencyDep,
    on_conflict: ConflictQuery = OnConflict.ERROR,
    atomic: AtomicQuery = True,
) -> ImportReport:
    services = services_of(request)
    fmt = format_for_media_type(request.headers.get("content-type"))
    await release_connection(session)
    async with spool(request.stream()) as body:
        await key.check(body.sha256)
        return await service.import_posts_file(
            session,
            actor,
            body.chunks(),
            fmt,
            service.ImportOptions(on_conflict, atomic),
            passwords=services.passwords,
            limits=service.ImportLimits.from_settings(services.settings),
        )


@org_router.post(
    "/json",
    response_model=ImportReport,
    responses={
        **ORG_IMPORT_ERRORS,
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
    actor: ImportRunner,
    _slot: OrgUploadSlot,
    key: DeferredIdempotencyDep,
    on_conflict: ConflictQuery = OnConflict.ERROR,
    atomic: AtomicQuery = True,
) -> ImportReport:
    # Read here, not by FastAPI: only after the caller has a slot, with no connection held.
    # The document is parsed whole (JSON_TABLE takes it as one value); the slots bound
    # how many such documents a process holds.
    services = services_of(request)
    await release_connection(session)
    raw = await request.body()
    await key.check(hashlib.sha256(raw).digest())
    return await service.import_posts_json(
        session,
        actor,
        _json_table_spec(raw),
        service.ImportOptions(on_conflict, atomic),
        limits=service.ImportLimits.from_settings(services.settings),
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


@org_router.get(
    "",
    response_model=ImportPage,
    responses=VIEW_ERRORS,
    summary="The organization's imports, newest first",
)
async def list_imports(
    session: SessionDep,
    actor: ActiveOrg,
    before: Annotated[
        UUID | None, Query(description="`next` of the previous page: older imports.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ImportPage:
    return await history.list_imports(session, actor, before, limit)


@org_router.get(
    "/{import_id:uuid}",  # a typed segment: /posts and /json never match it
    response_model=ImportRecordDetail,
    responses={**VIEW_ERRORS, 404: {"description": "No such import in this organization"}},
    summary="One import: its counts and first rejected rows",
)
async def get_import(import_id: UUID, session: SessionDep, actor: ActiveOrg) -> ImportRecordDetail:
    return await history.get_import(session, actor, import_id)


router = KeelRouter()
router.include_router(org_router)
router.include_router(admin_router)
