"""Row-level security as a second wall: what a tenant-scoped post read pays for it.

pgbench, prepared statements, on the migrated schema with one organization's 1,000 posts
among 100 organizations, alternating rounds of four variants of Keel's hot read
(`GET /orgs/{org_id}/posts/{id}`'s statement, by a non-owner role for the RLS ones):

- `filter`: the read as Keel runs it, one statement, the tenant in its WHERE (baseline);
- `rls_policy`: the same statement with a policy `tenant_id = current_setting(...)` enforced
  and the setting fixed for the session: the policy's own cost, as if setting it were free;
- `rls_per_request`: what the app would have to run per request to set the tenant for the
  policy on a pooled connection: BEGIN, `set_config(..., true)`, the read, COMMIT;
- `rls_single_statement`: `set_config` and the read in one statement (a CTE): one round
  trip, but the policy doesn't see the setting (the check counts the rows it returns);
- `rls_function`: one round trip that works: a PL/pgSQL function sets the tenant, then
  runs the read (every scoped statement of the app would have to become such a function).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.harness import results as res
from bench.harness.base import median
from bench.harness.noise import settle
from bench.harness.pg import embedded_cluster, pgbench_argv, psql, run_pgbench
from bench.harness.scenario import Results, Scenario, first_line
from keel.migrations import runner

NAME = "tenant_rls"
TARGET = 0.95
TENANTS, POSTS = 100, 1_000
ROLE = "keel_rls_bench"
# Deterministic ids, so a pgbench script can name a tenant and a post by number.
UUID_OF = "('00000000-0000-7000-8000-' || lpad(to_hex({n}), 12, '0'))::uuid"
TENANT = UUID_OF.format(n=1)
POST = UUID_OF.format(n="(:p)::int")
COLUMNS = (
    "p.id, p.title, p.content, p.is_published, p.created_at, p.updated_at, u.id, u.username,"
    " u.full_name, u.created_at FROM app.posts p JOIN app.users u ON u.id = p.author_id"
)
VISIBLE = f"(p.is_published OR p.author_id = {TENANT} OR false)"
PICK = f"\\set p random(1, {POSTS})\n"
SCRIPTS = {
    "filter": f"SELECT {COLUMNS} WHERE p.tenant_id = {TENANT} AND p.id = {POST} AND {VISIBLE};",
    "rls_policy": f"SELECT {COLUMNS} WHERE p.id = {POST} AND {VISIBLE};",
    "rls_per_request": (
        f"BEGIN;\nSELECT set_config('keel.tenant_id', {TENANT}::text, true);\n"
        f"SELECT {COLUMNS} WHERE p.id = {POST} AND {VISIBLE};\nCOMMIT;"
    ),
    "rls_single_statement": (
        f"WITH t AS MATERIALIZED (SELECT set_config('keel.tenant_id', {TENANT}::text, true))"
        f" SELECT {COLUMNS} CROSS JOIN t WHERE p.id = {POST} AND {VISIBLE};"
    ),
    "rls_function": f"SELECT * FROM bench_read_post({TENANT}, {POST});",  # noqa: S608
}
CORRECT = ("rls_per_request", "rls_function")  # the forms an app could ship
SESSION_TENANT = f"-c keel.tenant_id=00000000-0000-7000-8000-{1:012x}"
SETUP = f"""
INSERT INTO app.users (id, email, username, hashed_password)
SELECT {UUID_OF.format(n="t")}, 'tenant' || t || '@example.com', 'tenant' || t, 'x'
FROM generate_series(1, {TENANTS}) t;
INSERT INTO app.posts (tenant_id, id, title, content, is_published, author_id)
SELECT {UUID_OF.format(n="t")}, {UUID_OF.format(n="(t - 1) * 1000000 + n")},
       'post ' || n, repeat('words ', 40), n % 10 <> 0, {UUID_OF.format(n="t")}
FROM generate_series(1, {TENANTS}) t, generate_series(1, {POSTS}) n;
DELETE FROM app.jobs;
VACUUM ANALYZE app.posts, app.users;
CREATE ROLE {ROLE} LOGIN;
GRANT USAGE ON SCHEMA app TO {ROLE};
GRANT SELECT ON app.posts, app.users TO {ROLE};
ALTER TABLE app.posts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON app.posts
    USING (tenant_id = current_setting('keel.tenant_id', true)::uuid);
CREATE FUNCTION bench_read_post(tenant uuid, post uuid)
RETURNS TABLE (id uuid, title text, content text, is_published boolean,
               created_at timestamptz, updated_at timestamptz, author_id uuid,
               username text, full_name text, author_created_at timestamptz)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('keel.tenant_id', tenant::text, true);
    RETURN QUERY SELECT p.id, p.title::text, p.content, p.is_published, p.created_at,
        p.updated_at, u.id, u.username::text, u.full_name::text, u.created_at
        FROM app.posts p JOIN app.users u ON u.id = p.author_id
        WHERE p.id = post AND (p.is_published OR p.author_id = tenant);
