"""Every repository function of tenant-scoped data stays inside its organization.

The walk lists each scoped domain's repository coroutines and demands a case for each
(`tests/tenancy/cases_*.py`), or a stated reason it reads across organizations. A new
repository function without one fails `test_every_repository_function_is_walked`.
"""

from __future__ import annotations

import inspect
from types import ModuleType
from uuid import UUID

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from keel.bulk import history_repository as bulk_history_repository
from keel.bulk import posts_repository as bulk_posts_repository
from keel.bulk import repository as bulk_users_repository
from keel.documents import repository as documents_repository
from keel.jobs import repository as jobs_repository
from keel.posts import repository as posts_repository
from keel.search import embeddings as search_embeddings
from keel.search import repository as search_repository
from tests.orgs.factory import acting_in, create_org
from tests.posts.factory import make_post
from tests.tenancy import (  # noqa: F401 - registers their cases
    cases_bulk,
    cases_documents,
    cases_jobs,
    cases_posts,
    cases_search,
)
from tests.tenancy.walk import (
    CASES,
    Tenant,
    World,
    reset_statements,
    unscoped_statements,
)
from tests.users.factory import signed_in

WALKED: tuple[ModuleType, ...] = (
    posts_repository,
    documents_repository,
    search_repository,
    search_embeddings,
    bulk_posts_repository,
    bulk_history_repository,
    bulk_users_repository,
    jobs_repository,
)

# Functions that read or write across organizations, and why that is their job.
CROSS_TENANT: dict[str, str] = {
    "keel.documents.repository.load_layout": "the catalog's vector layout, no rows",
    "keel.documents.repository.apply_scan": "SET LOCAL of the search settings, no rows",
    "keel.documents.repository.count_all_tenants": "the whole table's size (tests, operators)",
    "keel.documents.repository.pending_tenants_all_tenants": (
        "the worker, for embed_documents jobs queued before migration 0014 (no tenant)"
    ),
    "keel.search.embeddings.load_posts_all_tenants": (
        "the worker, for embed_posts jobs queued before migration 0014 (no tenant)"
    ),
    "keel.search.embeddings.count_missing_all_tenants": "the backfill's progress bar",
    "keel.search.embeddings.tenants_missing_all_tenants": "the backfill walks the tenants",
    "keel.search.embeddings.queue_missing_all_tenants": "backfill --queue: jobs per tenant",
    "keel.bulk.posts_repository.citus_installed": "reads pg_extension, no organization's rows",
    "keel.bulk.posts_repository.organization_id": (
        "finds the organization `keel import posts --org` names (an operator's command)"
    ),
    "keel.bulk.repository.check_users": "accounts are global (platform admins' import)",
    "keel.bulk.repository.merge_users": "accounts are global (platform admins' import)",
    "keel.bulk.repository.upsert_users": "accounts are global (platform admins' import)",
    **cases_jobs.CROSS_TENANT_JOBS,
}


def _functions(module: ModuleType) -> set[str]:
    return {
        f"{module.__name__}.{name}"
        for name, function in inspect.getmembers(module, inspect.iscoroutinefunction)
        if function.__module__ == module.__name__ and not name.startswith("_")
    }


def test_every_repository_function_is_walked() -> None:
    functions = set().union(*map(_functions, WALKED))
    assert functions - set(CASES) - set(CROSS_TENANT) == set()
    assert set(CASES) <= functions  # no case for a function that's gone


async def _tenant(app: FastAPI, session: AsyncSession, client: AsyncClient) -> Tenant:
    user, auth = await signed_in(app, session, client)
    org = UUID((await create_org(client, auth))["id"])
    posts = [
        (await make_post(session, user, "twin", org_id=org)).id,
        (await make_post(session, user, "twin draft", published=False, org_id=org)).id,
    ]
    return Tenant(org, acting_in(user, org), {"posts": posts})


@pytest.fixture
async def world(app: FastAPI, db_session: AsyncSession, client: AsyncClient) -> World:
    a = await _tenant(app, db_session, client)
    b = await _tenant(app, db_session, client)
    return World(app, db_session, a, b)


@pytest.mark.parametrize("name", sorted(CASES))
async def test_each_function_stays_in_its_organization(world: World, name: str) -> None:
    await reset_statements(world.session)
    touched = await CASES[name](world)
    assert touched, f"{name}: the case reached no row, so it proves nothing"
    assert not touched & world.b.ids(), f"{name} reached another organization's rows"
    assert await unscoped_statements(world.session) == [], name
