"""deploy/postgres/: a throwaway server starts with both files and applies every line.

The embedded server (PostgreSQL 18) stands in for 17: the file sets nothing 18-only. Only
what depends on the machine is overridden after the include: port, socket
and the memory sizes (the file's are for a 16 GB server). The embedded build has no
OpenSSL, so `ssl` itself is switched off here; the TLS settings are still parsed and checked.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from keel.core.embedded import EmbeddedPostgresError, bin_path, run_binary, server_account
from tests.deploy.support import DEPLOY
from tests.processes import free_port

PASSWORD = secrets.token_urlsafe(16)
# The only complaint allowed: hostssl lines can't match on a build without OpenSSL.
NO_SSL_BUILD = "SSL is not supported by this build"
OVERRIDDEN = {
    *("listen_addresses", "port", "shared_buffers"),
    *("effective_cache_size", "maintenance_work_mem", "huge_pages", "ssl"),
}


def _own(path: Path, mode: int) -> None:
    account = server_account()
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)
    path.chmod(mode)


@pytest.fixture
def server() -> Iterator[tuple[int, Path]]:
    # Outside pytest's basetemp (another session may reset it to 0700 under the server).
    root = Path(tempfile.mkdtemp(prefix="keel-pgconf-"))
    root.chmod(0o755)
    pgdata, sockets = root / "pgdata", root / "run"
    for directory in (pgdata, sockets):
        directory.mkdir(mode=0o700)
        _own(directory, 0o700)
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD)
    _own(pwfile, 0o600)
    initdb = [str(bin_path("initdb")), "-D", str(pgdata), "-U", "postgres", "--no-locale"]
    run_binary([*initdb, f"--pwfile={pwfile}", "--auth=scram-sha-256"], as_server=True, cwd=root)
    for name in ("postgresql.conf", "pg_hba.conf"):
        shutil.copy(DEPLOY / "postgres" / name, pgdata / f"deploy-{name}")
        _own(pgdata / f"deploy-{name}", 0o600)
    port = free_port()
    overrides = f"""
include 'deploy-postgresql.conf'
hba_file = '{pgdata}/deploy-pg_hba.conf'
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
shared_buffers = '128MB'
effective_cache_size = '1GB'
maintenance_work_mem = '64MB'
huge_pages = off
ssl = off
"""
    with (pgdata / "postgresql.conf").open("a") as conf:
        conf.write(overrides)
    pg_ctl = [str(bin_path("pg_ctl")), "-D", str(pgdata), "-w", "-t", "60"]
    try:
        run_binary([*pg_ctl, "-l", str(pgdata / "log"), "start"], as_server=True, cwd=root)
    except EmbeddedPostgresError as exc:
        log = (pgdata / "log").read_text(errors="replace")
        pytest.fail(f"the server refused deploy/postgres: {exc}\n{log}")
    try:
        yield port, pgdata
    finally:
        run_binary([*pg_ctl, "-m", "immediate", "stop"], as_server=True, cwd=root)
        shutil.rmtree(root, ignore_errors=True)


async def test_the_server_applies_the_production_files(server: tuple[int, Path]) -> None:
    port, _ = server
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", password=PASSWORD)
    try:
        # Every line of both files was accepted and applied (nothing pending a restart).
        rows = await conn.fetch("SELECT name, applied, error, sourcefile FROM pg_file_settings")
        assert [tuple(r) for r in rows if r["error"]] == []
        from_deploy = [r for r in rows if r["sourcefile"].endswith("deploy-postgresql.conf")]
        assert len(from_deploy) > 30
        assert {r["name"] for r in from_deploy if not r["applied"]} <= OVERRIDDEN
        hba_errors = await conn.fetch(
            "SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL"
        )
        assert [tuple(r) for r in hba_errors if NO_SSL_BUILD not in r["error"]] == []
        settings = dict(
            await conn.fetch(
                "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
                ["password_encryption", "ssl_min_protocol_version", "jit"],
            )
        )
        assert settings == {
            "password_encryption": "scram-sha-256",
            "ssl_min_protocol_version": "TLSv1.3",
            "jit": "off",
        }
        assert await conn.fetchval("SHOW statement_timeout") == "0"  # never global
        # Preloaded: the extension works without a restart.
        await conn.execute("CREATE EXTENSION pg_stat_statements")
        assert await conn.fetchval("SELECT count(*) >= 0 FROM pg_stat_statements")
        # Remote connections without TLS are refused; passwords are scram only.
        rules = await conn.fetch("SELECT type, address, auth_method FROM pg_hba_file_rules")
        assert ("hostnossl", "0.0.0.0", "reject") in [tuple(r) for r in rules]  # noqa: S104
        assert ("hostssl", "10.0.0.0", "scram-sha-256") in [tuple(r) for r in rules]
        assert {r["auth_method"] for r in rules} <= {"peer", "scram-sha-256", "reject"}
    finally:
        await conn.close()
