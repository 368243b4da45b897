"""The gunicorn worker class the container image runs (`deploy/gunicorn.conf.py`).

`uvicorn-worker`'s worker, configured as `keel serve` configures uvicorn: the header-capped
httptools protocol, no `Server` header, and a graceful shutdown bounded by
`SHUTDOWN_GRACE_SECONDS` (gunicorn's own `graceful_timeout` is a little longer, so a
worker finishes its lifespan shutdown before the master would kill it).
"""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

from keel.config import get_settings
from keel.core.protocol import HeaderLimitedProtocol


class KeelUvicornWorker(UvicornWorker):  # type: ignore[misc]  # untyped package
    """One gunicorn worker process serving Keel's ASGI app with uvicorn."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "auto",
        "http": HeaderLimitedProtocol,
        "server_header": False,
        "proxy_headers": True,  # trusted from FORWARDED_ALLOW_IPS only (gunicorn's setting)
        "access_log": False,  # Keel's middleware writes the access log
        "lifespan": "on",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = get_settings().shutdown_grace_seconds
