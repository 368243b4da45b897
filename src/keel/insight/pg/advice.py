"""Settings advice: memory, WAL, planner and safety settings against what the machine has.

The starting point is the guide's configuration section, with its errata fixed: work_mem
is sized per connection (128MB x 200 connections can exhaust RAM), statement_timeout stays
off globally (it breaks migrations and maintenance; Keel sets it per session), and JIT is
off for short OLTP queries (Keel's connections turn it off).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from keel.config import Settings
from keel.insight.pg import repository, sql
from keel.insight.pg.schemas import Advice, SettingsReport, Status
from keel.insight.pg.service import InsightConfig, begin

MB = 1024 * 1024
GB = 1024 * MB
UNIT_BYTES = {"B": 1, "kB": 1024, "8kB": 8192, "MB": MB, "GB": GB}
CGROUP_MEMORY = Path("/sys/fs/cgroup/memory.max")
ADVISED = (
    "shared_buffers", "effective_cache_size", "work_mem", "maintenance_work_mem",
    "max_connections", "max_wal_size", "checkpoint_completion_target", "wal_compression",
    "random_page_cost", "effective_io_concurrency", "max_worker_processes",
    "max_parallel_workers", "max_parallel_workers_per_gather", "jit", "statement_timeout",
    "idle_in_transaction_session_timeout", "track_io_timing", "shared_preload_libraries",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Machine:
    memory_bytes: int
    cpus: int
    connections_needed: int  # one Keel process at most: both pools and the listener


def machine(settings: Settings) -> Machine:
    memory = (settings.insight_server_memory_mb or 0) * MB or _memory_bytes()
    cpus = settings.insight_server_cpus or len(os.sched_getaffinity(0)) or 1
    needed = settings.db_pool_size + settings.db_read_pool_size + 1
    return Machine(memory_bytes=memory, cpus=cpus, connections_needed=needed)


def _memory_bytes() -> int:
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:  # a container's limit, when there is one
        limit = CGROUP_MEMORY.read_text().strip()
    except OSError:
        return physical
    return min(physical, int(limit)) if limit.isdigit() else physical


def _bytes(row: dict[str, Any]) -> int:
    return int(float(row["setting"]) * UNIT_BYTES.get(row["unit"] or "B", 1))


def _size(n: float) -> str:
    return f"{n / GB:.1f}GB" if n >= GB else f"{n / MB:.0f}MB"


def _memory(row: dict[str, Any], want: int, why: str) -> Advice:
    have = _bytes(row)
    ok = want / 2 <= have <= want * 2
    return Advice(
        name=row["name"],
        current=_size(have),
        recommended=_size(want),
        status=Status.ok if ok else Status.warning,
        why=why,
    )


def _exact(row: dict[str, Any], want: str, why: str, *, ok: bool | None = None) -> Advice:
    unit = f" {row['unit']}" if row["unit"] else ""
    matches = row["setting"] == want if ok is None else ok
    return Advice(
        name=row["name"],
        current=f"{row['setting']}{unit}",
        recommended=want,
        status=Status.ok if matches else Status.warning,
        why=why,
    )


def advise(current: dict[str, dict[str, Any]], box: Machine) -> list[Advice]:
    ram, cpus = box.memory_bytes, box.cpus
    shared = ram // 4
    connections = int(current["max_connections"]["setting"])
    work_mem = max(4 * MB, min(256 * MB, (ram - shared) // (connections * 3)))
    parallel = max(1, min(4, cpus // 2))
    needed = box.connections_needed * cpus + 10
    advice = [
        _memory(current["shared_buffers"], shared, "25% of RAM; the OS cache holds the rest."),
        _memory(
            current["effective_cache_size"],
            ram * 3 // 4,
            "75% of RAM: tells the planner how much the OS and shared buffers cache.",
        ),
        _memory(
            current["work_mem"],
            work_mem,
            f"(RAM - shared_buffers) / (max_connections {connections} x 3): each sort or hash "
            "may use this much, several per query, so it is sized per connection.",
        ),
        _memory(
            current["maintenance_work_mem"],
            max(64 * MB, min(2 * GB, ram // 16)),
            "RAM / 16 for VACUUM and CREATE INDEX; since 17 vacuum's TID store uses it well.",
        ),
        _exact(
            current["max_connections"],
            f">= {needed}",
            f"Keel opens up to {box.connections_needed} per process; one process per CPU "
            "plus headroom. Far more than that wants a pooler (PgBouncer), not a higher limit.",
            ok=connections >= needed,
        ),
        _memory(
            current["max_wal_size"],
            max(2 * GB, min(16 * GB, ram // 4)),
            "Room for WAL between checkpoints; too small forces requested checkpoints.",
        ),
        _exact(
            current["checkpoint_completion_target"],
            "0.9",
            "Spreads checkpoint writes over the interval.",
        ),
        _exact(
            current["wal_compression"],
            "zstd",
            "Compresses full-page images: less WAL at little CPU (lz4 is fine too).",
            ok=current["wal_compression"]["setting"] in ("zstd", "lz4"),
        ),
        _exact(
            current["random_page_cost"],
            "1.1",
            "On SSDs random reads cost about as much as sequential ones.",
            ok=float(current["random_page_cost"]["setting"]) <= 2,
        ),
        _exact(
            current["effective_io_concurrency"],
            ">= 16",
            "SSDs serve many reads at once (18's default is 16).",
            ok=int(current["effective_io_concurrency"]["setting"]) >= 16,  # noqa: PLR2004
        ),
        _exact(
            current["max_worker_processes"],
            f">= {cpus}",
            "Background and parallel workers share this pool.",
            ok=int(current["max_worker_processes"]["setting"]) >= cpus,
        ),
        _exact(
            current["max_parallel_workers"],
            str(cpus),
            "One parallel worker per CPU at most.",
            ok=int(current["max_parallel_workers"]["setting"]) <= cpus * 2,
        ),
        _exact(
            current["max_parallel_workers_per_gather"],
            str(parallel),
            "Half the CPUs (at most 4) per query, so concurrent queries still get workers.",
        ),
        _exact(
            current["jit"],
            "off",
            "JIT costs more than it saves on short OLTP queries (Keel turns it off per "
            "connection).",
        ),
        _exact(
            current["statement_timeout"],
            "0",
            "Not globally: it breaks migrations and maintenance. Keel sets it per session.",
        ),
        _exact(
            current["idle_in_transaction_session_timeout"],
            "> 0",
            "Ends sessions that hold a transaction open doing nothing (locks, vacuum).",
            ok=current["idle_in_transaction_session_timeout"]["setting"] != "0",
        ),
        _exact(current["track_io_timing"], "on", "I/O times in pg_stat_io and EXPLAIN."),
        _exact(
            current["shared_preload_libraries"],
            "pg_stat_statements",
            "Query statistics for the Queries page.",
            ok="pg_stat_statements" in current["shared_preload_libraries"]["setting"],
        ),
    ]
    return advice


async def settings_report(
    session: AsyncSession, config: InsightConfig, settings: Settings
) -> SettingsReport:
    await begin(session, config)
    rows = await repository.rows(session, sql.SETTINGS, names=list(ADVISED))
    current = {row["name"]: row for row in rows}
    box = machine(settings)
    return SettingsReport(
        memory_bytes=box.memory_bytes,
        cpus=box.cpus,
        connections_needed=box.connections_needed,
        settings=advise(current, box),
    )
