"""`keel import`: the same import as the HTTP endpoints, from a local file, with a progress
bar and the report as a table."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from keel.bulk import service
from keel.bulk.formats import EXTENSIONS, Format, MalformedFile
from keel.bulk.schemas import ImportReport, Kind
from keel.config import Settings
from keel.core.db import create_database
from keel.core.passwords import PasswordHasher

CHUNK_BYTES = 1 << 20


def format_for_path(path: Path) -> Format:
    try:
        return EXTENSIONS[path.suffix.lower()]
    except KeyError:
        raise MalformedFile(
            f"Can't tell the format of {path.name}: use one of {', '.join(sorted(EXTENSIONS))}."
        ) from None


async def _chunks(path: Path, advance: Callable[[int], None]) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
            advance(len(chunk))
            yield chunk


async def _run(
    settings: Settings,
    url: str,
    kind: Kind,
    path: Path,
    options: service.ImportOptions,
    organization: str | None,
    advance: Callable[[int], None],
) -> ImportReport:
    fmt = format_for_path(path)
    database = create_database(settings, url)
    try:
        async with database.sessionmaker() as session:
            target = None
            if organization is not None:
                target = await service.operator_target(session, organization)
            report = await service.import_file(
                session,
                kind,
                _chunks(path, advance),
                fmt,
                options,
                passwords=PasswordHasher.from_settings(settings),
                limits=service.ImportLimits.from_settings(settings, capped=False),
                target=target,
            )
            await session.commit()
            return report
    finally:
        await database.dispose()


def import_with_progress(
    settings: Settings,
    url: str,
    kind: Kind,
    path: Path,
    options: service.ImportOptions,
    organization: str | None = None,
) -> ImportReport:
    """Run the import, drawing the bytes read on stderr. Raises what the service raises.

    Posts land in `organization` (an id or a slug); users in none."""
    bar = Progress(
        TextColumn(f"{kind.value} ← {path.name}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    with bar:
        task = bar.add_task("read", total=path.stat().st_size)
        return asyncio.run(
            _run(settings, url, kind, path, options, organization, lambda n: bar.advance(task, n))
        )


def print_report(report: ImportReport, console: Console | None = None) -> None:
    console = console or Console()
    counts = Table(title=f"Import of {report.kind.value} ({report.format})")
    for column in ("rows", "inserted", "updated", "unchanged", "skipped", "rejected"):
        counts.add_column(column, justify="right")
    counts.add_row(
        *(
            str(n)
            for n in (
                report.rows,
                report.inserted,
                report.updated,
                report.unchanged,
                report.skipped,
                report.rejected_count,
            )
        )
    )
    console.print(counts)
    if report.rejected:
        rejected = Table(title="Rejected rows")
        rejected.add_column("line" if report.format != "json" else "index", justify="right")
        rejected.add_column("field")
        rejected.add_column("reason")
        for row in report.rejected:
            rejected.add_row(str(row.line or row.index), row.field or "", row.reason)
        console.print(rejected)
        if report.rejected_truncated:
            console.print(f"… and {report.rejected_count - len(report.rejected)} more.")
    if not report.committed:
        console.print(
            "[bold red]Nothing was imported[/] (atomic); use --no-atomic to import the valid rows."
        )
