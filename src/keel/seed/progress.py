"""Progress reporting for seeding: a plain callback, and rich bars for the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

# (table, rows written so far, rows to write)
ProgressCallback = Callable[[str, int, int], None]


def no_progress(table: str, done: int, total: int) -> None:
    pass


class _RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        elapsed = task.finished_time or task.elapsed
        speed = f"{task.completed / elapsed:,.0f}" if elapsed else "-"
        return Text(f"{speed} rows/s", style="progress.data.speed")


@contextmanager
def rich_progress() -> Iterator[ProgressCallback]:
    """A progress callback drawing one bar per table, with rows/s, on stderr."""
    bars = Progress(
        TextColumn("{task.description:>5}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RowsPerSecond(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    tasks: dict[str, TaskID] = {}

    def update(table: str, done: int, total: int) -> None:
        if table not in tasks:
            tasks[table] = bars.add_task(table, total=total)
        bars.update(tasks[table], completed=done)

    with bars:
        yield update
