"""Keel with the Viewer loader from before organizations: no memberships in the Viewer.

`bench.apps.viewer_before:create_app`, the baseline of the `viewer_memberships` scenario.
Each uvicorn process calls one factory, so patching `keel.app.load_viewer` here affects
only that server.
"""

from __future__ import annotations

from uuid import UUID

from fastapi import FastAPI

import keel.app
from keel.core.db import ReadPool
from keel.core.viewer import Viewer

# The statement `keel.auth.repository.VIEWER_QUERY` was before migration 0013.
BEFORE_QUERY = """
SELECT u.is_superuser
FROM app.users AS u JOIN app.token_families AS f ON f.user_id = u.id
WHERE u.id = $1 AND f.id = $2 AND f.revoked_at IS NULL AND u.is_active
"""


async def load_viewer_before(reads: ReadPool, user_id: UUID, family_id: UUID) -> Viewer | None:
    row = await reads.fetchrow(BEFORE_QUERY, user_id, family_id)
    if row is None:
        return None
    return Viewer(user_id=user_id, family_id=family_id, is_superuser=row[0], is_active=True)


def create_app() -> FastAPI:
    keel.app.load_viewer = load_viewer_before  # type: ignore[attr-defined]
    return keel.app.create_app()
