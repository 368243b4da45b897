"""What a request does before it answers: the SQL it runs, and the moment it answers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import event

ANSWERED = "<answered>"
Message = MutableMapping[str, Any]


@contextlib.asynccontextmanager
async def timeline(app: FastAPI) -> AsyncIterator[tuple[AsyncClient, list[str]]]:
    """A client for `app`, and the list its requests fill in order: every statement the
    app's write engine runs, and ANSWERED once a response has been sent in full."""
    events: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        events.append(statement)

    async def marking(scope: Message, receive: Any, send: Any) -> None:
        async def marked_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                events.append(ANSWERED)

        await app(scope, receive, marked_send)

    engine = app.state.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        transport = ASGITransport(app=marking)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            yield http, events
    finally:
        event.remove(engine, "before_cursor_execute", record)
