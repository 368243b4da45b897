"""A client that goes away mid-upload: counted as 499 and logged once, without a traceback."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Message
from structlog.testing import capture_logs

from tests.bulk.helpers import admin_headers

_REQUESTS = re.compile(
    r'^keel_http_requests_total\{method="POST",route="([^"]+)",status="(\d+)"\} (\S+)$', re.M
)


async def posts_counted(client: AsyncClient, template: str) -> dict[str, float]:
    """POSTs to the route `template` counted so far, by status (the label is the template)."""
    counts: dict[str, float] = {}
    for route, status, value in _REQUESTS.findall((await client.get("/metrics")).text):
        if template.endswith(route):
            counts[status] = counts.get(status, 0.0) + float(value)
    return counts


async def upload_then_vanish(
    app: FastAPI, path: str, headers: dict[str, str], first_chunk: bytes
) -> list[Message]:
    """POST through the whole app; after one chunk of the body the client disconnects."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
        "state": {},
    }
    messages = iter([{"type": "http.request", "body": first_chunk, "more_body": True}])
    sent: list[Message] = []

    async def receive() -> Message:
        # As uvicorn does: once the peer is gone, every receive reports the disconnect.
        return next(messages, {"type": "http.disconnect"})

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize(
    ("path", "content_type", "first_chunk"),
    [
        # Streamed uploads, read by the endpoint after authentication...
        ("/api/v1/orgs/{me}/documents/bulk", "application/x-ndjson", b'{"content": "a", "embed'),
        ("/api/v1/admin/import/users", "text/csv", b"email,username,password\na@exa"),
        # ...and a JSON body that FastAPI reads before calling the endpoint.
        ("/api/v1/orgs/{me}/posts", "application/json", b'{"title": "half a'),
    ],
)
async def test_a_client_gone_mid_upload_is_a_499_without_a_traceback(
    app: FastAPI,
    db_session: AsyncSession,
    client: AsyncClient,
    path: str,
    content_type: str,
    first_chunk: bytes,
) -> None:
    headers = await admin_headers(app, db_session, client)
    me = (await client.get("/api/v1/users/me", headers=headers)).json()["id"]
    template = path.replace("{me}", "{org_id}")  # the route's template, the metrics label
    path = path.format(me=me)  # the admin's personal organization
    headers |= {"content-type": content_type, "content-length": "100000", "host": "test"}

    before = await posts_counted(client, template)
    with capture_logs() as logs:
        sent = await upload_then_vanish(app, path, headers, first_chunk)
    after = await posts_counted(client, template)

    added = {status: n - before.get(status, 0.0) for status, n in after.items()}
    assert {status: n for status, n in added.items() if n} == {"499": 1.0}
    assert not any(m["type"] == "http.response.start" and m["status"] >= 500 for m in sent)
    events = [entry for entry in logs if entry["log_level"] in ("warning", "error", "critical")]
    assert events == [], events
    gone = [entry for entry in logs if entry["event"] == "client_disconnected"]
    assert len(gone) == 1, logs
    assert gone[0]["log_level"] == "info"
    assert "exc_info" not in gone[0]
    access = [entry for entry in logs if entry["event"] == "request"]
    assert [entry["status"] for entry in access] == [499]
