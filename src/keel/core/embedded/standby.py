"""Streaming replicas of the embedded server: `keel db replica add|list|promote|remove`.

A replica is an embedded server of its own in `KEEL_DATA_DIR/replicas/<name>` (its own
pgdata, unix socket and lock), made with `pg_basebackup -R` from the primary and fed
through a physical replication slot `keel_replica_<name>`, so the primary keeps the WAL
it still needs (capped by `max_slot_wal_keep_size`). Replicas start and stop with their
primary (`EmbeddedPostgres.ensure_running`/`release`).

Promotion is a switchover that keeps Keel's layout: the replica is promoted, the two
clusters swap directories (the promoted one becomes `KEEL_DATA_DIR/pgdata`, where every
command looks for the primary), and the old primary is rewound with `pg_rewind` into a
standby of the new one under the replica's name.
"""

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from keel.core.embedded.process import PORT, EmbeddedPostgresError, bin_path, run_binary
from keel.core.embedded.server import EmbeddedPostgres

log = structlog.get_logger("keel.core.embedded")

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclass(frozen=True)
class ReplicaInfo:
    name: str
    slot: str
    running: bool
    in_recovery: bool | None
    url: str
    pgdata: Path


def slot_name(name: str) -> str:
    """The physical slot on the primary that feeds replica `name`."""
    return f"keel_replica_{name}"


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise EmbeddedPostgresError(
            f"invalid replica name {name!r}: use 1-40 lower-case letters, digits or _,"
            " starting with a letter"
        )
    return name


def replica_server(primary: EmbeddedPostgres, name: str) -> EmbeddedPostgres:
    return EmbeddedPostgres(primary.replicas_dir / validate_name(name), database=primary.database)


def _primary_conninfo(primary: EmbeddedPostgres) -> str:
    return f"host={primary.socket_dir} port={PORT} user=postgres dbname=postgres"


def _sql(server: EmbeddedPostgres, sql: str, *, database: str = "postgres") -> str:
    argv = [str(bin_path("psql")), "-h", str(server.socket_dir), "-p", str(PORT)]
    argv += ["-U", "postgres", "-d", database, "-XAtqc", sql]
    return run_binary(argv, as_server=False, cwd=server.data_dir).strip()


def add_replica(primary: EmbeddedPostgres, name: str) -> EmbeddedPostgres:
    """Base-backup the running primary into a new standby, with its own slot; start it."""
    replica = replica_server(primary, name)
    if (replica.pgdata / "PG_VERSION").exists():
        raise EmbeddedPostgresError(f"replica {name!r} already exists at {replica.data_dir}")
    if not primary.status().running:
        raise EmbeddedPostgresError("the primary is not running")
    primary.replicas_dir.mkdir(mode=0o700, exist_ok=True)
    replica.prepare_dirs()
    slot = slot_name(name)
    _drop_slot(primary, slot)  # left by a failed add
    argv = [str(bin_path("pg_basebackup")), "-d", _primary_conninfo(primary)]
    argv += ["-D", str(replica.pgdata), "-R", "-X", "stream", "-C", "-S", slot]
    argv += ["--checkpoint=fast", "--no-password"]
    try:
        run_binary(argv, as_server=True, cwd=primary.data_dir, timeout=1800)
    except EmbeddedPostgresError:
        _drop_slot(primary, slot)
        raise
    replica.restart_if_down()
    log.info("embedded_pg.replica_added", replica=name, slot=slot)
    return replica


def list_replicas(primary: EmbeddedPostgres) -> list[ReplicaInfo]:
    infos = []
    for replica in primary.replicas():
        running = replica.status().running
        recovering = None
        if running:
            recovering = _sql(replica, "SELECT pg_is_in_recovery()") == "t"
        infos.append(
            ReplicaInfo(
                name=replica.data_dir.name,
                slot=slot_name(replica.data_dir.name),
                running=running,
                in_recovery=recovering,
                url=replica.url,
                pgdata=replica.pgdata,
            )
        )
    return infos


def remove_replica(primary: EmbeddedPostgres, name: str) -> None:
    """Stop the replica, delete its directory and drop its slot on the primary."""
    replica = replica_server(primary, name)
    if not replica.data_dir.exists():
        raise EmbeddedPostgresError(f"no replica named {name!r}")
    replica.stop(force=True)
    replica.destroy()
    if primary.status().running:
        _drop_slot(primary, slot_name(name))
    log.info("embedded_pg.replica_removed", replica=name)


def _drop_slot(primary: EmbeddedPostgres, slot: str) -> None:
    drop = "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE"
    _sql(primary, f"{drop} slot_name = '{slot}'")  # slot names pass validate_name()


def promote_replica(primary: EmbeddedPostgres, name: str) -> None:
    """Switch over to replica `name`; the old primary becomes replica `name`.

    The primary must not be in use by other keel processes (stop `keel serve` first). If it
    is down (a failover), `pg_rewind` undoes whatever it wrote that the replica never got.
    """
    replica = replica_server(primary, name)
    if not (replica.pgdata / "PG_VERSION").exists():
        raise EmbeddedPostgresError(f"no replica named {name!r}")
    # Stopping the primary first (fast mode) hands the replica every WAL record it wrote;
    # its replicas stop with it, so this one is started again on its own.
    primary.stop(force=False)
    replica.restart_if_down()
    argv = [str(bin_path("pg_ctl")), "-D", str(replica.pgdata), "-w", "-t", "60", "promote"]
    run_binary(argv, as_server=True, cwd=replica.data_dir)
    _wait_until(lambda: _sql(replica, "SELECT pg_is_in_recovery()") == "f", "promotion")
    replica.stop(force=True)
    # Swap the clusters; sockets belong to directories, so URLs stay the same. The old
    # primary stays parked outside replicas/ until rewound, so nothing starts it as is.
    parked = primary.data_dir / "pgdata.old-primary"
    primary.pgdata.rename(parked)
    replica.pgdata.rename(primary.pgdata)
    primary.ensure_running()
    try:
        _sql(primary, "ALTER SYSTEM RESET primary_conninfo")
        _sql(primary, "ALTER SYSTEM RESET primary_slot_name")
        _sql(primary, f"SELECT pg_create_physical_replication_slot('{slot_name(name)}')")
        _rewind(primary, parked, name)
        parked.rename(replica.pgdata)
        replica.restart_if_down()
    finally:
        primary.release()
    log.info("embedded_pg.replica_promoted", replica=name)


def _rewind(primary: EmbeddedPostgres, pgdata: Path, name: str) -> None:
    """Make the stopped cluster in pgdata a standby of the running primary (`pg_rewind -R`)."""
    argv = [str(bin_path("pg_rewind")), "-D", str(pgdata)]
    argv += ["--source-server", _primary_conninfo(primary), "-R"]
    out = run_binary(argv, as_server=True, cwd=primary.data_dir, timeout=1800)
    log.info("embedded_pg.rewound", replica=name, output=out.strip().splitlines()[-1:])
    with (pgdata / "postgresql.auto.conf").open("a") as fh:
        fh.write(f"primary_slot_name = '{slot_name(name)}'\n")


def _wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise EmbeddedPostgresError(f"timed out waiting for {what}")
        time.sleep(0.1)
