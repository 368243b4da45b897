"""`keel check`: report what in the effective settings would hurt in production.

The migration Job (deploy/k8s) and compose's `migrate` service run it before migrating:
it exits 1 on any error, so a misconfigured release stops before the schema changes.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from keel.cli.common import load_settings
from keel.config import Settings
from keel.core.db import create_database
from keel.core.logging import configure_logging
from keel.core.preflight import Finding, check_server, check_settings, worker_count


async def _server_findings(settings: Settings, url: str, workers: int) -> list[Finding]:
    database = create_database(settings, url)
    try:
        return await check_server(database.engine, settings, workers)
    finally:
        await database.dispose()


def check_command(
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, help="Worker processes to plan for (default: WEB_CONCURRENCY or CPUs)."
        ),
    ] = None,
) -> None:
    """Check the settings and the database for production; exit 1 on any error."""
    settings = load_settings()  # invalid settings (e.g. a placeholder secret): exit 1 here
    configure_logging(settings, stream=sys.stderr)
    workers = workers or worker_count(settings)
    findings = check_settings(settings, workers)
    if settings.database_url is not None:
        findings += asyncio.run(_server_findings(settings, settings.database_url, workers))
    errors = [f for f in findings if f.severity == "error"]
    for finding in sorted(findings, key=lambda f: f.severity):
        colour = typer.colors.RED if finding.severity == "error" else typer.colors.YELLOW
        label = typer.style(finding.severity.upper(), fg=colour, bold=True)
        typer.echo(f"{label} [{finding.code}] {finding.message}")
    warnings = len(findings) - len(errors)
    typer.echo(f"{len(errors)} error(s), {warnings} warning(s)")
    if errors:
        raise typer.Exit(code=1)
