"""Role changes and removals reach every worker process: `keel serve --workers 2`,
for the organization and for its data (posts)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx

from tests.auth.test_workers import _sign_up
from tests.conftest import asyncpg_dsn
from tests.test_cli import KeelLauncher, KeelServer
from tests.test_cli import keel as keel  # the fixture that starts and reaps `keel serve`

REQUESTS = 12  # fresh connections each: both workers get some


async def _statuses(server: KeelServer, url: str, auth: dict[str, str]) -> set[int]:
    statuses = set()
    for _ in range(REQUESTS):
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            statuses.add((await http.get(url, headers=auth)).status_code)
    return statuses


async def test_role_changes_and_removals_reach_every_worker_within_a_second(
    keel: KeelLauncher, test_database_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = keel.serve(
        data_dir, "--workers", "2", DATABASE_URL=test_database_url, KEEL_AUTO_MIGRATE="false"
    )
    server.wait_ready("/health/ready")
    owner = await _sign_up(server, "owner")
    member = await _sign_up(server, "member")
    async with httpx.AsyncClient(base_url=server.base_url + "/api/v1") as http:
        org = (await http.post("/orgs", json={"name": "A", "slug": "a"}, headers=owner)).json()
        body = {"title": "Team news", "content": "words", "is_published": True}
        post = (await http.post(f"/orgs/{org['id']}/posts", json=body, headers=owner)).json()
    base = f"/api/v1/orgs/{org['id']}"
    post_url = f"{base}/posts/{post['id']}"
    conn = await asyncpg.connect(asyncpg_dsn(test_database_url))
    try:
        member_id = await conn.fetchval("SELECT id FROM app.users WHERE username = 'member'")
        await conn.execute(
            "INSERT INTO app.memberships (tenant_id, user_id, role) VALUES ($1, $2, 'admin')",
            org["id"],
            member_id,
        )
    finally:
        await conn.close()
    await asyncio.sleep(1.0)
    assert await _statuses(server, f"{base}/invitations", member) == {200}
    assert await _statuses(server, f"{base}/invitations", member) == {200}  # now cached
    assert await _statuses(server, post_url, member) == {200}

    async with httpx.AsyncClient(base_url=server.base_url) as http:
        changed = await http.patch(
            f"{base}/members/{member_id}", json={"role": "viewer"}, headers=owner
        )
    assert changed.status_code == 200
    await asyncio.sleep(1.0)
    assert await _statuses(server, f"{base}/invitations", member) == {403}
    assert await _statuses(server, base, member) == {200}
    assert await _statuses(server, post_url, member) == {200}  # a viewer still reads

    async with httpx.AsyncClient(base_url=server.base_url) as http:
        removed = await http.delete(f"{base}/members/{member_id}", headers=owner)
    assert removed.status_code == 204
    await asyncio.sleep(1.0)
    assert await _statuses(server, base, member) == {404}
    assert await _statuses(server, post_url, member) == {404}  # the organization's data too
