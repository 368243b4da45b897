"""The scenarios, one module each; `python -m bench --list` shows them.

Each module defines `SCENARIO` (a `bench.harness.scenario.Scenario`) and uses only the
harness and `bench.apps`, never another scenario's helpers.
"""

from __future__ import annotations

import importlib

from bench.harness.scenario import Scenario

NAMES = (
    "http_middleware",
    "middleware_breakdown",
    "asgi_inprocess",
    "identity",
    "posts",
    "openloop",
    "vs_bare",
    "ladder",
    "imports",
    "embeddings",
    "vectors",
    "deploy",
    "insight",
    "backups",
    "replica_reads",
    "viewer_memberships",
    "tenant_rls",
    "tenant_read",
    "tenant_keyset",
    "tenant_hnsw_recall",
)


def get(name: str) -> Scenario:
    if name not in NAMES:
        raise KeyError(name)
    scenario: Scenario = importlib.import_module(f"bench.scenarios.{name}").SCENARIO
    return scenario


def all_scenarios() -> list[Scenario]:
    return [get(name) for name in NAMES]
