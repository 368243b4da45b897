"""`keel db insight ...`: tables, --json, and exit status 2 when a check is critical."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

from tests.conftest import asyncpg_dsn
from tests.test_cli import keel_env, run_keel

REPORTS = ("overview", "queries", "activity", "space", "indexes", "io", "settings")


async def test_reports_print_and_exit_by_overview_status(
    test_database_url: str, tmp_path: Path
) -> None:
    env = keel_env(tmp_path, DATABASE_URL=test_database_url)
    for report in REPORTS:
        result = run_keel(tmp_path, "db", "insight", report, env=env)
        # Some checks see the whole cluster (connections, slots), shared with other tests.
        assert result.returncode in (0, 2), (report, result.stderr)
        assert result.stdout.strip(), report
    overview = run_keel(tmp_path, "db", "insight", "overview", "--json", env=env)
    status = json.loads(overview.stdout)["status"]
    assert overview.returncode == (2 if status == "critical" else 0)

    conn = await asyncpg.connect(asyncpg_dsn(test_database_url))
    try:
        await conn.execute("CREATE TABLE app.orders (id serial PRIMARY KEY)")
        await conn.execute("SELECT setval('app.orders_id_seq', 2100000000)")
    finally:
        await conn.close()
    critical = run_keel(tmp_path, "db", "insight", "overview", "--json", env=env)
    assert critical.returncode == 2, critical.stderr
    body = json.loads(critical.stdout)
    assert body["status"] == "critical"
    table = run_keel(tmp_path, "db", "insight", "indexes", env=env)
    assert table.returncode == 2  # any report exits 2 while a check is critical
    assert "Unused indexes" in table.stdout
