"""Processes: pinning, ports, one-off HTTP calls, source snapshots, child processes, git."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from bench.harness.base import REPO_ROOT, BenchError


def pinned(cpu: int | None, argv: Sequence[str]) -> list[str]:
    """argv run on one core via taskset, when taskset exists and the core does."""
    taskset = shutil.which("taskset")
    if cpu is None or taskset is None or cpu >= (os.cpu_count() or 1):
        return list(argv)
    return [taskset, "-c", str(cpu), *argv]


def set_affinity(pid: int, cpus: str) -> None:
    """Pin (or unpin) every thread of a running process; new threads inherit it."""
    taskset = shutil.which("taskset")
    if taskset is not None:
        subprocess.run([taskset, "-a", "-p", "-c", cpus, str(pid)], capture_output=True, check=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(
    port: int, path: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """One GET to 127.0.0.1:port; header names lower-cased."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def log_tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


@contextlib.contextmanager
def source_tree(ref: str | None) -> Iterator[Path | None]:
    """None for the working tree, else a temp copy of src/ as committed at ref."""
    if ref is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="keel-src-") as tmp:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", ref, "src"], cwd=REPO_ROOT, capture_output=True
        )
        if archive.returncode != 0:
            raise BenchError(f"git archive {ref} failed: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        yield Path(tmp) / "src"


def python_path(src: Path | None) -> str:
    """PYTHONPATH for a child: the source snapshot (if any) first, then this repo (bench)."""
    paths = [str(src) if src else None, str(REPO_ROOT), os.environ.get("PYTHONPATH")]
    return os.pathsep.join(p for p in paths if p)


def child_env(src: Path | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, **(extra or {}), "PYTHONPATH": python_path(src)}


class Child:
    """A running `module:function(spec) -> dict` child process (see `run_child`)."""

    def __init__(
        self,
        target: str,
        spec: Mapping[str, Any],
        *,
        src: Path | None = None,
        cpu: int | None = None,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
    ) -> None:
        self.target, self.log = target, log
        self._tmp = tempfile.TemporaryDirectory(prefix="keel-bench-child-")
        self._out = Path(self._tmp.name) / "result.json"
        spec_path = Path(self._tmp.name) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        argv = [sys.executable, "-m", "bench.harness.child", target, str(spec_path), str(self._out)]
        self._sink = log.open("ab") if log is not None else None
        self.proc = subprocess.Popen(
            pinned(cpu, argv),
            stdin=subprocess.DEVNULL,
            stdout=self._sink or subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=child_env(src, env),
            cwd=REPO_ROOT,
        )

    def result(self) -> dict[str, Any]:
        """Wait for the child; its result, or BenchError with the end of its output."""
        try:
            output, _ = self.proc.communicate()
            if self.proc.returncode != 0:
                text = log_tail(self.log, 60) if self.log else (output or b"").decode("replace")
                raise BenchError(
                    f"child {self.target} failed ({self.proc.returncode}):\n{text[-4000:]}"
                )
            return cast(dict[str, Any], json.loads(self._out.read_text()))
        finally:
            if self._sink is not None:
                self._sink.close()
            self._tmp.cleanup()


def run_child(
    target: str,
    spec: Mapping[str, Any],
    *,
    src: Path | None = None,
    cpu: int | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
) -> dict[str, Any]:
    """Run `module:function(spec) -> dict` in a fresh Python process (pinned to `cpu`).

    With --ref, the child imports the snapshot's keel (PYTHONPATH), not the working tree's.
    The spec and the result travel through files, so the child may print freely (to `log`
    if given, else it is kept for the error message).
    """
    return Child(target, spec, src=src, cpu=cpu, env=env, log=log).result()


def git_commit(ref: str | None = None, paths: Sequence[str] = ("src", "bench")) -> str:
    """The commit measured: ref's, or HEAD's plus "-dirty" if `paths` differ from it."""
    proc = subprocess.run(
        ["git", "rev-parse", f"{ref or 'HEAD'}^{{commit}}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    commit = proc.stdout.strip() or "unknown"
    if ref is not None:
        return commit
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", *paths, ":!bench/results", ":!*.md"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{commit}-dirty" if dirty else commit
