"""The benchmark harness every scenario shares.

- `base`: paths, cores, `BenchError`, medians and percentiles;
- `proc`: pinning, ports, source snapshots (`--ref`), child processes, git;
- `server`: uvicorn servers with production defaults (`ServerConfig`);
- `wrk`: closed-loop load with wrk, and its output parsed;
- `openloop`: an open-loop, constant-arrival-rate load generator;
- `load`: A/B/C alternation over targets and variants, medians, µs per request, steps;
- `noise`: CPU split (server, PostgreSQL, client, other), waiting for a quiet machine;
- `pg`: the embedded PostgreSQL, psql, pg_stat_statements, pgbench;
- `keel_api`: signing in over HTTP;
- `results`: JSON files and Markdown tables;
- `scenario`: what a scenario module provides.
"""
