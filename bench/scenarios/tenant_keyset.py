"""Keyset page 500 ÷ page 1 inside one tenant, among 1,000 tenants × 1,000 posts.

Data: `keel seed --tenants 1000 --posts-per-tenant 1000 --published-ratio 1` (1,000
users whose personal organizations hold 1,000 posts each, all published, so every
reader sees every post of the tenant whatever the visibility rules), then VACUUM
ANALYZE. The reader is one of the tenants' owners.

"Page 500" is at `--limit 2` (the default): following `next_cursor` from
`GET /api/v1/orgs/{org_id}/posts?limit=2`, page 500 holds rows 999 and 1,000 of the
tenant's 1,000, its oldest: the deepest page there is. The walk checks that it returns
exactly those rows (ORDER BY created_at DESC, id DESC OFFSET 998 in SQL).

Measured on one server, alternating: `GET .../posts?limit=2` (page 1) and
`GET .../posts?limit=2&cursor=<page 500's>` (wrk, closed loop). Figure: page 500 ÷
page 1 req/s (target ≥ 0.8), with the busiest SQL statement of each run.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

from bench.harness import load as ld
from bench.harness import results as res
from bench.harness.base import API, BenchError
from bench.harness.keel_api import SEEDED_PASSWORD, bearer, login, walk_cursor
from bench.harness.noise import noise_warning
from bench.harness.pg import explain_prepared, psql
from bench.harness.proc import run_child
from bench.harness.scenario import Results, Scenario, add_quick, apply_quick, first_line
from bench.harness.seeded import seeded_reads
from bench.harness.server import add_server_args
from bench.harness.wrk import Load

NAME = "tenant_keyset"
APP = "keel.app:create_app"
TARGET = 0.8
LIST = API + "/orgs/{org_id}/posts"
QUICK = {
    "tenants": 20,
    "posts_per_tenant": 200,
    "page": 100,
    "rounds": 1,
    "duration": 2.0,
    "warmup": 0.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ld.add_load_args(parser)
    add_server_args(parser)
    parser.add_argument("--tenants", type=int, default=1_000)
    parser.add_argument("--posts-per-tenant", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--limit", type=int, default=2, help="page size")
    parser.add_argument("--page", type=int, default=500, help="the deep page to compare")
    add_quick(parser, QUICK)


def child_list_sql(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The list statements the app prepares for page 1 and for the deep page (its cursor
    position given), as the reader (owner of the organization) gets them; in a child so
    --ref applies."""
    from datetime import datetime
    from uuid import uuid4

    from keel.core.viewer import Role, Viewer
    from keel.orgs.permissions import OrgActor
    from keel.posts.repository import PostFilters, list_query

    org = UUID(spec["org_id"])
    viewer = Viewer(user_id=org, family_id=uuid4(), is_superuser=False, is_active=True)
    actor = OrgActor(org, viewer, Role.OWNER)
    after = (datetime.fromisoformat(spec["after"][0]), UUID(spec["after"][1]))
    limit = spec["limit"] + 1  # the router asks for one more row to know of a next page
    out = {}
    for key, sql_args in (
        ("page_1", list_query(actor, PostFilters(), limit=limit)),
        ("page_deep", list_query(actor, PostFilters(), limit=limit, after=after)),
    ):
        sql, args = sql_args
        args = [a.isoformat() if isinstance(a, datetime) else a for a in args]
        out[key] = {"sql": sql, "args": [str(a) if isinstance(a, UUID) else a for a in args]}
    return out


def _cursor_position(pg: Any, org_id: str, page: int, limit: int) -> list[str]:
    """(created_at, id) of the last row before `page`: where its cursor points."""
    row = psql(
        pg,
        "SELECT created_at || '|' || id FROM app.posts "  # noqa: S608 - a checked UUID
        f"WHERE tenant_id = '{UUID(org_id)}' ORDER BY created_at DESC, id DESC "
        f"OFFSET {(page - 1) * limit - 1} LIMIT 1;",
    )
    return row.split("|")


def _expected_page(pg: Any, org_id: str, page: int, limit: int) -> list[str]:
    """The ids keyset page `page` must hold, by OFFSET in SQL (the list's order)."""
    org = UUID(org_id)
    return psql(
        pg,
        f"SELECT id FROM app.posts WHERE tenant_id = '{org}' "  # noqa: S608 - a checked UUID
        f"ORDER BY created_at DESC, id DESC OFFSET {(page - 1) * limit} LIMIT {int(limit)};",
    ).splitlines()


