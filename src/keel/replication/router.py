"""Replication monitoring for administrators: `GET /api/v1/admin/replication`."""

from __future__ import annotations

from typing import Any

from keel.core.db import TransactionDep, driver_connection
from keel.core.deps import SIGNED_IN_ERRORS, AdminViewer
from keel.core.routing import KeelRouter
from keel.replication import service

router = KeelRouter(prefix="/admin", tags=["admin"])


@router.get(
    "/replication",
    responses={**SIGNED_IN_ERRORS, 403: {"description": "Administrators only"}},
    summary="Replication slots, standby lag, subscriptions and problems (admins)",
)
async def replication(session: TransactionDep, _: AdminViewer) -> dict[str, Any]:
    """Read on the primary (a transaction session), never on a replica."""
    return await service.replication_status(await driver_connection(session))
