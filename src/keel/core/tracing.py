"""OpenTelemetry tracing: off unless OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set.

When on (`configure()`, once per process, after any fork):
- spans go to the OTLP/HTTP exporter, which honours the standard `OTEL_*` variables
  (endpoint, headers, timeout; `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, sampling);
- server spans come from the FastAPI instrumentation, named by route template
  (`GET /api/v1/posts/{post_id}`), never the raw path;
- database spans (SQLAlchemy engine and the asyncpg read pool) are children of the span
  that runs the query; outgoing HTTP through httpx (the HTTP embedder) is traced;
- a job stores the `traceparent` of the span that queued it (`app.jobs.trace_parent`;
  jobs queued by triggers get it from the transaction's `keel.trace_parent` setting, which
  write transactions set), and its run is a span that *links* to that one;
- every log line made inside a span carries `trace_id` and `span_id`.
When off, nothing of OpenTelemetry is imported: the hooks below return at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI
    from sqlalchemy.ext.asyncio import AsyncEngine

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
TRACE_PARENT_SETTING = "keel.trace_parent"  # read by app.jobs.trace_parent's default
UNTRACED_PATHS = "/health,/health/ready,/health/startup,/metrics"

_enabled = False


def requested() -> bool:
    """Whether the environment asks for tracing (an OTLP endpoint is set)."""
    return any(os.environ.get(name) for name in ENDPOINT_VARIABLES)


def enabled() -> bool:
    return _enabled


def configure() -> bool:
    """Install the tracer provider, the exporter and the library instrumentations, once."""
    global _enabled
    if _enabled or not requested():
        return _enabled
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "keel")})
    provider = TracerProvider(resource=resource)  # sampler: OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]  # the read pool
    HTTPXClientInstrumentor().instrument()
    _enabled = True
    return True


def instrument_app(app: FastAPI) -> None:
    """Server spans for every request but the probes and /metrics."""
    if not _enabled:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=UNTRACED_PATHS, exclude_spans=["receive", "send"]
    )


def instrument_database(engine: AsyncEngine) -> None:
    """Spans for the engine's statements; write transactions carry the trace context."""
    if not _enabled:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, enable_commenter=False)
    if not event.contains(Session, "after_begin", _carry_trace_context):
        event.listen(Session, "after_begin", _carry_trace_context)


def _carry_trace_context(session: Any, transaction: Any, connection: Any) -> None:
    # Jobs inserted by triggers in this transaction read it (their column's default).
    # Autocommit sessions (reads) have no transaction to carry it.
    if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return
    value = current_traceparent()
    if value is not None:
        from sqlalchemy import text

        connection.execute(
            text("SELECT set_config(:name, :value, true)"),
            {"name": TRACE_PARENT_SETTING, "value": value},
        )


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, to store with a job; None when off."""
    if not _enabled:
        return None
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def job_span(kind: str, job_id: object, trace_parent: str | None) -> Iterator[None]:
    """The span of one job's run, linked to the span that queued it (not its child: the
    request is long over, and one request may queue many jobs)."""
    if not _enabled:
        yield
        return
    from opentelemetry import trace
    from opentelemetry.propagate import extract

    links = []
    if trace_parent:
        queued_by = trace.get_current_span(extract({"traceparent": trace_parent}))
        if queued_by.get_span_context().is_valid:
            links.append(trace.Link(queued_by.get_span_context()))
    tracer = trace.get_tracer("keel.jobs")
    with tracer.start_as_current_span(
        f"job {kind}",
        kind=trace.SpanKind.CONSUMER,
        links=links,
        attributes={"keel.job.id": str(job_id), "keel.job.kind": kind},
        context=trace.set_span_in_context(trace.INVALID_SPAN),  # a new trace, not a child
    ):
        yield


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in hex of the current span, for log lines; None outside one."""
    if not _enabled:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
