"""gunicorn configuration for Keel in production (the container image's start command).

    gunicorn --config deploy/gunicorn.conf.py

`keel serve` stays the development path (embedded PostgreSQL, auto-migrate, reload); this is
for a server with DATABASE_URL set and migrations applied by a separate step.

Everything comes from Keel's settings (environment variables, see README "Deploying"):
- workers: WEB_CONCURRENCY, else one per CPU. Workers are async (uvicorn): one per core
  saturates it; the `2 * cpu + 1` rule is for sync workers.
- graceful_timeout: SHUTDOWN_GRACE_SECONDS plus a margin, so a worker's own bounded drain
  and lifespan shutdown finish before the master would SIGKILL it.
- max_requests: MAX_REQUESTS_PER_WORKER with 10% jitter, so workers don't recycle at once.
- Prometheus: PROMETHEUS_MULTIPROC_DIR (made here if unset) is emptied at start, every
  dead worker's live gauges are dropped, and /metrics on any worker sums all of them.
- No `preload_app`: the app (and its database pools) is built in each worker after the
  fork, never shared across processes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from keel.config import get_settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SHUTDOWN_MARGIN_SECONDS = 5

_settings = get_settings()  # invalid settings fail here, before any worker starts

wsgi_app = "keel.app:create_app()"
worker_class = "keel.core.serving.KeelUvicornWorker"
bind = [os.environ.get("KEEL_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")]
workers = _settings.web_concurrency or os.cpu_count() or 1
preload_app = False
graceful_timeout = _settings.shutdown_grace_seconds + SHUTDOWN_MARGIN_SECONDS
timeout = 60  # a worker whose event loop stops heart-beating this long is restarted
keepalive = 5
max_requests = _settings.max_requests_per_worker
max_requests_jitter = max_requests // 10
# Keel logs requests itself (JSON, with request and trace ids); gunicorn logs to stderr.
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
# Heartbeat files on tmpfs (/dev/shm), not on a possibly read-only or disk-backed /tmp.
worker_tmp_dir = "/dev/shm" if Path("/dev/shm").is_dir() else None  # noqa: S108
proc_name = "keel"

_metrics_dir = os.environ.get(MULTIPROC_ENV)
_own_metrics_dir = _metrics_dir is None
if _metrics_dir is None:
    _metrics_dir = tempfile.mkdtemp(prefix="keel-metrics-")
    # Set before any worker imports prometheus_client: that import picks the mode.
    os.environ[MULTIPROC_ENV] = _metrics_dir


def on_starting(server: Any) -> None:
    """Start from an empty metrics directory: files of a previous run would be summed in."""
    directory = Path(os.environ[MULTIPROC_ENV])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """A worker died (recycled, killed, crashed): its live gauges no longer count."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    if _own_metrics_dir:
        shutil.rmtree(os.environ[MULTIPROC_ENV], ignore_errors=True)
