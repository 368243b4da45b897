"""Daily stats API: exact figures per UTC day, totals, validation, access, no leaked settings."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from keel.app import create_app
from keel.posts.models import Post
from keel.users.models import User
from tests.conftest import MakeDatabase, make_settings
from tests.posts.factory import make_post
from tests.users.factory import PASSWORD, bearer, make_user, sign_in, signed_in

STATS = "/api/v1/admin/stats/daily"
EXPLAIN = "/api/v1/admin/explain"
MARCH = {"start": "2020-03-01", "end": "2020-03-04"}


def at(day: int, hour: int = 12, minute: int = 0, month: int = 3, tz: timezone = UTC) -> datetime:
    return datetime(2020, month, day, hour, minute, tzinfo=tz)


async def backdate(
    session: AsyncSession, model: type[User] | type[Post], id_: UUID, when: datetime
) -> None:
    await session.execute(update(model).where(col(model.id) == id_).values(created_at=when))


async def march_activity(app: FastAPI, session: AsyncSession) -> None:
    """Five accounts and eight posts around 2020-03-01..04; the expected figures are below."""
    users = {}
    for name, created in {
        "ann": at(20, month=2),
        "eve": at(25, month=2),  # never posts
        "bob": at(1, 10),
        "cat": at(3, 12),
        "dan": at(5, 0),  # after the range
    }.items():
        users[name] = await make_user(app, session, username=name)
        await backdate(session, User, users[name].id, created)
    for name, created, published in [
        ("ann", at(1, 9), True),
        ("ann", at(2, 1, 30, tz=timezone(timedelta(hours=2))), True),  # 03-01 23:30 UTC
        ("bob", at(1, 12), False),  # drafts count
        ("ann", at(3, 8), True),
        ("cat", at(3, 13), True),
        ("cat", at(3, 14), True),
        ("bob", datetime(2020, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC), True),  # before
        ("bob", at(5, 0), True),  # the first instant after the range
        ("dan", at(5, 1), True),
    ]:
        post = await make_post(session, users[name], published=published)
        await backdate(session, Post, post.id, created)


def day(d: str, signups: int, posts: int, authors: int, users: int, rate: float) -> dict[str, Any]:
    return {
        "day": d,
        "signups": signups,
        "posts": posts,
        "unique_authors": authors,
        "users": users,
        "active_user_rate": rate,
    }


async def test_daily_figures_and_totals(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, admin = await signed_in(app, db_session, client, admin=True)
    await march_activity(app, db_session)
    response = await client.get(STATS, headers=admin, params=MARCH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["start"] == "2020-03-01"
    assert body["end"] == "2020-03-04"
    assert body["days"] == [
        day("2020-03-01", signups=1, posts=3, authors=2, users=3, rate=0.6667),
        day("2020-03-02", signups=0, posts=0, authors=0, users=3, rate=0.0),
        day("2020-03-03", signups=1, posts=3, authors=2, users=4, rate=0.5),
        day("2020-03-04", signups=0, posts=0, authors=0, users=4, rate=0.0),
    ]
    # Ann posted on two days: distinct over the range, not the sum of the days.
    assert body["totals"] == {
        "signups": 2,
        "posts": 6,
        "unique_authors": 3,
        "users": 4,
        "active_user_rate": 0.75,
    }


async def test_a_quiet_range_is_all_zeros(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, admin = await signed_in(app, db_session, client, admin=True)
    response = await client.get(
        STATS, headers=admin, params={"start": "1999-12-31", "end": "1999-12-31"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["days"] == [day("1999-12-31", 0, 0, 0, 0, 0.0)]
    assert response.json()["totals"]["active_user_rate"] == 0.0


async def test_range_limits(app: FastAPI, db_session: AsyncSession, client: AsyncClient) -> None:
    _, admin = await signed_in(app, db_session, client, admin=True)
    cap = app.state.settings.stats_max_days
    start = date(2021, 1, 1)
    longest = {"start": start.isoformat(), "end": (start + timedelta(days=cap - 1)).isoformat()}
    response = await client.get(STATS, headers=admin, params=longest)
    assert response.status_code == 200, response.text
    assert len(response.json()["days"]) == cap

    too_long = {**longest, "end": (start + timedelta(days=cap)).isoformat()}
    response = await client.get(STATS, headers=admin, params=too_long)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:keel:problem:invalid-date-range"
    assert f"at most {cap}" in problem["detail"]
    assert problem["max_days"] == cap

    for params in (
        {**MARCH, "end": "2020-02-29"},  # before the start
        {"start": "9999-12-31", "end": "9999-12-31"},  # no day after it to bound the range
    ):
        response = await client.get(STATS, headers=admin, params=params)
        assert response.status_code == 422, params
        assert response.json()["type"] == "urn:keel:problem:invalid-date-range"


async def test_dates_must_be_calendar_dates(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, admin = await signed_in(app, db_session, client, admin=True)
    for params in (
        {"start": "2020-02-30", "end": "2020-03-01"},
        {"start": "1583020800", "end": "2020-03-01"},  # a Unix timestamp is not a date
        {"start": "2020-03-01T00:00:00", "end": "2020-03-01"},
        {"start": "2020-03-01"},
    ):
        response = await client.get(STATS, headers=admin, params=params)
        assert response.status_code == 422, params
        assert response.json()["type"] == "urn:keel:problem:validation-failed"


async def test_admins_only(app: FastAPI, db_session: AsyncSession, client: AsyncClient) -> None:
    _, member = await signed_in(app, db_session, client)
    forbidden = await client.get(STATS, headers=member, params=MARCH)
    assert forbidden.status_code == 403
    assert forbidden.headers["content-type"] == "application/problem+json"
    assert (await client.get(STATS, params=MARCH)).status_code == 401


async def test_planner_settings_end_with_the_request(
    make_database: MakeDatabase, data_dir: Path
) -> None:
    """One pooled connection serves every request: nothing SET LOCAL may survive on it."""
    settings = make_settings(
        await make_database(migrated=True),
        data_dir,
        db_pool_size=1,
        stats_parallel_workers=3,
        first_superuser_email="root@example.com",
        first_superuser_username="root",
        first_superuser_password=PASSWORD,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        engine = application.state.db.engine
        async with engine.connect() as connection:
            backend = await connection.scalar(text("SELECT pg_backend_pid()"))
            default = await connection.scalar(
                text("SELECT reset_val FROM pg_settings WHERE name = :name"),
                {"name": "max_parallel_workers_per_gather"},
            )
        assert default != "3"  # else the check below could not tell a leak from the default

        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            admin = bearer(await sign_in(http, "root"))
            explained = await http.get(f"{EXPLAIN}/daily_stats", headers=admin)
            assert explained.status_code == 200, explained.text
            # In force while the report runs ...
            assert explained.json()["plan"]["Settings"]["max_parallel_workers_per_gather"] == "3"
            stats = await http.get(STATS, headers=admin, params=MARCH)
            assert stats.status_code == 200, stats.text

        # ... and gone from the connection afterwards.
        async with engine.connect() as connection:
            assert await connection.scalar(text("SELECT pg_backend_pid()")) == backend
            shown = await connection.scalar(text("SHOW max_parallel_workers_per_gather"))
            assert shown == default
            assert await connection.scalar(text("SHOW transaction_read_only")) == "off"
