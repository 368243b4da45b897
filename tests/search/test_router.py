"""Full-text search: web syntax, ranking, safe highlights, visibility, odd input."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.posts.factory import make_post
from tests.users.factory import make_user, signed_in

SEARCH = "/api/v1/search/posts"


@pytest.fixture
async def corpus(app: FastAPI, db_session: AsyncSession) -> dict[str, str]:
    author = await make_user(app, db_session)
    posts = {
        "title_hit": await make_post(db_session, author, "Postgres indexing", "All about B-trees."),
        "body_hit": await make_post(
            db_session, author, "Weekend notes", "We talked about postgres at length."
        ),
        "phrase": await make_post(
            db_session, author, "Vector search", "Approximate nearest neighbour search."
        ),
        "html": await make_post(
            db_session, author, "Escaping", "<script>alert(1)</script> postgres & friends"
        ),
        "draft": await make_post(
            db_session, author, "Postgres secrets", "unpublished postgres", published=False
        ),
    }
    return {name: str(post.id) for name, post in posts.items()}


async def _search(client: AsyncClient, auth: dict[str, str], q: str, **params: int) -> list[str]:
    response = await client.get(SEARCH, headers=auth, params={"q": q, **params})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_title_matches_rank_above_body_matches(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, corpus: dict[str, str]
) -> None:
    _, auth = await signed_in(app, db_session, client)
    found = await _search(client, auth, "postgres")
    assert found[0] == corpus["title_hit"]
    assert set(found) == {corpus["title_hit"], corpus["body_hit"], corpus["html"]}


async def test_web_search_syntax(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, corpus: dict[str, str]
) -> None:
    _, auth = await signed_in(app, db_session, client)
    assert await _search(client, auth, '"nearest neighbour"') == [corpus["phrase"]]
    assert set(await _search(client, auth, "b-trees or neighbour")) == {
        corpus["title_hit"],
        corpus["phrase"],
    }
    without = await _search(client, auth, "postgres -weekend")
    assert corpus["body_hit"] not in without
    assert corpus["title_hit"] in without


async def test_highlights_are_html_safe(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, corpus: dict[str, str]
) -> None:
    _, auth = await signed_in(app, db_session, client)
    response = await client.get(SEARCH, headers=auth, params={"q": "postgres"})
    hits = {item["id"]: item for item in response.json()["items"]}
    assert hits[corpus["title_hit"]]["title_highlight"] == "<mark>Postgres</mark> indexing"
    snippet = hits[corpus["html"]]["snippet"]
    assert "<mark>postgres</mark>" in snippet
    assert "&gt;" in snippet  # the markup in the content arrives escaped...
    assert "<" not in re.sub(r"</?mark>", "", snippet)  # ...so <mark> is the only markup
    assert hits[corpus["title_hit"]]["rank"] > hits[corpus["body_hit"]]["rank"] > 0


async def test_drafts_are_found_only_by_their_author(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, corpus: dict[str, str]
) -> None:
    _, auth = await signed_in(app, db_session, client)
    assert corpus["draft"] not in await _search(client, auth, "secrets")
    _, admin = await signed_in(app, db_session, client, admin=True)
    assert corpus["draft"] in await _search(client, admin, "secrets")


async def test_pages_by_offset(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, corpus: dict[str, str]
) -> None:
    _, auth = await signed_in(app, db_session, client)
    first = await _search(client, auth, "postgres", limit=2)
    second = await _search(client, auth, "postgres", limit=2, offset=2)
    assert len(first) == 2
    assert len(second) == 1
    assert not set(first) & set(second)


@pytest.mark.parametrize("q", ["", "   ", "the", "the and of", "-", '"', "!!!", "\x00"])
async def test_empty_or_stopword_queries_find_nothing(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, corpus: dict[str, str], q: str
) -> None:
    _, auth = await signed_in(app, db_session, client)
    assert await _search(client, auth, q) == []


@pytest.mark.parametrize(
    "q", ["'", "\\", "&|!:*()", "postgres & | ! : * ( )", "a\x00b", "<>'\";--", "é" * 500]
)
async def test_odd_characters_never_fail(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, q: str
) -> None:
    _, auth = await signed_in(app, db_session, client)
    response = await client.get(SEARCH, headers=auth, params={"q": q})
    assert response.status_code == 200


async def test_huge_queries_are_refused_cleanly(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    _, auth = await signed_in(app, db_session, client)
    response = await client.get(SEARCH, headers=auth, params={"q": "x" * 10_240})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_search_is_served_by_the_gin_index(db_session: AsyncSession) -> None:
    await db_session.execute(text("SET enable_seqscan = off"))
    plan = "\n".join(
        (
            await db_session.scalars(
                text(
                    "EXPLAIN SELECT id FROM app.posts "
                    "WHERE search @@ websearch_to_tsquery('english', 'postgres')"
                )
            )
        ).all()
    )
    assert "ix_posts_search" in plan
