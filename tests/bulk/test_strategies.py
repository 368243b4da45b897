"""Both ways of landing posts (MERGE, and INSERT ... ON CONFLICT for Citus) give the same
reports, the same rows and the same records, mode by mode, through the service itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any
from uuid import UUID

import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from keel.bulk import service
from keel.bulk.formats import Format
from keel.bulk.history import Target
from keel.bulk.schemas import ImportStrategy, Kind, OnConflict
from keel.core.db import driver_connection
from keel.core.ids import uuid7
from tests.bulk.helpers import encode
from tests.users.factory import make_user

STRATEGIES = [ImportStrategy.MERGE, ImportStrategy.UPSERT]


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _run(
    app: FastAPI, tenant_id: UUID, rows: list[dict[str, Any]], mode: OnConflict, strategy: str
) -> dict[str, Any]:
    services = app.state.services
    limits = replace(
        service.ImportLimits.from_settings(services.settings), strategy=ImportStrategy(strategy)
    )
    target = Target(tenant_id, None)
    async with app.state.db.sessionmaker() as session:
        try:
            report = await service.import_file(
                session,
                Kind.POSTS,
                _chunks(encode(rows, "ndjson")),
                Format.NDJSON,
                service.ImportOptions(mode, atomic=False),
                passwords=services.passwords,
                limits=limits,
                target=target,
            )
        except BaseException:
            await session.rollback()
            raise
        await session.commit()
    return report.model_dump(mode="json", exclude={"import_id"})


async def _titles(session: AsyncSession, tenant_id: UUID) -> list[tuple[str, str, bool]]:
    rows = await session.execute(
        text(
            "SELECT id::text, title, is_published FROM app.posts WHERE tenant_id = :t ORDER BY id"
        ),
        {"t": tenant_id},
    )
    return [(r[0], r[1], r[2]) for r in rows]


@pytest.mark.parametrize("mode", list(OnConflict))
async def test_merge_and_upsert_report_and_store_the_same(
    app: FastAPI, db_session: AsyncSession, mode: OnConflict
) -> None:
    results = []
    for strategy in STRATEGIES:
        owner = await make_user(app, db_session)
        ids = [uuid7() for _ in range(3)]
        seed = [
            {"id": str(i), "title": f"Post {n}", "author_id": str(owner.id)}
            for n, i in enumerate(ids)
        ]
        await _run(app, owner.id, seed, OnConflict.ERROR, strategy)
        rows: list[dict[str, Any]] = [
            {"id": str(ids[0]), "title": "Post 0", "author_id": str(owner.id)},  # same
            {"id": str(ids[1]), "title": "Renamed", "author_id": str(owner.id)},  # changed
            {"title": "New", "author_id": str(owner.id), "is_published": True},  # new
            {"title": "Ghost", "author_username": "nobody_at_all"},  # rejected
        ]
        report = await _run(app, owner.id, rows, mode, strategy)
        stored = [(title, published) for _, title, published in await _titles(db_session, owner.id)]
        recorded = (
            await db_session.execute(
                text(
                    "SELECT strategy, status, inserted, updated, unchanged, skipped, "
                    "rejected_count FROM app.imports WHERE tenant_id = :t ORDER BY id"
                ),
                {"t": owner.id},
            )
        ).all()
        assert [r[0] for r in recorded] == [strategy.value, strategy.value]
        results.append((report, sorted(stored), [tuple(r[1:]) for r in recorded]))

    merged, upserted = results
    assert merged == upserted
    report = merged[0]
    expected = {
        OnConflict.UPDATE: (1, 1, 1, 0, 1),
        OnConflict.SKIP: (1, 0, 0, 2, 1),
        OnConflict.ERROR: (1, 0, 0, 0, 3),
    }[mode]
    assert (
        report["inserted"],
        report["updated"],
        report["unchanged"],
        report["skipped"],
        report["rejected_count"],
    ) == expected


async def test_auto_is_merge_without_citus(app: FastAPI) -> None:
    async with app.state.db.sessionmaker() as session:
        conn = await driver_connection(session)
        chosen = await service.resolve_strategy(conn, ImportStrategy.AUTO)
        await session.rollback()
    assert chosen is ImportStrategy.MERGE
