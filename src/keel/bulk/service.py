"""Imports: stream → validate → (hash) → COPY into staging → check → land → report.

The HTTP endpoints and `keel import` both call `import_file`; only where the bytes come
from differs. Nothing lands unless the whole pipeline succeeds: an atomic import with any
rejected row raises `ImportRejected` and the caller's transaction rolls back.

Posts always land in one organization (`Target`): the org-scoped endpoints check
`imports.run` first (`import_posts_file`, `import_posts_json`), before the body is read.
Each posts import leaves a record (`keel.bulk.history`). Accounts are global: the users
import is for platform admins and leaves none.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from keel.bulk import history, json_table, posts_repository, repository, rows, staging
from keel.bulk.formats import BadRecord, Format, Record, read
from keel.bulk.history import Target
from keel.bulk.schemas import (
    ROW_MODELS,
    ImportReport,
    ImportStrategy,
    JsonTableImport,
    Kind,
    OnConflict,
    Rejection,
    text_cells,
)
from keel.config import Settings
from keel.core.db import driver_connection
from keel.core.errors import ContentTooLarge, KeelError, NotFound
from keel.core.passwords import PasswordHasher
from keel.orgs.permissions import OrgActor, Permission

Finding = staging.Finding
JSON_TABLE = "json_table"  # the report's format for JSON_TABLE imports


class TooManyRows(ContentTooLarge):
    slug, title = "too-many-rows", "Too Many Rows"


class ImportRejected(KeelError):
    """An atomic import with rejected rows: nothing was written. Carries the report."""

    status_code, slug, title = 422, "import-rejected", "Import Rejected"


@dataclass(frozen=True, slots=True)
class ImportLimits:
    max_rows: int | None  # None: no cap (the CLI, run by an operator on a local file)
    max_line_bytes: int
    batch_rows: int
    hash_workers: int
    max_reported: int
    statement_timeout_ms: int
    max_json_depth: int  # of a CSV cell's JSON; JSON bodies are capped by the middleware
    strategy: ImportStrategy = ImportStrategy.AUTO  # how posts land (IMPORT_STRATEGY)

    @classmethod
    def from_settings(cls, settings: Settings, *, capped: bool = True) -> ImportLimits:
        return cls(
            max_rows=settings.import_max_rows if capped else None,
            max_line_bytes=settings.import_max_line_bytes,
            batch_rows=settings.import_batch_rows,
            hash_workers=settings.import_hash_workers or os.cpu_count() or 1,
            max_reported=settings.import_max_reported_rejections,
            statement_timeout_ms=settings.import_statement_timeout_ms,
            max_json_depth=settings.max_json_depth,
            strategy=ImportStrategy(settings.import_strategy),
        )


@dataclass(frozen=True, slots=True)
class ImportOptions:
    on_conflict: OnConflict = OnConflict.ERROR
    atomic: bool = True


def may_run_imports(actor: OrgActor) -> None:
    """Forbidden unless the actor's role may run imports (owners and admins)."""
    actor.require(Permission.IMPORTS_RUN)


async def import_posts_file(
    session: AsyncSession,
    actor: OrgActor,
    chunks: AsyncIterator[bytes],
    fmt: Format,
    options: ImportOptions,
    *,
    passwords: PasswordHasher,
    limits: ImportLimits,
) -> ImportReport:
    """Import a posts file into the actor's organization (owners and admins)."""
    actor.require(Permission.IMPORTS_RUN)
    target = Target(actor.organization_id, actor.user_id)
    return await import_file(
        session, Kind.POSTS, chunks, fmt, options, passwords=passwords, limits=limits, target=target
    )


async def import_posts_json(
    session: AsyncSession,
    actor: OrgActor,
    spec: JsonTableImport,
    options: ImportOptions,
    *,
    limits: ImportLimits,
) -> ImportReport:
    """Import posts shredded by JSON_TABLE into the actor's organization."""
    actor.require(Permission.IMPORTS_RUN)
    target = Target(actor.organization_id, actor.user_id)
    return await import_json_table(session, spec, options, limits=limits, target=target)


async def operator_target(session: AsyncSession, organization: str) -> Target:
    """Where `keel import posts --org` lands: an organization by id or slug, no actor."""
    found = await posts_repository.organization_id(await driver_connection(session), organization)
    if found is None:
        raise NotFound(f"No organization with the id or slug {organization!r}.")
    return Target(found, None)


async def import_file(
    session: AsyncSession,
    kind: Kind,
    chunks: AsyncIterator[bytes],
    fmt: Format,
    options: ImportOptions,
    *,
    passwords: PasswordHasher,
    limits: ImportLimits,
    target: Target | None = None,
) -> ImportReport:
    """Import a users file, or a posts file into `target`. Raises `ImportRejected` for a
    failed atomic import."""
    if (kind is Kind.POSTS) != (target is not None):
        raise ValueError("posts land in a target organization; users in none")
    conn = await _begin(session, limits)
    table = await staging.create(conn, kind)
    model = ROW_MODELS[kind]
    findings: list[Finding] = []
    rows_read = 0
    batch: list[Record] = []
    with ThreadPoolExecutor(max_workers=limits.hash_workers, thread_name_prefix="hash") as pool:
        context = text_cells(limits.max_json_depth) if fmt is Format.CSV else None
        loader = rows.BatchLoader(conn, table, model, context, passwords, pool)
        columns = rows.columns_of(model)
        items = read(chunks, fmt, columns=columns, max_line_bytes=limits.max_line_bytes)
        async for item in items:
            rows_read += 1
            if limits.max_rows is not None and rows_read > limits.max_rows:
                raise TooManyRows(f"The import is capped at {limits.max_rows} rows.")
            if isinstance(item, BadRecord):
                findings.append((item.position, None, item.reason))
                continue
            batch.append(item)
            if len(batch) >= limits.batch_rows:
                findings += await loader.load(batch)
                batch = []
        findings += await loader.load(batch)
    return await _check_and_land(
        session, conn, table, fmt.value, rows_read, findings, options, limits, target
    )


