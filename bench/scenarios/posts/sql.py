"""The SQL side of the posts scenario: the app's statements, seeded-data facts, plans."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from bench.harness.base import BenchError
from bench.harness.pg import psql, quote_literal
from keel.core.embedded import EmbeddedPostgres

SEARCH_CONFIG = "english"


def child_sql(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The SQL the app runs, from its repository code (in a child, so --ref applies).

    Search: SQLAlchemy statements, compiled with the values inlined (for pgbench). The read
    path: the prepared statements' text and arguments, as the router passes them.
    """
    from datetime import datetime
    from uuid import UUID, uuid4

    from sqlalchemy.dialects import postgresql
    from sqlalchemy.sql.selectable import Subquery

    from keel.core.pagination import CursorCodec
    from keel.core.viewer import Role, Viewer
    from keel.orgs.permissions import OrgActor
    from keel.posts import repository as posts_repo
    from keel.search import service as search_service

    literal = postgresql.dialect()  # type: ignore[no-untyped-call]

    def sql(statement: Any) -> str:
        return str(statement.compile(dialect=literal, compile_kwargs={"literal_binds": True}))

    def inner_select(statement: Any) -> Any:
        stack = list(statement.get_final_froms())
        while stack:
            node = stack.pop()
            if isinstance(node, Subquery):
                return node.element
            kids = (getattr(node, "left", None), getattr(node, "right", None))
            stack += [c for c in kids if c is not None]
        raise BenchError("no ranked subquery in the search statement: update bench/scenarios/posts")

    def prepared(text: str, args: Sequence[Any]) -> dict[str, Any]:
        plain = [a.isoformat() if isinstance(a, datetime) else a for a in args]
        return {"sql": text, "args": [str(a) if isinstance(a, UUID) else a for a in plain]}

    viewer = Viewer(
        user_id=UUID(spec["viewer_id"]), family_id=uuid4(), is_superuser=False, is_active=True
    )
    actor = OrgActor(viewer.user_id, viewer, Role.OWNER)  # in their personal organization
    full, ranked = [], []
    for q in spec["queries"]:
        stmt = search_service.search_statement(actor, q, config=SEARCH_CONFIG, limit=20, offset=0)
        full.append(sql(stmt))
        ranked.append(sql(inner_select(stmt)))
    after = CursorCodec(spec["secret"], purpose="posts").decode(spec["cursor"])
    filters = posts_repo.PostFilters()
    limit = spec["limit"] + 1  # as the router asks for one more to know if there is a next page
    first = posts_repo.list_query(actor, filters, limit=limit)
    keyset = posts_repo.list_query(actor, filters, limit=limit, after=after)
    offset = posts_repo.list_query(actor, filters, limit=limit, offset=spec["offset"])
    by_id = [actor.organization_id, UUID(spec["post_id"]), viewer.user_id, True]
    return {
        "search_full": full,
        "search_ranked": ranked,
        "list_first": prepared(*first),
        "list_keyset": prepared(*keyset),
        "list_offset": prepared(*offset),
        "get_post": prepared(posts_repo.READ_VISIBLE, by_id),
        "cursor_position": [after[0].isoformat(), str(after[1])],
    }


def data_facts(pg: EmbeddedPostgres) -> dict[str, Any]:
    row = psql(
        pg,
        """
        SELECT count(*), count(*) FILTER (WHERE is_published),
               (SELECT count(*) FROM app.users),
               round(avg(length(content))), round(avg(pg_column_size(search))),
               pg_size_pretty(pg_table_size('app.posts')),
               pg_size_pretty(pg_relation_size('app.ix_posts_tenant_id_search')),
               pg_size_pretty(pg_relation_size('app.ix_posts_tenant_id_created_at_id'))
        FROM app.posts;
        """,
    ).split("|")
    keys = (
        "posts",
        "published",
        "users",
        "avg_content_chars",
        "avg_search_tsvector_bytes",
        "posts_table_size_incl_toast",
        "ix_posts_search_size",
        "ix_posts_created_at_id_size",
    )
    return {k: (int(v) if v.isdigit() else v) for k, v in zip(keys, row, strict=True)}


def one_organization(pg: EmbeddedPostgres, org_id: str) -> None:
    """Move every post into one organization (the seed spreads them over personal ones),
    so the lists, pages and searches run over all of them, as in one large tenant."""
    psql(
        pg,
        f"DELETE FROM app.post_embeddings;UPDATE app.posts SET tenant_id = '{UUID(org_id)}';",  # noqa: S608 - a parsed UUID
    )


