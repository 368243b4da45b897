"""Posts of an organization: `/api/v1/orgs/{org_id}/posts`. Keyset pages, offsets when asked."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import Query, Response, status

from keel.core.db import SessionDep
from keel.core.deps import SIGNED_IN_ERRORS, ServicesDep
from keel.core.errors import BadRequest
from keel.core.idempotency.deps import IDEMPOTENCY_ERRORS, IdempotencyDep, IdempotentRoute
from keel.core.pagination import MAX_CURSOR_LENGTH
from keel.core.responses import json_response
from keel.core.routing import KeelRouter, Responses
from keel.core.types import IsoDatetime
from keel.orgs.deps import ORG_ERRORS, ActiveOrg
from keel.posts import service
from keel.posts.schemas import PostCreate, PostPage, PostPublic, PostUpdate

router = KeelRouter(prefix="/orgs/{org_id}/posts", tags=["posts"], route_class=IdempotentRoute)

MAX_LIMIT = 100
MAX_OFFSET = 100_000
AUTH: Responses = {
    **SIGNED_IN_ERRORS,
    **ORG_ERRORS,
    403: {"description": "Your role in this organization does not allow it"},
}
MISSING: Responses = {
    404: {"description": "No such organization or post (or a draft you may not see)"}
}
NOT_YOURS: Responses = {
    403: {"description": "Not yours, and your role may not change others' posts"}
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=PostPublic,
    responses={**AUTH, **IDEMPOTENCY_ERRORS},
    summary="Write a post in the organization (the author is you)",
)
async def create_post(
    data: PostCreate, session: SessionDep, actor: ActiveOrg, _key: IdempotencyDep
) -> Any:
    return await service.create_post(session, actor, data)


@router.get(
    "",
    response_model=PostPage,
    responses={**AUTH, 400: {"description": "Malformed or tampered cursor"}},
    summary="List the organization's posts, newest first",
)
async def list_posts(
    actor: ActiveOrg,
    services: ServicesDep,
    response: Response,
    author_id: UUID | None = None,
    published: bool | None = None,
    created_after: IsoDatetime | None = None,
    created_before: IsoDatetime | None = None,
    cursor: Annotated[
        str | None,
        Query(max_length=MAX_CURSOR_LENGTH, description="`next_cursor` of the previous page."),
    ] = None,
    offset: Annotated[
        int | None, Query(ge=0, le=MAX_OFFSET, description="Offset paging instead of cursors.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
) -> Response:
    if cursor is not None and offset is not None:
        raise BadRequest("Use either `cursor` or `offset`, not both.")
    cursors = services.post_cursors
    filters = service.PostFilters(author_id, published, created_after, created_before)
    after = cursors.decode(cursor) if cursor else None
    rows = await service.list_posts(
        services.db.reads, actor, filters, limit=limit + 1, after=after, offset=offset or 0
    )
    page, more = rows[:limit], len(rows) > limit
    next_cursor = None
    if more and offset is None:
        next_cursor = cursors.encode(page[-1]["created_at"], page[-1]["id"])
    return json_response(
        {"items": page, "limit": limit, "next_cursor": next_cursor, "offset": offset}, response
    )


@router.get(
    "/{post_id:uuid}",
    response_model=PostPublic,
    responses={**AUTH, **MISSING},
    summary="Read a post",
)
async def read_post(
    post_id: UUID, actor: ActiveOrg, services: ServicesDep, response: Response
) -> Response:
    return json_response(await service.read_post(services.db.reads, actor, post_id), response)


@router.patch(
    "/{post_id:uuid}",
    response_model=PostPublic,
    responses={**AUTH, **MISSING, **NOT_YOURS},
    summary="Change a post (its author, or an admin of the organization)",
)
async def update_post(
    post_id: UUID, changes: PostUpdate, session: SessionDep, actor: ActiveOrg
) -> Any:
    return await service.update_post(session, actor, post_id, changes)


@router.delete(
    "/{post_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**AUTH, **MISSING, **NOT_YOURS},
    summary="Delete a post (its author, or an admin of the organization)",
)
async def delete_post(post_id: UUID, session: SessionDep, actor: ActiveOrg) -> None:
    await service.delete_post(session, actor, post_id)
