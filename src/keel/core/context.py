"""Per-request context shared by middleware, logging and error rendering."""

from contextvars import ContextVar, Token

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served, if any."""
    return _request_id.get()


def bind_request_id(value: str) -> Token[str | None]:
    """Bind a request id for the current task; undo it with `unbind_request_id`."""
    return _request_id.set(value)


def unbind_request_id(token: Token[str | None]) -> None:
    _request_id.reset(token)
