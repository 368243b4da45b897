"""RFC 9457 problem details: Keel's one error type and the handlers that render every error."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from keel.core.context import current_request_id

PROBLEM_JSON = "application/problem+json"
log = structlog.get_logger(__name__)

# SQLSTATE classes that mean "the client's data conflicts with what is stored".
UNIQUE_VIOLATION = "23505"
FOREIGN_KEY_VIOLATION = "23503"
DATA_EXCEPTION_CLASS = "22"  # SQLSTATE class: a value the database can't hold
QUERY_CANCELED = "57014"  # e.g. statement_timeout
DATABASE_RETRY_AFTER_SECONDS = 2


class KeelError(Exception):
    """Base of every domain error. Services raise these; never HTTP exceptions."""

    status_code: int = 500
    slug: str = "internal-error"
    title: str = "Internal Server Error"

    def __init__(
        self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extensions: Any
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers
        self.extensions = extensions


class BadRequest(KeelError):
    status_code, slug, title = 400, "bad-request", "Bad Request"


class NotFound(KeelError):
    status_code, slug, title = 404, "not-found", "Not Found"


class Unauthorized(KeelError):
    """Missing or invalid credentials; always carries a Bearer challenge."""

    status_code, slug, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"}, **extensions)


class Forbidden(KeelError):
    status_code, slug, title = 403, "forbidden", "Forbidden"


class Conflict(KeelError):
    status_code, slug, title = 409, "conflict", "Conflict"


class ContentTooLarge(KeelError):
    """A body, or what it holds (rows, documents), past a configured cap."""

    status_code, slug, title = 413, "content-too-large", "Content Too Large"


class UnsupportedMediaType(KeelError):
    status_code, slug, title = 415, "unsupported-media-type", "Unsupported Media Type"


class TooManyRequests(KeelError):
    status_code, slug, title = 429, "rate-limited", "Too Many Requests"


class ServiceUnavailable(KeelError):
    status_code, slug, title = 503, "service-unavailable", "Service Unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    """The database can't be reached, or dropped the connection mid-request."""

    slug = "database-unavailable"

    def __init__(self, detail: str = "The database is unavailable; retry shortly.") -> None:
        super().__init__(detail, headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})


# Failures to reach PostgreSQL, as raised by the driver or the socket under it. SQLAlchemy
# passes these through untouched when they happen at connect time.
DISCONNECT_ERRORS: tuple[type[Exception], ...] = (
    ConnectionError,
    TimeoutError,
    FileNotFoundError,  # the server's unix socket is gone: it is stopped
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, incl. "connection does not exist"
    asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.AdminShutdownError,  # 57P01
    asyncpg.CrashShutdownError,  # 57P02
)
DISCONNECT_SQLSTATE_PREFIXES = ("08", "57P")


def is_disconnect(exc: BaseException) -> bool:
    """Did `exc` come from losing (or never getting) a database connection?"""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        return _sqlstate(exc).startswith(DISCONNECT_SQLSTATE_PREFIXES) or isinstance(
            exc.orig, DISCONNECT_ERRORS
        )
    return isinstance(exc, DISCONNECT_ERRORS)


