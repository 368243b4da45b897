"""Full-text search in an organization: web syntax, ranking, safe highlights, drafts, odd input."""

from __future__ import annotations

import re
from uuid import UUID, uuid4

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from keel.search.repository import Reader, search_statement
from tests.search.factory import insert_post, member, search_path
from tests.users.factory import bearer, make_user, sign_in, signed_in


@pytest.fixture
async def corpus(app: FastAPI, db_session: AsyncSession) -> dict[str, str]:
    """Posts in their author's personal organization (its id is the author's), under "org"."""
    author = await make_user(app, db_session)
    org = author.id

    async def post(title: str, content: str, *, published: bool = True) -> str:
        return await insert_post(db_session, org, author.id, title, content, published=published)

    return {
        "org": str(org),
        "author": author.username,
        "title_hit": await post("Postgres indexing", "All about B-trees."),
        "body_hit": await post("Weekend notes", "We talked about postgres at length."),
        "phrase": await post("Vector search", "Approximate nearest neighbour search."),
        "html": await post("Escaping", "<script>alert(1)</script> postgres & friends"),
        "draft": await post("Postgres secrets", "unpublished postgres", published=False),
    }


async def _reader(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, corpus: dict[str, str]
) -> dict[str, str]:
    _, auth = await member(app, db_session, client, corpus["org"], "member")
    return auth


async def _search(
    client: AsyncClient, auth: dict[str, str], org: str, q: str, **params: int
) -> list[str]:
    response = await client.get(search_path(org), headers=auth, params={"q": q, **params})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_title_matches_rank_above_body_matches(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, corpus: dict[str, str]
) -> None:
    auth = await _reader(app, db_session, client, corpus)
    found = await _search(client, auth, corpus["org"], "postgres")
    assert found[0] == corpus["title_hit"]
    assert set(found) == {corpus["title_hit"], corpus["body_hit"], corpus["html"]}


async def test_web_search_syntax(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, corpus: dict[str, str]
) -> None:
    auth = await _reader(app, db_session, client, corpus)
    org = corpus["org"]
    assert await _search(client, auth, org, '"nearest neighbour"') == [corpus["phrase"]]
    assert set(await _search(client, auth, org, "b-trees or neighbour")) == {
        corpus["title_hit"],
        corpus["phrase"],
    }
    without = await _search(client, auth, org, "postgres -weekend")
    assert corpus["body_hit"] not in without
    assert corpus["title_hit"] in without


async def test_highlights_are_html_safe(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, corpus: dict[str, str]
) -> None:
    auth = await _reader(app, db_session, client, corpus)
    response = await client.get(search_path(corpus["org"]), headers=auth, params={"q": "postgres"})
    hits = {item["id"]: item for item in response.json()["items"]}
    assert hits[corpus["title_hit"]]["title_highlight"] == "<mark>Postgres</mark> indexing"
    snippet = hits[corpus["html"]]["snippet"]
    assert "<mark>postgres</mark>" in snippet
    assert "&gt;" in snippet  # the markup in the content arrives escaped...
    assert "<" not in re.sub(r"</?mark>", "", snippet)  # ...so <mark> is the only markup
    assert hits[corpus["title_hit"]]["rank"] > hits[corpus["body_hit"]]["rank"] > 0


async def test_drafts_are_found_by_their_author_and_the_organization_admins(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, corpus: dict[str, str]
) -> None:
    org, draft = corpus["org"], corpus["draft"]
    auth = await _reader(app, db_session, client, corpus)
    assert draft not in await _search(client, auth, org, "secrets")
    author = bearer(await sign_in(client, corpus["author"]))
    assert draft in await _search(client, author, org, "secrets")
    _, org_admin = await member(app, db_session, client, org, "admin")
    assert draft in await _search(client, org_admin, org, "secrets")
    _, platform_admin = await signed_in(app, db_session, client, admin=True)
    assert draft in await _search(client, platform_admin, org, "secrets")


async def test_pages_by_offset(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, corpus: dict[str, str]
) -> None:
    auth = await _reader(app, db_session, client, corpus)
    first = await _search(client, auth, corpus["org"], "postgres", limit=2)
    second = await _search(client, auth, corpus["org"], "postgres", limit=2, offset=2)
    assert len(first) == 2
    assert len(second) == 1
    assert not set(first) & set(second)


@pytest.mark.parametrize("q", ["", "   ", "the", "the and of", "-", '"', "!!!", "\x00"])
async def test_empty_or_stopword_queries_find_nothing(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, corpus: dict[str, str], q: str
) -> None:
    auth = await _reader(app, db_session, client, corpus)
    assert await _search(client, auth, corpus["org"], q) == []


@pytest.mark.parametrize(
    "q", ["'", "\\", "&|!:*()", "postgres & | ! : * ( )", "a\x00b", "<>'\";--", "é" * 500]
)
async def test_odd_characters_never_fail(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient, q: str
) -> None:
    user, auth = await signed_in(app, db_session, client)
    response = await client.get(search_path(user.id), headers=auth, params={"q": q})
    assert response.status_code == 200


async def test_huge_queries_are_refused_cleanly(
    app: FastAPI, db_session: AsyncSession, client: AsyncClient
) -> None:
    user, auth = await signed_in(app, db_session, client)
    response = await client.get(search_path(user.id), headers=auth, params={"q": "x" * 10_240})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_search_is_served_by_the_tenant_gin_index(
    db_session: AsyncSession, corpus: dict[str, str]
) -> None:
    """The app's own statement: `tenant_id = $t AND search @@ $q` is one GIN scan."""
    await db_session.execute(  # enough of the organization's posts that scanning it all loses
        text(
            "INSERT INTO app.posts (tenant_id, id, title, content, author_id)"
            " SELECT :t, gen_random_uuid(), 'Note ' || i, 'words about gardening ' || i, :t"
            " FROM generate_series(1, 5000) AS i"
        ),
        {"t": corpus["org"]},
    )
    await db_session.execute(text("ANALYZE app.posts"))
    statement = search_statement(
        UUID(corpus["org"]),
        Reader(uuid4(), False),
        "postgres",
        config="english",
        limit=20,
        offset=0,
    )
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    await db_session.execute(text("SET enable_seqscan = off"))
    plan = "\n".join((await db_session.scalars(text(f"EXPLAIN {sql}"))).all())
    assert "ix_posts_tenant_id_search" in plan
    assert f"tenant_id = '{corpus['org']}'::uuid" in plan
