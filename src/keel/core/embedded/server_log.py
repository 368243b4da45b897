"""Reading an embedded server's log: its tail for error messages, and the crash recovery
(WAL replay) a start ran."""

import re
from pathlib import Path

import structlog

log = structlog.get_logger("keel.core.embedded")

# What a crash recovery writes to the server log (PostgreSQL 17/18 wording).
_RECOVERY_LINE = re.compile(
    r"database system was (?:interrupted|not properly shut down)|automatic recovery|"
    r"redo (?:starts|done) at|redo is not required|invalid record length|checkpoint complete"
)
_REDO_START = re.compile(r"redo starts at (\S+)")
_REDO_DONE = re.compile(r"redo done at (\S+)")


def log_tail(log_file: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no server log: {exc})"


def log_size(log_file: Path) -> int:
    try:
        return log_file.stat().st_size
    except OSError:
        return 0


def report_recovery(log_file: Path, pgdata: Path, log_offset: int) -> None:
    """Log the crash recovery the server just ran (what it wrote after `log_offset`), if any."""
    try:
        with log_file.open("rb") as fh:
            fh.seek(log_offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return
    if "automatic recovery in progress" not in text and "redo starts at" not in text:
        return
    lines = [line for line in text.splitlines() if _RECOVERY_LINE.search(line)]
    start, done = _REDO_START.search(text), _REDO_DONE.search(text)
    log.warning(
        "embedded_pg.crash_recovery",
        pgdata=str(pgdata),
        redo_start=start.group(1) if start else None,
        redo_done=done.group(1) if done else None,
        wal_replayed=start is not None,
        log=lines[-12:],
    )
