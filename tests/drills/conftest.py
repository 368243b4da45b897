"""Drills run real `keel serve` processes: the launcher fixture comes from the CLI tests."""

from tests.test_cli import keel

__all__ = ["keel"]
