"""`keel db citus status`: the nodes, each table's shards and sizes, where tenants live."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from keel.core.citus import layout
from keel.core.citus.enable import ensure_citus

TOP_TENANTS = 10


class Node(BaseModel):
    node_id: int
    group_id: int
    host: str
    port: int
    role: str  # coordinator | worker
    active: bool
    should_have_shards: bool


class Table(BaseModel):
    name: str
    kind: str  # distributed | reference | local
    distribution_column: str | None
    colocation_id: int
    shard_count: int
    bytes: int


class Placement(BaseModel):
    """A distributed table's shards on one node."""

    table: str
    host: str
    port: int
    shards: int
    bytes: int


class Tenant(BaseModel):
    tenant_id: uuid.UUID
    slug: str | None
    rows: int  # posts + documents
    posts: int
    documents: int
    shard_id: int
    host: str
    port: int


class Status(BaseModel):
    version: str
    nodes: list[Node]
    tables: list[Table]
    placements: list[Placement]
    tenants: list[Tenant]


_NODES = """
SELECT nodeid, groupid, nodename, nodeport, isactive, shouldhaveshards
FROM pg_dist_node WHERE noderole = 'primary' ORDER BY groupid, nodeid
"""
_TABLES = """
SELECT table_name::text, citus_table_type,
       NULLIF(distribution_column, '<none>'), colocation_id, shard_count,
       citus_total_relation_size(table_name)
FROM citus_tables ORDER BY citus_table_type, table_name::text
"""
_PLACEMENTS = """
SELECT table_name::text, nodename, nodeport, count(*), sum(shard_size)
FROM citus_shards WHERE citus_table_type = 'distributed'
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
# Grouped by the distribution column: each shard counts its own tenants (pushed down).
_TENANT_ROWS = "SELECT tenant_id, count(*) FROM {table} GROUP BY tenant_id"
_WHERE = """
SELECT t.id, o.slug, t.shardid, s.nodename, s.nodeport
FROM (SELECT id, get_shard_id_for_distribution_column(:table, id) AS shardid
      FROM unnest(CAST(:ids AS uuid[])) AS id) AS t
LEFT JOIN pg_dist_placement AS p ON p.shardid = t.shardid
LEFT JOIN pg_dist_node AS s ON s.groupid = p.groupid AND s.noderole = 'primary'
LEFT JOIN LATERAL (SELECT slug FROM app.organizations WHERE id = t.id) AS o ON true
"""


async def _rows(conn: AsyncConnection, sql: str, **params: Any) -> list[Any]:
    return list((await conn.execute(text(sql), params)).all())


async def _tenants(conn: AsyncConnection, distributed: set[str], top: int) -> list[Tenant]:
    if layout.COLOCATE_WITH not in distributed:
        return []
    counts: dict[uuid.UUID, dict[str, int]] = {}
    for table, key in (("app.posts", "posts"), ("app.documents", "documents")):
        if table in distributed:
            for tenant_id, rows in await _rows(conn, _TENANT_ROWS.format(table=table)):
                counts.setdefault(tenant_id, {"posts": 0, "documents": 0})[key] = rows
    ranked = sorted(counts, key=lambda t: (-sum(counts[t].values()), str(t)))[:top]
    if not ranked:
        return []
    found = await _rows(conn, _WHERE, table=layout.COLOCATE_WITH, ids=ranked)
    where = {row[0]: row for row in found}
    return [
        Tenant(
            tenant_id=tenant,
            slug=where[tenant][1],
            rows=sum(counts[tenant].values()),
            shard_id=where[tenant][2],
            host=where[tenant][3],
            port=where[tenant][4],
            **counts[tenant],
        )
        for tenant in ranked
    ]


async def status(conn: AsyncConnection, *, top: int = TOP_TENANTS) -> Status:
    """Everything `keel db citus status` shows, read on the coordinator."""
    version = await ensure_citus(conn)
    nodes = [
        Node(
            node_id=node_id,
            group_id=group,
            host=host,
            port=port,
            role="coordinator" if group == 0 else "worker",
            active=active,
            should_have_shards=shards,
        )
        for node_id, group, host, port, active, shards in await _rows(conn, _NODES)
    ]
    tables = [
        Table(
            name=name,
            kind=kind,
            distribution_column=column,
            colocation_id=colocation,
            shard_count=count,
            bytes=size,
        )
        for name, kind, column, colocation, count, size in await _rows(conn, _TABLES)
    ]
    placements = [
        Placement(table=table, host=host, port=port, shards=shards, bytes=size or 0)
        for table, host, port, shards, size in await _rows(conn, _PLACEMENTS)
    ]
    distributed = {t.name for t in tables if t.kind == "distributed"}
    tenants = await _tenants(conn, distributed, top)
    await conn.rollback()
    return Status(
        version=version, nodes=nodes, tables=tables, placements=placements, tenants=tenants
    )
