"""`keel embeddings backfill`: embed every post that has no vector yet, organization by
organization, here (with a progress bar) or by queueing jobs for the workers (`--queue`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from keel.config import Settings
from keel.core.db import create_database
from keel.search.embeddings import (
    EMBED_BATCH,
    count_missing_all_tenants,
    embedder_for,
    load_posts,
    missing_post_ids,
    queue_missing_all_tenants,
    store_embeddings,
    tenants_missing_all_tenants,
)


async def backfill(
    settings: Settings,
    url: str,
    *,
    batch: int,
    started: Callable[[int], None],
    advance: Callable[[int], None],
) -> int:
    """Embed missing posts, `batch` per transaction. Returns how many were embedded."""
    database = create_database(settings, url)
    embedder = embedder_for(settings)
    done = 0
    try:
        async with database.sessionmaker() as session:
            started(await count_missing_all_tenants(session))
            tenants = await tenants_missing_all_tenants(session)
        for tenant_id in tenants:
            while True:
                async with database.sessionmaker() as session:
                    ids = await missing_post_ids(session, tenant_id, batch)
                    if not ids:
                        break
                    posts = await load_posts(session, tenant_id, ids)
                # The model runs with no transaction open: a batch can take seconds of CPU.
                vectors = await embedder.embed([post.text for post in posts])
                async with database.sessionmaker() as session, session.begin():
                    embedded = await store_embeddings(session, embedder, tenant_id, posts, vectors)
                done += embedded
                advance(embedded)
        return done
    finally:
        await database.dispose()


async def queue(settings: Settings, url: str, *, batch: int = EMBED_BATCH) -> int:
    """Queue `embed_posts` jobs (per organization) for the posts without a vector."""
    database = create_database(settings, url)
    try:
        async with database.sessionmaker() as session, session.begin():
            return await queue_missing_all_tenants(session, batch)
    finally:
        await database.dispose()


def run_with_progress(settings: Settings, url: str, *, batch: int) -> int:
    bar = Progress(
        TextColumn("embedding posts"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    with bar:
        task = bar.add_task("posts", total=None)
        return asyncio.run(
            backfill(
                settings,
                url,
                batch=batch,
                started=lambda total: bar.update(task, total=total),
                advance=lambda n: bar.advance(task, n),
            )
        )
