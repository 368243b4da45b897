"""Settings advice from a machine's RAM and CPUs: the guide's settings, errata applied."""

from __future__ import annotations

from typing import Any

from keel.insight.pg.advice import ADVISED, GB, MB, Machine, advise

GUIDE = {  # the guide's production settings for a 64 GB server
    "shared_buffers": ("2097152", "8kB"),
    "effective_cache_size": ("6291456", "8kB"),
    "work_mem": ("131072", "kB"),
    "maintenance_work_mem": ("1048576", "kB"),
    "max_connections": ("200", None),
    "max_wal_size": ("8192", "MB"),
    "checkpoint_completion_target": ("0.9", None),
    "wal_compression": ("zstd", None),
    "random_page_cost": ("4", None),
    "effective_io_concurrency": ("1", None),
    "max_worker_processes": ("8", None),
    "max_parallel_workers": ("16", None),
    "max_parallel_workers_per_gather": ("4", None),
    "jit": ("on", None),
    "statement_timeout": ("30000", "ms"),
    "idle_in_transaction_session_timeout": ("0", "ms"),
    "track_io_timing": ("on", None),
    "shared_preload_libraries": ("pg_stat_statements,pgvector", None),
}


def rows(values: dict[str, tuple[str, str | None]]) -> dict[str, dict[str, Any]]:
    return {name: {"name": name, "setting": s, "unit": u} for name, (s, u) in values.items()}


def test_the_guides_settings_on_its_own_64gb_server() -> None:
    assert set(GUIDE) == set(ADVISED)
    box = Machine(memory_bytes=64 * GB, cpus=16, connections_needed=15)
    advice = {a.name: a for a in advise(rows(GUIDE), box)}
    assert advice["shared_buffers"].status == "ok"  # 16 GB = 25%
    assert advice["shared_buffers"].recommended == "16.0GB"
    # 128MB x 200 connections x several sorts each can exceed RAM: sized per connection.
    assert advice["work_mem"].recommended == "82MB"  # (64 - 16) GB / (200 x 3)
    assert advice["work_mem"].status == "ok"
    assert advice["statement_timeout"].status == "warning"  # errata: never globally
    assert advice["jit"].status == "warning"  # short OLTP queries
    assert advice["random_page_cost"].status == "warning"
    assert advice["idle_in_transaction_session_timeout"].status == "warning"
    assert advice["max_connections"].status == "warning"  # 15 per process x 16 + 10 > 200
    assert all(a.why for a in advice.values())


def test_small_machine_scales_recommendations_down() -> None:
    box = Machine(memory_bytes=2 * GB, cpus=2, connections_needed=15)
    advice = {a.name: a for a in advise(rows(GUIDE), box)}
    assert advice["shared_buffers"].recommended == "512MB"
    assert advice["shared_buffers"].status == "warning"  # 16 GB on a 2 GB machine
    assert advice["work_mem"].recommended == f"{max(4 * MB, (2 * GB - 512 * MB) // 600) // MB}MB"
    assert advice["max_parallel_workers_per_gather"].recommended == "1"
