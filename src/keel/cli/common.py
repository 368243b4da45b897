"""What every `keel` command shares: settings, clean failures, the database to use."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from pydantic import ValidationError

from keel.config import Settings, get_settings
from keel.core.db import create_database
from keel.core.embedded import EmbeddedPostgres, Supervisor
from keel.core.server_checks import DatabaseUnsupported, verify_server


def fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def load_settings() -> Settings:
    """The process settings, or a one-line error (no traceback) if the environment is invalid."""
    try:
        return get_settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():  # never the input values: they may hold secrets
            message = err["msg"].removeprefix("Value error, ")
            where = ".".join(str(part) for part in err["loc"]).upper()
            problems.append(f"{where}: {message}" if where else message)
        fail(f"invalid settings: {'; '.join(problems)}")


async def _verify(settings: Settings, url: str) -> None:
    database = create_database(settings, url)
    try:
        await verify_server(database.engine)
    finally:
        await database.dispose()


@contextmanager
def database_url(settings: Settings, *, supervise: bool = False) -> Iterator[str]:
    """The checked database URL: DATABASE_URL, or the embedded server (released on exit).

    `supervise`: for long-running commands, keep the embedded server up meanwhile (restart
    it if it dies); see `keel.core.embedded.Supervisor`.
    """
    embedded = None
    url = settings.database_url
    if url is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        url = embedded.ensure_running()
    try:
        try:
            asyncio.run(_verify(settings, url))
        except DatabaseUnsupported as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"cannot reach the database: {exc}")
        if embedded is not None and supervise:
            # Stopped before the release below, which may stop the server for good.
            with Supervisor(embedded):
                yield url
        else:
            yield url
    finally:
        if embedded is not None:
            embedded.release()
