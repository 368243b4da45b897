"""A real PgBouncer (Debian's /usr/sbin/pgbouncer) in front of a Keel database.

Shared by the `deploy` bench scenario and tests/deploy/test_pgbouncer.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

from bench.harness.proc import free_port
from keel.core.embedded import PORT, server_account

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def _accepting(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        return True
    return False


@contextlib.contextmanager
def pgbouncer(server_url: str, *, pool_size: int = 2) -> Iterator[str]:
    """Run PgBouncer in transaction pooling mode in front of `server_url`'s server.

    Yields the URL of the same database through PgBouncer. A small pool makes clients share
    server connections, as they would in production. PgBouncer refuses to run as root: it
    runs as the embedded server's account, which can also reach that server's socket.
    """
    parsed = make_url(server_url)
    socket_dir = parsed.query.get("host")
    host = f"host={socket_dir} port={PORT}" if socket_dir else f"host={parsed.host}"
    root = Path(tempfile.mkdtemp(prefix="keel-pgbouncer-"))
    port = free_port()
    (root / "users.txt").write_text(f'"{parsed.username}" ""\n')
    (root / "pgbouncer.ini").write_text(
        f"""[databases]
* = {host}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {root}/users.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 500
logfile = {root}/pgbouncer.log
pidfile = {root}/pgbouncer.pid
"""
    )
    account = server_account()
    kwargs: dict[str, object] = {}
    if account is not None:
        for path in (root, *root.iterdir()):
            os.chown(path, account.pw_uid, account.pw_gid)
        kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    proc = subprocess.Popen(  # noqa: S603
        [PGBOUNCER, str(root / "pgbouncer.ini")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        **kwargs,  # type: ignore[call-overload]
    )
    try:
        deadline = time.monotonic() + 30
        while not _accepting(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                log = root / "pgbouncer.log"
                raise RuntimeError(f"pgbouncer did not start: {log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield parsed.set(host="127.0.0.1", port=port, query={}).render_as_string(
            hide_password=False
        )
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(root, ignore_errors=True)
