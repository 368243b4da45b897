"""Results: JSON files under bench/results/, and the Markdown rendered from them."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.harness.base import RESULTS_DIR


def results_name(base: str, headers: Sequence[str]) -> str:
    """base, or base plus a slug of the extra request headers so runs don't overwrite it."""
    slug = re.sub(r"[^a-z0-9]+", "-", " ".join(headers).lower()).strip("-")
    return f"{base}__{slug}" if slug else base


def _jsonable(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = dataclasses.asdict(value)
        errors = getattr(value, "errors", None)  # WrkResult's derived total
        return {**out, "errors": errors} if isinstance(errors, int) else out
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, default=_jsonable, ensure_ascii=False) + "\n"


def write_json(stem: str, data: Mapping[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{stem}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(to_json(data))
    tmp.replace(path)
    return path


def load_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def load_results(name: str, results_dir: Path = RESULTS_DIR) -> dict[str, dict[str, Any]]:
    """Every result file of a scenario: `<name>.json` and `<name>__<variant>.json`, by stem."""
    paths = [results_dir / f"{name}.json", *sorted(results_dir.glob(f"{name}__*.json"))]
    return {p.stem: load_json(p) for p in paths if p.exists()}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def source_line(data: Mapping[str, Any], stem: str) -> str:
    """Where a table's figures come from: file, date, commit."""
    date = str(data.get("timestamp", "?"))[:10]
    commit = str(data.get("commit", "?"))
    short = commit[:7] + ("-dirty" if commit.endswith("-dirty") else "")
    noisy = ", **noisy run** (other processes took ≥ 10% of a core)" if data.get("noisy") else ""
    return f"`results/{stem}.json`, {date}, commit {short}{noisy}"


def source_note(data: Mapping[str, Any], stem: str) -> str:
    """The sentence under a README table: its source, then the servers' configuration."""
    return f"From {source_line(data, stem)} ({server_line(data)})."


def server_line(data: Mapping[str, Any]) -> str:
    """The servers' configuration, in a few words (older results recorded none)."""
    server = data.get("server")
    if not isinstance(server, Mapping):
        return "server config not recorded; harness before 2026-12: testing, limiter and worker off"
    parts = [str(server.get("environment", "?"))]
    limiter = server.get("limiter", "?")
    limit = f" at {server.get('api_limit')}" if limiter != "off" else ""
    parts.append(f"limiter {limiter}{limit}")
    parts.append("worker " + ("on" if server.get("worker") else "off"))
    parts.append("access log " + ("on" if server.get("access_log") else "off"))
    return ", ".join(parts)


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("PASS" if ok else "FAIL")


def rounds_table(data: Mapping[str, Any], *, cpu: bool = False) -> str:
    """Each variant's median and per-round req/s, latency and the other processes' CPU
    (`cpu`: also the server's and PostgreSQL's), from `load.summarise` and its rounds."""
    header = ["run", "median req/s", "per round", "p50 ms", "p99 ms"]
    header += ["CPU % server / pg"] if cpu else []
    rows = []
    for key, m in data["medians"].items():
        row = [
            f"`{key}`",
            f"{m['requests_per_sec']:,.0f}",
            " / ".join(f"{r['requests_per_sec']:,.0f}" for r in data["rounds"][key]),
            f"{m['p50_ms']:.2f}",
            f"{m['p99_ms']:.2f}",
        ]
        row += [f"{m['server_cpu_pct']:.0f} / {m['postgres_cpu_pct']:.0f}"] if cpu else []
        rows.append([*row, f"{m['other_cpu_pct']:.0f}"])
    return markdown_table([*header, "other CPU %"], rows)
