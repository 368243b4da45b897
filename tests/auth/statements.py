"""Which SQL a request runs: for asserting equal work where timings can't be asserted."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from fastapi import FastAPI
from sqlalchemy import event


@contextlib.contextmanager
def statements_run(app: FastAPI) -> Iterator[list[str]]:
    """The SQL statements the app's write engine runs inside the block, in order."""
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    engine = app.state.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)