END
$$;
GRANT EXECUTE ON FUNCTION bench_read_post(uuid, uuid) TO {ROLE};
"""  # noqa: S608 - constants only


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pgbench-duration", type=int, default=10)
    parser.add_argument("--pgbench-clients", type=int, default=4)
    parser.add_argument("--pgbench-threads", type=int, default=2)


def _check_isolation(pg: Any) -> None:
    """The policy really walls: the bench role sees tenant 1's posts only, none without it."""
    seen = psql(pg, "SELECT count(*) FROM app.posts;", pgoptions=SESSION_TENANT, user=ROLE)
    unset = psql(pg, "SELECT count(*) FROM app.posts;", user=ROLE)
    if (seen, unset) != (str(POSTS), "0"):
        raise SystemExit(f"RLS setup is wrong: {seen} rows with the tenant set, {unset} without")


def _rows_read(pg: Any) -> dict[str, int]:
    """How many posts each variant's read returns for one post id (each must return it)."""
    rows = {}
    for name, sql in SCRIPTS.items():
        out = psql(
            pg,
            "\\set p 7\n" + sql,
            pgoptions=SESSION_TENANT if name == "rls_policy" else None,
            user="postgres" if name == "filter" else ROLE,
        )
        rows[name] = sum("|post 7|" in line for line in out.splitlines())
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    with embedded_cluster() as pg, tempfile.TemporaryDirectory() as tmp:
        runner.upgrade(pg.url)
        psql(pg, SETUP)
        _check_isolation(pg)
        rows_read = _rows_read(pg)
        scripts = {}
        for name, sql in SCRIPTS.items():
            scripts[name] = Path(tmp) / f"{name}.sql"
            scripts[name].write_text(PICK + sql + "\n")
        tps: dict[str, list[float]] = {name: [] for name in SCRIPTS}
        others: list[str] = []
        for round_no in range(1, args.rounds + 1):
            for name, script in scripts.items():
                others += settle(args.quiet_wait, args.other_wait)
                rls = name != "filter"
                result, _ = run_pgbench(
                    pg,
                    [script],
                    duration=args.pgbench_duration,
                    clients=args.pgbench_clients,
                    threads=args.pgbench_threads,
                    pgoptions=SESSION_TENANT if name == "rls_policy" else None,
                    user=ROLE if rls else "postgres",
                    prepared=True,
                )
                tps[name].append(result.tps)
                print(f"round {round_no} {name:>22}: {result.tps:>9,.0f} tps", file=sys.stderr)
        command = " ".join(
            pgbench_argv(
                pg,
                [Path("<variant>.sql")],
                duration=args.pgbench_duration,
                clients=args.pgbench_clients,
                threads=args.pgbench_threads,
                prepared=True,
            )
        ).replace(str(pg.socket_dir), "<socket dir>")
        command = "pgbench" + command.split("pgbench", 1)[1]  # not this machine's path
    medians = {name: median(values) for name, values in tps.items()}
    ratios = {name: medians[name] / medians["filter"] for name in SCRIPTS}
    return {
        "settings": {"tenants": TENANTS, "posts_per_tenant": POSTS, "command": command},
        "scripts": SCRIPTS,
        "rows_read": rows_read,
        "tps": tps,
        "medians": medians,
        "ratios": ratios,
        "target": TARGET,
        "free": max(ratios[name] for name in CORRECT) >= TARGET,
        "others_seen": sorted(set(others)),
    }


def render(data: Mapping[str, Any]) -> str:
    rows = [
        [
            f"`{name}`",
            f"{data['medians'][name]:,.0f}",
            " / ".join(f"{v:,.0f}" for v in data["tps"][name]),
            f"**{data['ratios'][name]:.3f}**",
            str(data["rows_read"][name]),
        ]
        for name in data["medians"]
    ]
    verdict = "free: could be the default" if data["free"] else "not free: left as an option"
    ratios = data["ratios"]
    return "\n".join(
        [
            res.markdown_table(
                ["variant", "median tps", "per round", "÷ filter", "posts one read returns"], rows
            ),
            "",
            f"The cheapest correct form of RLS ÷ the tenant filter alone = "
            f"**{max(ratios[name] for name in CORRECT):.3f}** (free means ≥ {data['target']}):"
            f" {verdict}. Setting the tenant per request in a transaction runs at"
            f" {ratios['rls_per_request']:.2f}×, a function that sets it and reads in one round"
            f" trip {ratios['rls_function']:.2f}×, the policy alone {ratios['rls_policy']:.2f}×."
            + (
                " The single-statement form (a CTE) returns no row: the policy doesn't see a"
                " setting made in the same statement."
                if data["rows_read"]["rls_single_statement"] == 0
                else ""
            ),
            "",
            f"`{data['settings']['command']}`, {len(data['tps']['filter'])} alternating rounds,"
            f" {data['settings']['tenants']} organizations × "
            f"{data['settings']['posts_per_tenant']:,} posts. From `results/{NAME}.json`, "
            f"{data['timestamp']}, commit {data['commit'][:7]}.",
        ]
    )


def table(results: Results) -> str:
    return "\n\n".join(render(data) for data in results.values())


SCENARIO = Scenario(
    name=NAME,
    summary=first_line(__doc__),
    add_arguments=add_arguments,
    run=run,
    render=render,
    table=table,
)
