"""OpenTelemetry, end to end: a real `keel serve` exports to a real OTLP/HTTP receiver.

The receiver is an HTTP server started here that decodes the protobuf payloads
(`ExportTraceServiceRequest`) the exporter posts to /v1/traces. Tracing runs in the server
process only: this process never installs a tracer provider.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from keel.core import tracing
from tests.deploy.support import clean_environ, wait_for
from tests.processes import free_port

API = "/api/v1"
PASSWORD = "correct horse battery staple"
POSTS_ROUTE = f"{API}/orgs/{{org_id}}/posts"  # route templates, not raw paths
READ_ROUTE = f"GET {POSTS_ROUTE}/{{post_id:uuid}}"


@dataclass(frozen=True)
class Received:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    links: list[tuple[str, str]]
    service: str


class Receiver(ThreadingHTTPServer):
    spans: list[Received]


class OtlpHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.path == "/v1/traces"
        assert self.headers["Content-Type"] == "application/x-protobuf"
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.server.spans.append(_received(span, attributes["service.name"]))
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


def _received(span: Span, service: str) -> Received:
    values = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        values[a.key] = getattr(a.value, kind) if kind else None
    return Received(
        name=span.name,
        kind=span.kind,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        attributes=values,
        links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
        service=service,
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), OtlpHandler)
    server.spans = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def traced_server(
    receiver: Receiver, test_database_url: str, tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    port = free_port()
    env = clean_environ() | {
        "DATABASE_URL": test_database_url,
        "KEEL_DATA_DIR": str(tmp_path / "data"),
        "KEEL_AUTO_MIGRATE": "false",
        "ENVIRONMENT": "development",
        "WORKER_ENABLED": "true",
        "WORKER_POLL_SECONDS": "0.2",
        "LOG_JSON": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
        "OTEL_SERVICE_NAME": "keel-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "keel", "serve", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(log.read_text())
        try:
            return httpx.get(f"{base}/health", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, "keel serve")
        yield base, log
    finally:
        proc.terminate()
        proc.wait(60)


def _server_span(spans: list[Received], name: str) -> Received | None:
    return next((s for s in spans if s.name == name and s.kind == Span.SPAN_KIND_SERVER), None)


def _descends_from(span: Received, ancestor: Received, spans: list[Received]) -> bool:
    by_id = {s.span_id: s for s in spans if s.trace_id == span.trace_id}
    current: Received | None = span
    while current is not None and current.parent_id:
        if current.parent_id == ancestor.span_id:
            return True
        current = by_id.get(current.parent_id)
    return False


def _db_spans_under(server: Received, spans: list[Received]) -> list[Received]:
    return [
        s
        for s in spans
        if s.attributes.get("db.system") == "postgresql" and _descends_from(s, server, spans)
    ]


def test_requests_queries_and_jobs_are_traced(
    traced_server: tuple[str, Path], receiver: Receiver
) -> None:
    base, log = traced_server
    name = f"tracer{secrets.token_hex(3)}"
    with httpx.Client(base_url=base, timeout=30) as client:
        signup = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
        assert client.post(f"{API}/auth/signup", json=signup).status_code == 201
        login = client.post(f"{API}/auth/login", data={"username": name, "password": PASSWORD})
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        me = client.get(f"{API}/users/me", headers=auth).json()["id"]
        posts = f"{API}/orgs/{me}/posts"  # the personal organization's
        # A write that queues a job (the posts trigger queues `embed_posts`).
        post = {"title": "Traced", "content": "spans and links", "is_published": True}
        created = client.post(posts, headers=auth, json=post)
        assert created.status_code == 201
        read = client.get(f"{posts}/{created.json()['id']}", headers=auth)
        assert read.status_code == 200
        request_ids = {created.headers["x-request-id"], read.headers["x-request-id"]}

    spans = receiver.spans
    wait_for(lambda: any(s.name == "job embed_posts" for s in spans), "the job's span", 120)
    wait_for(lambda: _server_span(spans, READ_ROUTE), "the read's span", 30)
    assert {s.service for s in spans} == {"keel-under-test"}
    assert not any(s.name.startswith("GET /health") for s in spans), "probes are not traced"

    # The authenticated read: a server span named by the route template, its queries under it.
    get = _server_span(spans, READ_ROUTE)
    assert get is not None
    assert _db_spans_under(get, spans), "the read's queries are children of its span"
    # The write: its INSERT under its span.
    write = _server_span(spans, f"POST {POSTS_ROUTE}")
    assert write is not None
    inserts = [s for s in _db_spans_under(write, spans) if "INSERT" in s.name.upper()]
    assert inserts, [s.name for s in _db_spans_under(write, spans)]

    # The job: its own trace, linked to the request that queued it; its queries under it.
    job = next(s for s in spans if s.name == "job embed_posts")
    assert job.kind == Span.SPAN_KIND_CONSUMER
    assert job.trace_id != write.trace_id
    assert len(job.links) == 1
    link_trace, link_span = job.links[0]
    assert link_trace == write.trace_id
    assert link_span in {s.span_id for s in spans if s.trace_id == write.trace_id}
    wait_for(lambda: _db_spans_under(job, spans), "the job's queries", 30)

    # Log lines made while serving carry the ids of the request's span.
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    served = [line for line in lines if line.get("request_id") in request_ids]
    assert served
    assert all(len(line["trace_id"]) == 32 and len(line["span_id"]) == 16 for line in served)
    assert {line["trace_id"] for line in served} == {get.trace_id, write.trace_id}
    job_lines = [line for line in lines if line.get("event", "").startswith("job.")]
    assert all(line.get("trace_id") == job.trace_id for line in job_lines)


def test_tracing_is_off_without_an_endpoint() -> None:
    # This process has no OTLP endpoint: nothing is installed, the hooks are no-ops.
    assert not tracing.requested()
    assert tracing.configure() is False
    assert tracing.current_traceparent() is None
    assert tracing.current_ids() is None