async def import_json_table(
    session: AsyncSession,
    spec: JsonTableImport,
    options: ImportOptions,
    *,
    limits: ImportLimits,
    target: Target,
) -> ImportReport:
    """Import posts shredded server-side from one JSON document by JSON_TABLE."""
    conn = await _begin(session, limits)
    await json_table.check_paths(conn, spec)
    table = await staging.create(conn, Kind.POSTS)
    findings = await json_table.stage(conn, table, spec)
    count = await staging.count(conn, table)
    if count == 0:
        raise json_table.InvalidJsonPath(
            f"rows: `{spec.rows}` matched no items in the document.", field="rows", path=spec.rows
        )
    if limits.max_rows is not None and count > limits.max_rows:
        raise TooManyRows(f"The import is capped at {limits.max_rows} rows.")
    return await _check_and_land(
        session, conn, table, JSON_TABLE, count, findings, options, limits, target
    )


async def _begin(session: AsyncSession, limits: ImportLimits) -> asyncpg.Connection:
    conn = await driver_connection(session)
    # Transaction-scoped: a long import gets its own budget, pooled connections keep theirs.
    await conn.execute(f"SET LOCAL statement_timeout = {int(limits.statement_timeout_ms)}")
    return conn


async def resolve_strategy(conn: asyncpg.Connection, configured: ImportStrategy) -> ImportStrategy:
    """`auto`: upsert on Citus (MERGE ... RETURNING fails on its tables), else merge."""
    if configured is not ImportStrategy.AUTO:
        return configured
    citus = await posts_repository.citus_installed(conn)
    return ImportStrategy.UPSERT if citus else ImportStrategy.MERGE


async def _check(
    conn: asyncpg.Connection, table: staging.Staging, on_conflict: OnConflict, target: Target | None
) -> list[Finding]:
    if target is None:
        return await repository.check_users(conn, table, on_conflict)
    return await posts_repository.check_posts(conn, table, on_conflict, target.tenant_id)


async def _land(
    conn: asyncpg.Connection,
    table: staging.Staging,
    on_conflict: OnConflict,
    target: Target | None,
    strategy: ImportStrategy,
) -> repository.MergeCounts:
    if target is None and strategy is ImportStrategy.UPSERT:
        return await repository.upsert_users(conn, table, on_conflict)
    if target is None:
        return await repository.merge_users(conn, table, on_conflict)
    if strategy is ImportStrategy.UPSERT:
        return await posts_repository.upsert_posts(conn, table, on_conflict, target.tenant_id)
    return await posts_repository.merge_posts(conn, table, on_conflict, target.tenant_id)


async def _check_and_land(
    session: AsyncSession,
    conn: asyncpg.Connection,
    table: staging.Staging,
    source: str,
    rows_read: int,
    findings: list[Finding],
    options: ImportOptions,
    limits: ImportLimits,
    target: Target | None,
) -> ImportReport:
    strategy = await resolve_strategy(conn, limits.strategy)
    findings += await _check(conn, table, options.on_conflict, target)
    rejected = _first_per_row(findings)
    report = ImportReport(
        kind=table.kind,
        format=source,
        on_conflict=options.on_conflict,
        atomic=options.atomic,
        rows=rows_read,
        rejected_count=len(rejected),
        rejected=[_rejection(source, f) for f in rejected[: limits.max_reported]],
        rejected_truncated=len(rejected) > limits.max_reported,
        committed=not (options.atomic and rejected),
    )
    if not report.committed:
        if target is not None:  # nothing lands; the record still does
            report.import_id = await history.record_after_rollback(
                session, target, report, strategy.value
            )
        raise ImportRejected(
            f"{len(rejected)} of {rows_read} rows were rejected; nothing was imported "
            "(send atomic=false to import the valid rows).",
            report=report.model_dump(mode="json"),
        )
    await staging.discard(conn, table, [line for line, _, _ in rejected])
    staged = await staging.count(conn, table)
    counts = await _land(conn, table, options.on_conflict, target, strategy)
    await staging.drop(conn, table)
    matched = staged - counts.inserted - counts.updated
    report.inserted, report.updated = counts.inserted, counts.updated
    if options.on_conflict is OnConflict.SKIP:
        report.skipped = matched
    else:
        report.unchanged = matched
    if target is not None:
        report.import_id = await history.record(conn, target, report, strategy.value)
    return report


def _first_per_row(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per row (the first check that rejected it), in row order."""
    first: dict[int, Finding] = {}
    for finding in findings:
        first.setdefault(finding[0], finding)
    return [first[line] for line in sorted(first)]


def _rejection(source: str, finding: Finding) -> Rejection:
    position, field_name, reason = finding
    if source in {Format.JSON.value, JSON_TABLE}:
        return Rejection(index=position, field=field_name, reason=reason)
    return Rejection(line=position, field=field_name, reason=reason)
