"""Reproducible benchmarks for Keel; see bench/README.md."""
