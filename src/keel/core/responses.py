"""Serialize once: hot reads answer with JSON bytes built straight from database rows.

FastAPI validates and serializes an endpoint's return value against its
`response_model`; an endpoint that returns a `Response` skips both. Hot reads build
plain dicts shaped like their public schema (which stays the `response_model`, so
OpenAPI is unchanged) and hand them to `json_response`.
"""

from __future__ import annotations

from typing import Any, Final
from uuid import UUID

import orjson
from fastapi import Response

# UTC datetimes as "...Z", as Pydantic writes them.
JSON_OPTIONS: Final = orjson.OPT_UTC_Z


def _default(value: object) -> str:
    # asyncpg's UUIDs subclass uuid.UUID, which orjson only takes exactly.
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_response(content: Any, carried: Response | None = None) -> Response:
    """`content` as an application/json response, serialized by orjson in one pass.

    `carried` is the endpoint's injected `Response`: headers that dependencies set on it
    (RateLimit-*) travel on, since FastAPI ignores it once an endpoint returns its own.
    """
    response = Response(
        orjson.dumps(content, default=_default, option=JSON_OPTIONS),
        media_type="application/json",
    )
    if carried is not None:
        response.raw_headers.extend(carried.raw_headers)
    return response
