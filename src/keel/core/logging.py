"""structlog setup: JSON off a terminal, readable console output in development."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from keel.config import Settings
from keel.core import tracing
from keel.core.context import current_request_id


def add_request_id(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Processor: add the current request id to every log line made while serving."""
    request_id = current_request_id()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


def add_trace_ids(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Processor: the current span's trace and span ids (OpenTelemetry, when tracing is on)."""
    ids = tracing.current_ids()
    if ids is not None:
        event["trace_id"], event["span_id"] = ids
    return event


def add_logger_name(logger: WrappedLogger, _: str, event: EventDict) -> EventDict:
    """Processor: the emitting logger's name, for Keel's loggers and stdlib ones alike."""
    record = event.get("_record")
    name = record.name if record is not None else getattr(logger, "name", None)
    if name:
        event["logger"] = name
    return event


def _orjson_dumps(event: EventDict, **_: Any) -> bytes:
    return orjson.dumps(event, default=str)


def _orjson_text(event: EventDict, **_: Any) -> str:
    # The same serialiser, as text: logging handlers write str.
    return orjson.dumps(event, default=str).decode()


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> None:
    """Configure structlog and route stdlib logging (uvicorn, alembic) through it.

    Logs go to stdout unless `stream` says otherwise (the `keel db` commands use stderr
    so their output stays clean). Runs once per process: loggers cache their
    configuration on first use, so a second `structlog.configure` would split them.
    """
    if structlog.is_configured():
        return
    stream = stream or sys.stdout
    as_json = settings.log_json if settings.log_json is not None else not stream.isatty()
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    # Every line, Keel's or a library's through stdlib logging (alembic, uvicorn), goes
    # through these processors and the same renderer: one shape for a log pipeline.
    shared: list[Processor] = [
        add_request_id,
        add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_logger_name,
        structlog.processors.format_exc_info,
    ]
    stdlib_renderer: Processor
    if as_json:
        # orjson straight to the byte stream: the access log runs on every request.
        structlog.configure(
            processors=[*shared, structlog.processors.JSONRenderer(serializer=_orjson_dumps)],
            wrapper_class=structlog.make_filtering_bound_logger(level),
            logger_factory=structlog.BytesLoggerFactory(stream.buffer),
            cache_logger_on_first_use=True,
        )
        stdlib_renderer = structlog.processors.JSONRenderer(serializer=_orjson_text)
    else:
        stdlib_renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
        structlog.configure(
            processors=[*shared, stdlib_renderer],
            wrapper_class=structlog.make_filtering_bound_logger(level),
            logger_factory=structlog.PrintLoggerFactory(stream),
            cache_logger_on_first_use=True,
        )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                stdlib_renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Keel writes its own access log with the request id; uvicorn's would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def uvicorn_log_config() -> dict[str, Any]:
    """A log config that leaves uvicorn's loggers to the root handler set up above."""
    return {"version": 1, "disable_existing_loggers": False}
