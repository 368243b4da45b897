"""An APIRouter whose paths answer with and without a trailing slash, without redirects."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

# The `responses=` mapping of a route: status code -> OpenAPI response object.
Responses = dict[int | str, dict[str, Any]]


class KeelRouter(APIRouter):
    """Registers every path twice: as written, and with the trailing slash toggled.

    The app runs with `redirect_slashes=False`, so `/posts` and `/posts/` are both
    served directly; only the written form appears in the OpenAPI schema.
    """

    def add_api_route(self, path: str, endpoint: Any, **kwargs: Any) -> None:
        super().add_api_route(path, endpoint, **kwargs)
        alternate = path[:-1] if path.endswith("/") else path + "/"
        if alternate or self.prefix:
            hidden = {**kwargs, "include_in_schema": False}
            hidden.pop("operation_id", None)
            super().add_api_route(alternate, endpoint, **hidden)
