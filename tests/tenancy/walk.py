"""What the repository walk needs: two organizations with twin rows, and the SQL seen.

Every scoped repository function gets one case: it runs the function as organization
A, with organization B holding rows that would match if the tenant filter were missing,
and returns the ids the function read or changed. The walk then checks two things:
none of B's ids came back, and every statement that touched a scoped table named
`tenant_id`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from keel.core.db import ReadPool
from keel.orgs.permissions import OrgActor

SCOPED_TABLE = re.compile(r"\bapp\.(posts|documents|post_embeddings|imports)\b")


@dataclass
class Tenant:
    id: UUID
    actor: OrgActor  # the organization's owner, acting in it
    rows: dict[str, list[UUID]] = field(default_factory=dict)  # table -> ids made in it

    def ids(self) -> set[UUID]:
        return {row for rows in self.rows.values() for row in rows}


@dataclass
class World:
    app: FastAPI
    session: AsyncSession
    a: Tenant
    b: Tenant

    @property
    def reads(self) -> ReadPool:
        reads: ReadPool = self.app.state.db.reads
        return reads


Case = Callable[[World], Awaitable[set[UUID]]]
CASES: dict[str, Case] = {}


def case(function: Callable[..., Any]) -> Callable[[Case], Case]:
    """Register the decorated coroutine as the case walking `function`."""

    def register(walk: Case) -> Case:
        CASES[f"{function.__module__}.{function.__name__}"] = walk
        return walk

    return register


async def reset_statements(session: AsyncSession) -> None:
    await session.execute(
        text(
            "SELECT pg_stat_statements_reset(0, oid, 0) FROM pg_database"
            " WHERE datname = current_database()"
        )
    )


async def unscoped_statements(session: AsyncSession) -> list[str]:
    """Statements since the reset that touched a scoped table without naming tenant_id."""
    rows = await session.scalars(
        text(
            "SELECT query FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    )
    return [q for q in rows if SCOPED_TABLE.search(q) and "tenant_id" not in q]
