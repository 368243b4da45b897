"""Servers under test: uvicorn as `keel serve` runs it, with production defaults.

Every server runs one uvicorn worker (uvloop, httptools, no server header) pinned to
SERVER_CPU, logging to a file. Its environment comes from `ServerConfig`: production
settings unless a flag says otherwise, and the JSON records what was used.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from bench.harness.base import REPO_ROOT, SERVER_CPU, BenchError
from bench.harness.proc import free_port, http_get, log_tail, pinned, python_path

Limiter = Literal["redis", "memory", "off"]
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"  # a database of its own: FLUSHDB'd per run
# High enough that no benchmark's load is ever refused, low enough that the limiter's
# per-key Redis list (one entry per hit, trimmed to the limit) stays small.
BENCH_API_LIMIT = "100000/second"
SECRET_PLACEHOLDER = "<random per run>"  # noqa: S105 - what the JSON records instead


@dataclass(frozen=True)
class ServerConfig:
    """How servers under test are configured; the defaults are production's.

    - ENVIRONMENT=production, a random SECRET_KEY per run, ALLOWED_HOSTS=127.0.0.1,localhost
      (so TrustedHostMiddleware runs, as in production);
    - rate limiter on, in Redis (REDIS_URL), with the API-wide per-user and per-IP limits
      raised to BENCH_API_LIMIT so the load is never refused (the hit is still made);
    - job worker on (WORKER_ENABLED=true);
    - Keel's access log on: LOG_LEVEL=INFO, LOG_JSON=true, stdout to a log file.
    """

    environment: str = "production"
    limiter: Limiter = "redis"
    redis_url: str = DEFAULT_REDIS_URL
    api_limit: str = BENCH_API_LIMIT
    login_limit: str | None = None  # None: Keel's default
    worker: bool = True
    access_log: bool = True
    access_token_minutes: int = 120  # one token lasts the whole run
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def env(
        self, *, database_url: str, data_dir: str | Path, secret: str, src: Path | None = None
    ) -> dict[str, str]:
        """The server's environment (on top of this process's)."""
        env = {
            "ENVIRONMENT": self.environment,
            "SECRET_KEY": secret,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": database_url,
            "KEEL_DATA_DIR": str(data_dir),
            "LOG_JSON": "true",
            # The access log is one INFO line per request; WARNING drops it at the source.
            "LOG_LEVEL": "INFO" if self.access_log else "WARNING",
            "WORKER_ENABLED": str(self.worker).lower(),
            "ACCESS_TOKEN_MINUTES": str(self.access_token_minutes),
            "RATE_LIMIT_ENABLED": str(self.limiter != "off").lower(),
            "RATE_LIMIT_USER": self.api_limit,
            "RATE_LIMIT_ANONYMOUS": self.api_limit,
        }
        if self.limiter != "memory":  # with the limiter off, Redis stays configured
            env["REDIS_URL"] = self.redis_url
        if self.login_limit is not None:
            env["RATE_LIMIT_LOGIN"] = self.login_limit
        if src is not None:
            env["PYTHONPATH"] = str(src)
        return {**env, **self.extra_env}

    def describe(self) -> dict[str, Any]:
        """What the JSON records: the settings, with the secret and paths left out."""
        env = self.env(database_url="<embedded>", data_dir="<tmp>", secret=SECRET_PLACEHOLDER)
        return {**asdict(self), "env": env}

    def prepare(self) -> None:
        """Check Redis answers and empty its benchmark database, when the limiter uses it."""
        if self.limiter == "memory":
            return
        from redis import Redis
        from redis.exceptions import RedisError

        client = Redis.from_url(self.redis_url, socket_timeout=2.0)
        try:
            client.ping()
            client.flushdb()
        except RedisError as exc:
            raise BenchError(
                f"Redis at {self.redis_url} does not answer ({exc}). Start one (redis-server "
                "--daemonize yes --bind 127.0.0.1 --save ''), or pass --limiter memory|off."
            ) from exc
        finally:
            client.close()


def add_server_args(parser: argparse.ArgumentParser, *, worker: bool = True) -> None:
    group = parser.add_argument_group("server configuration (default: production)")
    group.add_argument(
        "--limiter",
        choices=("redis", "memory", "off"),
        default="redis",
        help="rate limiter backend, or off (default: redis)",
    )
    group.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="its database is flushed")
    group.add_argument(
        "--worker",
        choices=("on", "off"),
        default="on" if worker else "off",
        help=f"the job worker in the API process (default: {'on' if worker else 'off'})",
    )
    group.add_argument(
        "--access-log", choices=("on", "off"), default="on", help="Keel's access log"
    )
    group.add_argument(
        "--no-access-log", dest="access_log", action="store_const", const="off", help="same"
    )
    group.add_argument(
        "--environment",
        choices=("production", "testing", "development"),
        default="production",
        help="ENVIRONMENT of the servers",
    )


def server_config(args: argparse.Namespace, **overrides: Any) -> ServerConfig:
    config = ServerConfig(
        environment=args.environment,
        limiter=args.limiter,
        redis_url=args.redis_url,
        worker=args.worker == "on",
        access_log=args.access_log == "on",
    )
    return replace(config, **overrides)


def new_secret() -> str:
    return secrets.token_urlsafe(48)


# --- uvicorn ------------------------------------------------------------------------------


@dataclass
class Server:
    """A running uvicorn process."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def uvicorn_argv(app: str, port: int, *, factory: bool = True) -> list[str]:
    """uvicorn as `keel serve` runs it: one worker, uvloop, httptools, no server header.

    `--no-access-log` is uvicorn's own access log: Keel writes its own (see ServerConfig).
    """
    argv = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", "1", "--loop", "uvloop", "--http", "httptools"]
    argv += ["--no-access-log", "--no-server-header", "--log-level", "warning"]
    return [*argv, "--factory"] if factory else argv