def run(args: argparse.Namespace) -> dict[str, Any]:
    apply_quick(args)
    if args.page * args.limit > args.posts_per_tenant:
        raise BenchError(f"page {args.page} of {args.limit} is past a tenant's posts")
    args.users, args.posts, args.ids = 0, 0, 1  # no other users or posts; one reader
    tenants = [
        f"--tenants={args.tenants}",
        f"--posts-per-tenant={args.posts_per_tenant}",
        "--published-ratio=1",
    ]
    with seeded_reads(args, seed_value=args.seed, seed_extra=tenants, own_posts=True) as (
        options,
        config,
        others,
        pg,
        tmp,
        env,
        seeded,
        fixture,
    ):
        org_id = fixture.user_id  # the reader's personal organization
        list_path = LIST.format(org_id=org_id)
        with ld.serve_variants([ld.Variant("keel", APP, has_request_id=True)], env, Path(tmp)) as s:
            server = s["keel"]
            with httpx.Client(base_url=server.url(), timeout=60) as client:
                auth = bearer(login(client, fixture.username, SEEDED_PASSWORD))
                cursor, items, walk_s = walk_cursor(client, auth, list_path, args.page, args.limit)
            expected = _expected_page(pg, org_id, args.page, args.limit)
            if items != expected:
                raise BenchError(f"page {args.page} holds {items}, SQL says {expected}")
            first = f"{list_path}?limit={args.limit}"
            measured = [
                ld.Measured("page_1", server, Load(first, headers=auth)),
                ld.Measured("page_deep", server, Load(f"{first}&cursor={cursor}", headers=auth)),
            ]
            rounds = ld.alternate(measured, options, Path(tmp), pg=pg)
        spec = {
            "org_id": org_id,
            "limit": args.limit,
            "after": _cursor_position(pg, org_id, args.page, args.limit),
        }
        src = Path(env["PYTHONPATH"]) if "PYTHONPATH" in env else None  # --ref's snapshot
        statements = run_child(f"{__name__}:child_list_sql", spec, src=src)
        plans = {key: explain_prepared(pg, statement) for key, statement in statements.items()}
        counts = psql(pg, "SELECT count(DISTINCT tenant_id), count(*) FROM app.posts;")
    medians = ld.summarise(rounds)
    ratio = medians["page_deep"]["requests_per_sec"] / medians["page_1"]["requests_per_sec"]
    tenant_count, post_count = (int(v) for v in counts.split("|"))
    return {
        "server": config.describe(),
        "settings": {"app": APP, "list": LIST},
        "seeded": {**seeded, "tenants_with_posts": tenant_count, "posts_total": post_count},
        "walk": {"seconds": walk_s, "page_items": items, "rows": _rows_of(args)},
        **rounds.as_json(),
        "sql_top": {k: v[-1] for k, v in rounds.sql.items()},
        "statements": statements,
        "plans": plans,
        "others_seen": sorted(set(others + rounds.others_seen)),
        "medians": medians,
        "figures": {"ratio": ratio, "target": TARGET, "pass": ratio >= TARGET},
        "pass": ratio >= TARGET,
        "noisy": bool(noise_warning(ld.worst_other_cpu(medians))),
    }


def _rows_of(args: argparse.Namespace | Mapping[str, Any]) -> str:
    s = vars(args) if isinstance(args, argparse.Namespace) else args
    first = (s["page"] - 1) * s["limit"] + 1
    return f"rows {first:,}-{first + s['limit'] - 1:,} of {s['posts_per_tenant']:,}"


HEADER = ["figure", "value", "µs/req page 1 / deep page", "target"]


def _rows(data: Mapping[str, Any]) -> list[list[str]]:
    s, f, med = data["settings"], data["figures"], data["medians"]
    first, deep = med["page_1"]["requests_per_sec"], med["page_deep"]["requests_per_sec"]
    label = (
        f"keyset page {s['page']} ÷ page 1 at `limit={s['limit']}` ({_rows_of(s)}), "
        f"one tenant of {s['tenants']:,}"
    )
    return [
        [
            label,
            f"{deep:,.0f} ÷ {first:,.0f} req/s = **{f['ratio']:.3f}**",
            f"{ld.per_request_us(first):.0f} / {ld.per_request_us(deep):.0f}",
            f"≥ {f['target']}: {res.verdict(f['pass'])}",
        ]
    ]


def _plan_line(plan: str) -> str:
    """The plan's first scan node and its execution time."""
    scan = re.search(r"((?:Index|Index Only|Seq|Bitmap Heap) Scan[^(]*)", plan)
    took = re.search(r"Execution Time: ([0-9.]+ ms)", plan)
    return f"{scan[1].strip() if scan else '?'} ({took[1] if took else '?'})"


def _plans_line(data: Mapping[str, Any]) -> str:
    plans = data.get("plans")
    if not plans:
        return ""
    return (
        f"Plans (EXPLAIN ANALYZE of the app's prepared list statement): page 1 "
        f"{_plan_line(plans['page_1'])}; page {data['settings']['page']} "
        f"{_plan_line(plans['page_deep'])}."
    )


def render(data: Mapping[str, Any]) -> str:
    s, med = data["settings"], data["medians"]
    lines = [
        f"### Keyset pages inside one tenant ({data['timestamp']}, {data['commit'][:12]})",
        "",
        res.markdown_table(HEADER, _rows(data)),
        "",
        res.rounds_table(data, cpu=True),
        "",
        f"wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s, {s['rounds']} "
        f"alternating rounds, {s['warmup']}s warm-up. `keel seed --tenants {s['tenants']} "
        f"--posts-per-tenant {s['posts_per_tenant']} --published-ratio 1` "
        f"({data['seeded']['posts_total']:,} posts). {res.server_line(data)}.",
        *(["", _plans_line(data)] if data.get("plans") else []),
        "",
        noise_warning(max(m["other_cpu_pct"] for m in med.values())),
    ]
    return "\n".join(lines).rstrip()


def table(results: Results) -> str:
    stem, data = next(iter(results.items()))
    note = res.source_note(data, stem)
    return f"{res.markdown_table(HEADER, _rows(data))}\n\n{note}"


def headline(results: Results) -> list[list[str]]:
    data = next(iter(results.values()))
    f, s = data["figures"], data["settings"]
    label = f"keyset page {s['page']} ÷ page 1 inside one tenant of {s['tenants']:,}"
    return [[label, f"{f['ratio']:.2f}", f"≥ {f['target']} ({res.verdict(f['pass'])})"]]


SCENARIO = Scenario(
    name=NAME,
    summary=first_line(__doc__),
    add_arguments=add_arguments,
    run=run,
    render=render,
    table=table,
    headline=headline,
)
