"""The viewer cache: what it keeps, and how NOTIFY and a lost listener empty it."""

from __future__ import annotations

import asyncio
import time
from uuid import UUID, uuid4

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.viewer import Viewer, ViewerCache
from tests.users.factory import signed_in

ME = "/api/v1/users/me"


def _viewer(user_id: UUID | None = None, family_id: UUID | None = None) -> Viewer:
    return Viewer(
        user_id=user_id or uuid4(), family_id=family_id or uuid4(), is_superuser=False,
        is_active=True,
    )  # fmt: skip


def _cache(**overrides: float) -> ViewerCache:
    cache = ViewerCache(max_entries=int(overrides.get("max_entries", 10)),
                        ttl_seconds=overrides.get("ttl_seconds", 60.0))  # fmt: skip
    cache.usable = True
    return cache


def test_keeps_viewers_per_user_and_family_and_evicts_by_either() -> None:
    cache = _cache()
    user = uuid4()
    one, two, other = _viewer(user), _viewer(user), _viewer()
    for viewer in (one, two, other):
        cache.put(viewer, cache.generation)
    assert cache.get(one.user_id, one.family_id) == one
    cache.apply(f"family:{one.family_id}")
    assert cache.get(one.user_id, one.family_id) is None
    assert cache.get(two.user_id, two.family_id) == two
    cache.apply(f"user:{user}")
    assert cache.get(two.user_id, two.family_id) is None
    assert cache.get(other.user_id, other.family_id) == other
    cache.apply("something unexpected")  # unknown payloads clear everything: never stale
    assert len(cache) == 0


def test_a_lookup_that_straddles_an_eviction_is_not_kept() -> None:
    cache = _cache()
    viewer = _viewer()
    generation = cache.generation  # the lookup starts ...
    cache.evict_family(viewer.family_id)  # ... a revocation lands meanwhile ...
    cache.put(viewer, generation)  # ... and its (possibly stale) answer is dropped
    assert cache.get(viewer.user_id, viewer.family_id) is None


def test_entries_expire_at_the_ttl_ceiling_and_the_size_is_bounded() -> None:
    cache = _cache(ttl_seconds=0.05, max_entries=3)
    viewers = [_viewer() for _ in range(5)]
    for viewer in viewers:
        cache.put(viewer, cache.generation)
    assert len(cache) == 3
    assert cache.get(viewers[0].user_id, viewers[0].family_id) is None  # the oldest went
    time.sleep(0.06)
    assert cache.get(viewers[4].user_id, viewers[4].family_id) is None


def test_nothing_is_cached_or_served_while_unusable() -> None:
    cache = _cache()
    viewer = _viewer()
    cache.put(viewer, cache.generation)
    cache.usable = False
    assert cache.get(viewer.user_id, viewer.family_id) is None
    cache.put(_viewer(), cache.generation)
    assert len(cache) == 1


async def _until(condition: object, within: float = 1.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        await asyncio.sleep(0.01)
    return bool(callable(condition) and condition())


async def test_revoking_a_session_in_sql_evicts_it_within_a_second(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    """The trigger's NOTIFY, not the request path, evicts: the revocation here is raw SQL."""
    user, auth = await signed_in(app, db_session, client)
    assert (await client.get(ME, headers=auth)).status_code == 200
    cache: ViewerCache = app.state.db.viewers
    assert len(cache) == 1
    await db_session.execute(
        text("UPDATE app.token_families SET revoked_at = now() WHERE user_id = :id"),
        {"id": user.id},
    )
    assert await _until(lambda: len(cache) == 0)
    assert (await client.get(ME, headers=auth)).status_code == 401


async def test_deactivating_and_demoting_in_sql_are_heard(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client, admin=True)
    assert (await client.get("/api/v1/admin/jobs", headers=auth)).status_code == 200
    cache: ViewerCache = app.state.db.viewers
    await db_session.execute(
        text("UPDATE app.users SET is_superuser = false WHERE id = :id"), {"id": user.id}
    )
    assert await _until(lambda: len(cache) == 0)
    assert (await client.get("/api/v1/admin/jobs", headers=auth)).status_code == 403
    await db_session.execute(
        text("UPDATE app.users SET is_active = false WHERE id = :id"), {"id": user.id}
    )
    assert await _until(lambda: len(cache) == 0)
    assert (await client.get(ME, headers=auth)).status_code == 401


async def test_logout_evicts_before_the_response(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, auth = await signed_in(app, db_session, client)
    assert (await client.get(ME, headers=auth)).status_code == 200
    assert (await client.post("/api/v1/auth/logout", headers=auth)).status_code == 204
    # No waiting: the request that revoked evicted locally once it committed.
    assert (await client.get(ME, headers=auth)).status_code == 401


async def test_a_lost_listener_empties_the_cache_and_bypasses_it_until_back(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, auth = await signed_in(app, db_session, client)
    assert (await client.get(ME, headers=auth)).status_code == 200
    cache: ViewerCache = app.state.db.viewers
    assert len(cache) == 1
    await db_session.execute(
        text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'keel-viewer-listener' AND datname = current_database()"
        )
    )
    # The listener may be back within milliseconds; what must hold is that the cache was
    # emptied (`test_nothing_is_cached_or_served_while_unusable` covers the deaf window).
    assert await _until(lambda: len(cache) == 0)
    assert (await client.get(ME, headers=auth)).status_code == 200
    # The listener reconnects on its own, and caching resumes.
    assert await _until(lambda: cache.usable, within=5.0)
    assert (await client.get(ME, headers=auth)).status_code == 200
    assert len(cache) == 1
