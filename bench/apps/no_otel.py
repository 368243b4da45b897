"""Keel as if its OpenTelemetry packages were not installed: importing them fails (the
`deploy` bench's baseline for "tracing off costs nothing").

`opentelemetry-api` itself stays: FastAPI depends on it (its native telemetry, idle without
a tracer provider). What Keel adds, the SDK, the exporter and the instrumentations, is
made unimportable.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

KEEL_ADDS = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.instrumentation")


class _Uninstalled(importlib.abc.MetaPathFinder):
    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name.startswith(KEEL_ADDS):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


if any(name.startswith(KEEL_ADDS) for name in sys.modules):
    raise RuntimeError("OpenTelemetry was imported before Keel: the baseline would be wrong")
sys.meta_path.insert(0, _Uninstalled())

from keel.app import create_app  # noqa: E402

__all__ = ["create_app"]