def problem_response(
    status: int,
    *,
    title: str | None = None,
    detail: str | None = None,
    type_: str = "about:blank",
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """Build an `application/problem+json` response carrying the request id."""
    body: dict[str, Any] = {
        "type": type_,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extensions)
    body["request_id"] = current_request_id()
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def problem_type(slug: str) -> str:
    return f"urn:keel:problem:{slug}"


async def _keel_error(request: Request, exc: KeelError) -> JSONResponse:
    return problem_response(
        exc.status_code,
        title=exc.title,
        detail=exc.detail,
        type_=problem_type(exc.slug),
        instance=request.url.path,
        headers=exc.headers,
        **exc.extensions,
    )


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    phrase = HTTPStatus(exc.status_code).phrase
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:
        # Starlette lists only the first matching route's methods; list the resource's.
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return problem_response(
        exc.status_code, detail=detail, instance=request.url.path, headers=headers
    )


ROUTABLE_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route fully matches at this path, probing the router itself."""
    routes = request.app.router.routes
    return [
        method
        for method in ROUTABLE_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # Inputs are left out on purpose: they may hold passwords or huge payloads.
    errors = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    return problem_response(
        422,
        title="Validation Failed",
        detail="The request is not valid; see `errors`.",
        type_=problem_type("validation-failed"),
        instance=request.url.path,
        errors=errors,
    )


async def _integrity_error(
    request: Request, exc: IntegrityError | asyncpg.IntegrityConstraintViolationError
) -> JSONResponse:
    sqlstate = _sqlstate(exc)
    driver_error = exc if isinstance(exc, asyncpg.PostgresError) else exc.orig
    constraint = getattr(driver_error, "constraint_name", None) or getattr(
        getattr(driver_error, "__cause__", None), "constraint_name", None
    )
    detail = {
        UNIQUE_VIOLATION: "A record with the same unique value already exists.",
        FOREIGN_KEY_VIOLATION: "The request refers to a record that does not exist.",
    }.get(str(sqlstate), "The request conflicts with stored data.")
    log.info("integrity_error", sqlstate=sqlstate, constraint=constraint)
    return problem_response(
        409,
        detail=detail,
        type_=problem_type("conflict"),
        instance=request.url.path,
        constraint=constraint,
    )


def _sqlstate(exc: DBAPIError | asyncpg.PostgresError) -> str:
    if isinstance(exc, asyncpg.PostgresError):  # raised by raw driver work such as COPY
        return str(exc.sqlstate or "")
    for source in (exc.orig, getattr(exc.orig, "__cause__", None)):
        code = getattr(source, "sqlstate", None) or getattr(source, "pgcode", None)
        if code:
            return str(code)
    return ""


async def _data_error(request: Request, exc: DBAPIError | asyncpg.PostgresError) -> JSONResponse:
    # SQLSTATE class 22 (data exception): a value the database can't hold, such as a NUL
    # character in text or a number out of range. The client's input, not our fault.
    if is_disconnect(exc):
        return await _database_unavailable(request, exc)
    sqlstate = _sqlstate(exc)
    if sqlstate == QUERY_CANCELED:
        # statement_timeout: the request asked for more work than one statement may do.
        log.warning("statement_timeout", path=request.url.path)
        return problem_response(
            503,
            detail="The database stopped the request at its statement timeout; retry later "
            "or with less work per request.",
            type_=problem_type("statement-timeout"),
            instance=request.url.path,
            headers={"Retry-After": "5"},
        )
    if not sqlstate.startswith(DATA_EXCEPTION_CLASS):
        raise exc  # anything else is ours: the middleware logs it and answers 500
    log.info("data_error", sqlstate=sqlstate)
    return problem_response(
        422,
        title="Unprocessable Value",
        detail="A value in the request cannot be stored (e.g. a NUL character or an "
        "out-of-range number).",
        type_=problem_type("unprocessable-value"),
        instance=request.url.path,
    )


async def _pool_timeout(request: Request, exc: Exception) -> JSONResponse:
    log.warning("db_pool_timeout", path=request.url.path)
    return problem_response(
        503,
        detail="The database is busy; retry shortly.",
        type_=problem_type("database-busy"),
        instance=request.url.path,
        headers={"Retry-After": "1"},
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database_unavailable", path=request.url.path, error=type(exc).__name__)
    error = DatabaseUnavailable()
    return problem_response(
        error.status_code,
        detail=error.detail,
        type_=problem_type(error.slug),
        instance=request.url.path,
        headers=error.headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Render every known error as problem+json. Unknown ones are caught by middleware."""
    app.exception_handler(KeelError)(_keel_error)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(RequestValidationError)(_validation_error)
    app.exception_handler(IntegrityError)(_integrity_error)
    # Raw driver work (COPY, the imports' MERGE) raises asyncpg's own errors.
    app.exception_handler(asyncpg.IntegrityConstraintViolationError)(_integrity_error)
    app.exception_handler(DBAPIError)(_data_error)
    app.exception_handler(asyncpg.DataError)(_data_error)
    app.exception_handler(asyncpg.QueryCanceledError)(_data_error)
    app.exception_handler(PoolTimeoutError)(_pool_timeout)
    for disconnect in DISCONNECT_ERRORS:
        app.exception_handler(disconnect)(_database_unavailable)