@contextlib.contextmanager
def uvicorn_server(
    name: str,
    app: str,
    *,
    env: Mapping[str, str],
    log_path: Path,
    ready_path: str = "/health",
    startup_timeout: float = 90.0,
    cpu: int | None = SERVER_CPU,
) -> Iterator[Server]:
    """Start uvicorn on a free port (pinned to `cpu`), wait for ready_path to answer 200."""
    server = start_server(name, app, env=env, log_path=log_path, cpu=cpu)
    try:
        wait_ready(server, ready_path, startup_timeout)
        yield server
    finally:
        stop_server(server)


def start_server(
    name: str, app: str, *, env: Mapping[str, str], log_path: Path, cpu: int | None = SERVER_CPU
) -> Server:
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # env's PYTHONPATH (a source snapshot, see proc.source_tree) wins over the editable install.
    src = env.get("PYTHONPATH")
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            pinned(cpu, uvicorn_argv(app, port)),
            cwd=REPO_ROOT,
            env={**os.environ, **env, "PYTHONPATH": python_path(Path(src) if src else None)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, port, proc, log_path)


def wait_ready(server: Server, path: str = "/health", timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(
                f"{server.name}: uvicorn exited with {server.proc.returncode} during startup\n"
                f"--- tail of {server.log_path} ---\n{log_tail(server.log_path)}"
            )
        try:
            status, _, _ = http_get(server.port, path, timeout=2.0)
        except OSError as exc:
            last = str(exc)
        else:
            if status == 200:
                return
            last = f"HTTP {status}"
        time.sleep(0.2)
    raise BenchError(
        f"{server.name}: {path} not ready after {timeout}s ({last})\n"
        f"--- tail of {server.log_path} ---\n{log_tail(server.log_path)}"
    )


def stop_server(server: Server, grace: float = 15.0) -> None:
    """SIGTERM uvicorn's process group, SIGKILL it if it lingers."""
    if server.proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGTERM)
    try:
        server.proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (0 if unknown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
