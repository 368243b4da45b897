"""/metrics database figures: collected at scrape time, and never failing the scrape."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg

from tests.conftest import MakeDatabase, asyncpg_dsn, make_settings, running, url_for_database


def sample(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{name}{{{wanted}}} (\S+)$" if labels else rf"^{name} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else None


async def test_scrape_reports_database_figures(test_database_url: str, data_dir: Path) -> None:
    settings = make_settings(test_database_url, data_dir, insight_metrics_cache_seconds=0)
    idle = await asyncpg.connect(asyncpg_dsn(test_database_url))
    transaction = idle.transaction()
    await transaction.start()
    await idle.execute("SELECT 1")
    try:
        async with running(settings) as http:
            body = (await http.get("/metrics")).text
    finally:
        await transaction.rollback()
        await idle.close()
    assert sample(body, "keel_db_insight_up") == 1
    assert (sample(body, "keel_db_connections", state="idle in transaction") or 0) >= 1
    assert (sample(body, "keel_db_longest_transaction_seconds") or -1) >= 0
    assert (sample(body, "keel_db_xid_age") or -1) >= 0
    for name in ("keel_db_deadlocks", "keel_db_temp_bytes", "keel_db_cache_hit_ratio"):
        assert sample(body, name) is not None, name


async def test_unreachable_database_never_fails_the_scrape(
    make_database: MakeDatabase, database_url: str, data_dir: Path
) -> None:
    url = await make_database(migrated=True)
    settings = make_settings(url, data_dir, insight_metrics_cache_seconds=0)
    async with running(settings) as http:
        assert sample((await http.get("/metrics")).text, "keel_db_insight_up") == 1
        admin = await asyncpg.connect(asyncpg_dsn(url_for_database(database_url, "postgres")))
        try:
            name = url.rsplit("/", 1)[1].split("?")[0]
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        response = await http.get("/metrics")
        assert response.status_code == 200
        assert sample(response.text, "keel_db_insight_up") == 0
        assert "keel_http_requests" in response.text  # the rest of the scrape is intact
