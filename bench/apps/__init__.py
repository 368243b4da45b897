"""ASGI apps the scenarios serve with uvicorn (`--factory bench.apps.<module>:<callable>`).

- `stack`: Keel's own app with pieces of its middleware stack taken out;
- `bare`: a bare FastAPI + asyncpg app, the baseline for Keel's read path.
"""
