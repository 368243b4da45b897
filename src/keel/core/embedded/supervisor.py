"""Keeping an embedded server up for a long-running process."""

import threading
import time
from typing import Self

import structlog

from keel.core.embedded.server import EmbeddedPostgres, ServerState

log = structlog.get_logger("keel.core.embedded")


class Supervisor:
    """Keeps the embedded server up for a long-running process, from a background thread.

    A postmaster that is gone while its pid file remains crashed (`kill -9`, OOM killer):
    it is started again at once, and the server's crash recovery replays the WAL (logged as
    `embedded_pg.crash_recovery`). A server stopped from outside (`pg_ctl stop`) is started
    again once it has stayed down for `outside_stop_grace` seconds, which leaves a planned
    `pg_ctl restart` alone. A stop requested with `stop()` (`keel db stop --force`) is
    respected until a command starts the server again.
    """

    def __init__(
        self,
        server: EmbeddedPostgres,
        *,
        interval: float = 0.5,
        outside_stop_grace: float = 3.0,
    ) -> None:
        self.server = server
        self.interval = interval
        self.outside_stop_grace = outside_stop_grace
        self.restarts = 0
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._down_since: float | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._watch, name="embedded-pg-supervisor", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _watch(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                self.check()
            except Exception:  # a failed start is retried at the next tick
                log.exception("embedded_pg.restart_failed", pgdata=str(self.server.pgdata))

    def _restart_crashed_replicas(self) -> None:
        """A replica whose postmaster died comes back; one stopped on purpose stays down."""
        for replica in self.server.replicas():
            if replica.state() is ServerState.CRASHED:
                log.error("embedded_pg.replica_died", pgdata=str(replica.pgdata))
                replica.restart_if_down()

    def check(self) -> bool:
        """One look at the server; start it if it should run but doesn't. True if started."""
        if self.server.stop_requested():
            self._down_since = None
            return False
        state = self.server.state()
        if state in (ServerState.RUNNING, ServerState.CHANGING):
            self._down_since = None
            if state is ServerState.RUNNING:
                self._restart_crashed_replicas()
            return False
        now = time.monotonic()
        if state is ServerState.STOPPED:
            if self._down_since is None:
                self._down_since = now
            if now - self._down_since < self.outside_stop_grace:
                return False
            log.warning("embedded_pg.stopped_from_outside", pgdata=str(self.server.pgdata))
        else:
            log.error("embedded_pg.postmaster_died", pgdata=str(self.server.pgdata))
        if not self.server.restart_if_down():
            return False
        self._down_since = None
        self.restarts += 1
        log.warning("embedded_pg.restarted", pgdata=str(self.server.pgdata), restarts=self.restarts)
        return True