def pick_viewer(pg: EmbeddedPostgres) -> dict[str, Any]:
    """An active, ordinary seeded user with the median number of posts (a typical reader)."""
    row = psql(
        pg,
        """
        SELECT u.username, u.id, count(p.id), count(p.id) FILTER (WHERE NOT p.is_published)
        FROM app.users u LEFT JOIN app.posts p ON p.author_id = u.id
        WHERE u.is_active AND NOT u.is_superuser
        GROUP BY u.id
        ORDER BY count(p.id), u.username
        OFFSET (SELECT count(*) / 2 FROM app.users WHERE is_active AND NOT is_superuser)
        LIMIT 1;
        """,
    )
    username, user_id, posts, drafts = row.split("|")
    return {"username": username, "id": user_id, "posts": int(posts), "drafts": int(drafts)}


def word_stats(pg: EmbeddedPostgres) -> list[tuple[str, int]]:
    """Every lexeme in app.posts.search with the number of posts holding it, commonest first."""
    out = psql(
        pg,
        "SELECT word, ndoc FROM ts_stat('SELECT search FROM app.posts') ORDER BY ndoc DESC, word;",
    )
    return [(w, int(n)) for w, n in (line.split("|") for line in out.splitlines())]


def pick_queries(pg: EmbeddedPostgres, words: Sequence[tuple[str, int]]) -> list[str]:
    """Queries drawn from the seeded text, reproducibly for a given seed.

    Words are those of median-ish document frequency (the middle half of the lexemes by
    frequency, so neither the handful of very common nor the rarest), in md5 order. The
    phrase is the start of a seeded title. Kinds: 1 word, 2 words, 3 words, "phrase",
    word or word.
    """
    if len(words) < 40:
        raise BenchError(f"only {len(words)} distinct lexemes in the seeded posts")
    middle = [w for w, _ in words[len(words) // 4 : 3 * len(words) // 4] if w.isalpha()]
    middle.sort(key=lambda w: hashlib.sha256(w.encode()).hexdigest())
    # Two leading title words that both survive as lexemes, so the tsquery is a real phrase.
    phrase = psql(
        pg,
        f"""
        SELECT p FROM (
            SELECT DISTINCT array_to_string((string_to_array(lower(title), ' '))[1:2], ' ') AS p
            FROM app.posts WHERE title ~ '^[A-Za-z]+ [A-Za-z]+ '
        ) s
        WHERE websearch_to_tsquery('{SEARCH_CONFIG}', '"' || p || '"')::text LIKE '%<->%'
        ORDER BY md5(p) LIMIT 1;
        """,  # noqa: S608 - a constant
    )
    return [
        middle[0],
        f"{middle[1]} {middle[2]}",
        f"{middle[3]} {middle[4]} {middle[5]}",
        f'"{phrase}"',
        f"{middle[6]} or {middle[7]}",
    ]


def query_matches(pg: EmbeddedPostgres, queries: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for q in queries:
        tsq = f"websearch_to_tsquery('{SEARCH_CONFIG}', {quote_literal(q)})"
        row = psql(
            pg,
            f"SELECT {tsq}::text, count(*), count(*) FILTER (WHERE is_published) "  # noqa: S608
            f"FROM app.posts WHERE search @@ {tsq};",
        )
        tsquery, matches, published = row.rsplit("|", 2)
        out.append(
            {"query": q, "tsquery": tsquery, "matches": int(matches), "published": int(published)}
        )
    return out


def posts_scan(plan: str) -> str:
    """How a plan reads app.posts: its first scan node on posts (or one of its indexes)."""
    match = re.search(
        r"(Bitmap Index Scan on ix_posts_\w+|Index (?:Only )?Scan(?: Backward)? using \w+ on posts"
        r"|Seq Scan on posts|Parallel Seq Scan on posts)",
        plan,
    )
    return match[1] if match else "?"


def plan_uses(plan: str, index: str) -> bool:
    return f" {index} " in plan or plan.rstrip().endswith(f" {index}")


def plan_summary(plan: str) -> str:
    """The plan's node lines (no buffers/settings), joined, for a one-line Markdown summary."""
    keep = []
    for line in plan.splitlines():
        text = line.strip().removeprefix("->").strip()
        if not text or text.startswith(("Buffers:", "Settings:", "Planning", "I/O Timings")):
            continue
        if text.startswith("Execution Time"):
            keep.append(text)
            continue
        if "(cost=" in text or text.startswith(("Index Cond", "Filter", "Rows Removed")):
            keep.append(text.split("  (cost=")[0].split(" (cost=")[0])
    return "`" + " → ".join(keep) + "`"


def main_sql_ms(rows: Sequence[Mapping[str, Any]]) -> float:
    """Mean ms of the busiest statement on app.posts (the endpoint's main query)."""
    for row in rows:
        if "app.posts" in row["query"]:
            return float(row["mean_ms"])
    return 0.0
