"""The dashboard in a real headless Chromium: sign in, every page, a provoked problem,
cancelling a running query from the live page, and no CSP violation on the way.

Screenshots go to KEEL_SCREENSHOTS_DIR when set (docs/screenshots/insight is committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import uvicorn
from fastapi import FastAPI
from httpx import AsyncClient
from playwright.async_api import Page, async_playwright
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from keel.insight.pg import snapshots
from keel.insight.web.router import CSP, PAGES
from keel.jobs.worker import Worker
from tests.conftest import asyncpg_dsn
from tests.processes import free_port
from tests.users.factory import PASSWORD, make_user

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason="needs Debian's chromium")


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """The test's app (lifespan already running) on a real port, for the browser."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None)
    )
    task = asyncio.create_task(server.serve())
    for _ in range(600):  # up to 30 s
        if server.started:
            break
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def sign_in(page: Page, base: str, login: str) -> None:
    await page.goto(f"{base}/admin/db")
    await page.fill("input[name=username]", login)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("#sign-in button[type=submit]")


async def loaded(page: Page, slug: str) -> None:
    await page.wait_for_selector(f"body[data-loaded={slug}]")


async def test_dashboard_in_chromium(
    app: FastAPI,
    db_session: AsyncSession,
    client: AsyncClient,
    test_database_url: str,
    tmp_path: Path,
) -> None:
    shots = Path(os.environ.get("KEEL_SCREENSHOTS_DIR") or tmp_path)
    await asyncio.to_thread(shots.mkdir, parents=True, exist_ok=True)
    admin = await make_user(app, db_session, admin=True)
    user = await make_user(app, db_session)
    # Problems to find: an invalid index (a failed CREATE INDEX CONCURRENTLY), a sequence
    # near its maximum, and a value that would run as markup if it were not escaped.
    await db_session.execute(text("CREATE TABLE app.dupes (v int)"))
    await db_session.execute(text("INSERT INTO app.dupes VALUES (1), (1)"))
    with pytest.raises(DBAPIError):
        await db_session.execute(text("CREATE UNIQUE INDEX CONCURRENTLY dupes_v ON app.dupes (v)"))
    await db_session.execute(text("CREATE TABLE app.tickets (id serial PRIMARY KEY)"))
    await db_session.execute(text("SELECT setval('app.tickets_id_seq', 2000000000)"))
    worker = Worker(app.state.db, snapshots.handlers(app.state.settings))
    for times in (1, 4, 2):
        for _ in range(times):
            await db_session.execute(text("SELECT count(*) FROM app.dupes"))
        await snapshots.request_snapshot(db_session)
        await worker.drain()

    sleeper = await asyncpg.connect(asyncpg_dsn(test_database_url))
    sleeper_pid = await sleeper.fetchval("SELECT pg_backend_pid()")
    sleeping = asyncio.create_task(
        sleeper.execute("SELECT pg_sleep(120) /* <img src=x id=injected> */")
    )
    violations: list[str] = []
    try:
        async with serving(app) as base, async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda m: (
                    violations.append(m.text) if "Content Security Policy" in m.text else None
                ),
            )
            response = await page.goto(f"{base}/admin/db")
            assert response is not None
            assert response.headers["content-security-policy"] == CSP

            # A signed-in non-admin gets no further than the form.
            await sign_in(page, base, user.username)
            await page.wait_for_selector("text=not an administrator")
            assert await page.is_hidden("#views")

            await sign_in(page, base, admin.username)
            await loaded(page, "overview")
            invalid = page.locator("[data-check=invalid_indexes]")
            assert "warning" in (await invalid.get_attribute("class") or "")
            assert "app.dupes_v" in await invalid.inner_text()
            sequences = page.locator("[data-check=sequences]")
            assert "critical" in (await sequences.get_attribute("class") or "")
            await page.screenshot(path=shots / "overview.png", full_page=True)

            for spec in PAGES[1:]:
                await page.click(f"#nav a[data-page={spec.slug}]")
                await loaded(page, spec.slug)
                assert page.url.endswith(f"/admin/db/{spec.slug}")
                if spec.slug == "queries":
                    await page.click(
                        "#queries-table tr:has-text('count(*) FROM app.dupes') button.chart-query"
                    )
                    await page.wait_for_selector("#history-box:not([hidden])")
                if spec.slug == "activity":
                    await page.wait_for_selector(f"button.cancel[data-pid='{sleeper_pid}']")
                await page.screenshot(path=shots / f"{spec.slug}.png", full_page=True)

            await page.click("#nav a[data-page=activity]")
            await loaded(page, "activity")
            # Escaped: the comment shows as text, no element was created from it.
            assert await page.locator("#injected").count() == 0
            assert "<img src=x id=injected>" in await page.inner_text("#activity-table")
            await page.click(f"button.cancel[data-pid='{sleeper_pid}']")
            with pytest.raises(asyncpg.QueryCanceledError):
                await asyncio.wait_for(sleeping, timeout=30)
            await page.wait_for_selector(f"#status:has-text('cancel {sleeper_pid}: done')")
            await browser.close()
    finally:
        sleeping.cancel()
        with contextlib.suppress(BaseException):
            await sleeping
        sleeper.terminate()
    assert violations == []
