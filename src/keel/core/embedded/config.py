"""The configuration Keel writes into an embedded cluster: `keel.conf`, included from
`postgresql.conf` and rewritten on every start."""

import shlex
from pathlib import Path

from keel.core.embedded.process import PORT

_INCLUDE_LINE = "include_if_exists = 'keel.conf'"
_KEEL_CONF = """\
# Managed by keel: rewritten on every start. Put overrides in postgresql.auto.conf.
listen_addresses = ''
port = {port}
unix_socket_directories = '{socket_dir}'
unix_socket_permissions = 0700
max_connections = 200
shared_buffers = '128MB'
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
track_io_timing = on
fsync = on
synchronous_commit = on
full_page_writes = on
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
# Replicas, logical replication and backups (keel.core.embedded.standby, keel.replication).
wal_level = logical
summarize_wal = on
hot_standby_feedback = on
sync_replication_slots = on  # standbys keep copies of failover logical slots (17+)
max_slot_wal_keep_size = '2GB'
archive_mode = on
# Archives only once `keel db backup` has created the archive dir; until then WAL is recycled.
archive_command = 'test ! -d {archive_dir} || test -f {archive_dir}/%f || cp %p {archive_dir}/%f'
"""


def write_keel_conf(pgdata: Path, socket_dir: Path, archive_dir: Path) -> Path:
    """Include `keel.conf` from `postgresql.conf` (once) and write it; returns its path."""
    conf = pgdata / "postgresql.conf"
    if _INCLUDE_LINE not in conf.read_text():
        with conf.open("a") as fh:
            fh.write(f"\n{_INCLUDE_LINE}\n")
    keel_conf = pgdata / "keel.conf"
    socket = str(socket_dir).replace("'", "''")
    archive = shlex.quote(str(archive_dir)).replace("%", "%%").replace("'", "''")
    keel_conf.write_text(_KEEL_CONF.format(port=PORT, socket_dir=socket, archive_dir=archive))
    keel_conf.chmod(0o600)  # like every file postgres writes in pgdata
    return keel_conf
