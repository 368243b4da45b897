"""EXPLAIN API: the app's own statements only, bound parameters, plans and their summary."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from keel.insight import repository
from keel.posts.models import Post
from tests.posts.factory import make_post
from tests.users.factory import make_user, signed_in

EXPLAIN = "/api/v1/admin/explain"
NAMES = ("post_list", "post_search", "daily_stats")


@pytest.fixture
async def admin(app: FastAPI, db_session: AsyncSession, client: AsyncClient) -> dict[str, str]:
    """A platform admin whose own (personal) organization, explained by default, has posts."""
    author, auth = await signed_in(app, db_session, client, admin=True)
    await make_post(db_session, author, "Postgres plans", "Reading EXPLAIN output.")
    await make_post(db_session, author, "Draft", "postgres again", published=False)
    return auth


async def _explain(client: AsyncClient, auth: dict[str, str], name: str, **params: str) -> Any:
    response = await client.get(f"{EXPLAIN}/{name}", headers=auth, params=params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("name", NAMES)
async def test_each_named_query_returns_its_plan(
    client: AsyncClient, admin: dict[str, str], name: str
) -> None:
    body = await _explain(client, admin, name)
    plan, summary = body["plan"], body["summary"]
    assert body["query"] == name
    assert {"Plan", "Planning", "Planning Time", "Serialization", "Execution Time"} <= set(plan)
    assert "Actual Rows" in plan["Plan"]  # ANALYZE ran it
    assert "Shared Hit Blocks" in plan["Plan"]  # BUFFERS
    assert summary["top_node_type"] == plan["Plan"]["Node Type"]
    assert summary["planning_ms"] == plan["Planning Time"]
    assert summary["execution_ms"] == plan["Execution Time"]
    assert summary["planner_memory_used_kb"] == plan["Planning"]["Memory Used"]
    assert summary["serialized_kb"] == plan["Serialization"]["Output Volume"]
    assert summary["serialization_ms"] == plan["Serialization"]["Time"]
    assert summary["parallel"] is ("Gather" in str(plan["Plan"]))
    assert "$1" in body["sql"]


async def test_plans_name_the_indexes_they_use(
    db_session: AsyncSession, client: AsyncClient, admin: dict[str, str]
) -> None:
    # A handful of rows would be read sequentially, and a tenant's few rows by its btree:
    # give the admin's organization enough posts for the list and search indexes to pay.
    me = (await client.get("/api/v1/users/me", headers=admin)).json()["id"]
    await db_session.execute(
        text(
            "INSERT INTO app.posts (tenant_id, id, title, content, is_published, author_id)"
            " SELECT :me, gen_random_uuid(), 'post ' || n, 'filler words', true, :me"
            " FROM generate_series(1, 5000) n"
        ),
        {"me": me},
    )
    await db_session.commit()
    await db_session.execute(text("ANALYZE app.posts"))
    listing = (await _explain(client, admin, "post_list"))["summary"]
    assert listing["uses_index"] is True
    assert "ix_posts_tenant_id_created_at_id" in listing["indexes"]
    search = (await _explain(client, admin, "post_search", q="postgres"))["summary"]
    assert "ix_posts_tenant_id_search" in search["indexes"]


async def test_explain_reads_one_organization_only(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, admin: dict[str, str]
) -> None:
    other = await make_user(app, db_session)
    for n in range(5):
        await make_post(db_session, other, f"postgres {n}")
    own = (await _explain(client, admin, "post_list"))["plan"]["Plan"]
    theirs = (await _explain(client, admin, "post_list", org_id=str(other.id)))["plan"]["Plan"]
    assert own["Actual Rows"] == 2  # the admin's published post and draft, nothing of `other`
    assert theirs["Actual Rows"] == 5
    found = await _explain(client, admin, "post_search", q="postgres", org_id=str(other.id))
    assert found["plan"]["Plan"]["Actual Rows"] == 5


async def test_explains_exactly_what_the_app_runs(
    db_session: AsyncSession, client: AsyncClient, admin: dict[str, str]
) -> None:
    me = (await client.get("/api/v1/users/me", headers=admin)).json()["id"]
    listed = await client.get(f"/api/v1/orgs/{me}/posts", headers=admin, params={"limit": 20})
    found = await client.get(
        f"/api/v1/orgs/{me}/search/posts", headers=admin, params={"q": "postgres"}
    )
    assert listed.status_code == found.status_code == 200
    # Top-level statements only: EXPLAIN's own run of a query is recorded as nested.
    ran = set(
        (
            await db_session.scalars(text("SELECT queryid FROM pg_stat_statements WHERE toplevel"))
        ).all()
    )
    for name in ("post_list", "post_search"):
        summary = (await _explain(client, admin, name))["summary"]
        assert summary["query_id"] in ran, name
    stats = (await _explain(client, admin, "daily_stats"))["summary"]
    assert stats["query_id"] not in ran  # the report has not run


async def test_search_terms_travel_as_parameters(
    db_session: AsyncSession, client: AsyncClient, admin: dict[str, str]
) -> None:
    term = "x'); DELETE FROM app.posts; --"
    body = await _explain(client, admin, "post_search", q=term)
    assert term not in body["sql"]
    assert "DELETE" not in body["sql"]
    assert await db_session.scalar(select(func.count()).select_from(Post)) == 2


async def test_only_named_queries_and_sane_terms(
    client: AsyncClient, admin: dict[str, str]
) -> None:
    for url, params in (
        (f"{EXPLAIN}/users_table", {}),
        (f"{EXPLAIN}/SELECT%201", {}),
        (f"{EXPLAIN}/post_search", {"q": "   "}),
        (f"{EXPLAIN}/post_search", {"q": "a\x00b"}),
    ):
        response = await client.get(url, headers=admin, params=params)
        assert response.status_code == 422, url
        assert response.json()["type"] == "urn:keel:problem:validation-failed"


async def test_admins_only(app: FastAPI, db_session: AsyncSession, client: AsyncClient) -> None:
    _, member = await signed_in(app, db_session, client)
    assert (await client.get(f"{EXPLAIN}/post_list", headers=member)).status_code == 403
    assert (await client.get(f"{EXPLAIN}/post_list")).status_code == 401


async def test_explain_cannot_change_data(app: FastAPI, db_session: AsyncSession) -> None:
    post = await make_post(db_session, await make_user(app, db_session), "Keep me")
    renamed = (
        update(Post)
        .where(col(Post.id) == post.id)
        .values(title="Changed")
        .returning(col(Post.id))
        .cte("renamed")
    )
    # EXPLAIN runs inside the request's transaction (TransactionDep), as here.
    async with app.state.db.sessionmaker() as tx:
        with pytest.raises(DBAPIError, match="read-only transaction"):
            await repository.explain(tx, select(renamed.c.id))  # a SELECT that writes
        # The savepoint is gone, and the transaction around it writes again.
        assert await tx.scalar(text("SHOW transaction_read_only")) == "off"
        await tx.commit()
    title = await db_session.scalar(select(col(Post.title)).where(col(Post.id) == post.id))
    assert title == "Keep me"
