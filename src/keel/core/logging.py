"""structlog setup: JSON off a terminal, readable console output in development."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from keel.config import Settings
from keel.core.context import current_request_id


def add_request_id(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Processor: add the current request id to every log line made while serving."""
    request_id = current_request_id()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


def configure_logging(settings: Settings) -> None:
    """Configure structlog and route stdlib logging (uvicorn, alembic) through it.

    Runs once per process: loggers cache their configuration on first use, so a
    second `structlog.configure` would leave them split between two setups.
    """
    if structlog.is_configured():
        return
    as_json = settings.log_json if settings.log_json is not None else not sys.stdout.isatty()
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
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
