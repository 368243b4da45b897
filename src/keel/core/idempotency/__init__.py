"""Idempotency keys: a retried creating POST gets the first answer, not a second resource.

A client sends `Idempotency-Key: <its own unique string>` with a creating POST. The
first request with a key runs; its response (status, body, Content-Type, Location) is
stored in PostgreSQL in the same transaction as what it created, so a write that
committed always has its answer stored, even if the client never received it. A retry
with the same key and the same request (method, path, query, body) gets that answer
again, marked `Idempotent-Replayed: true`; the same key with another request is a 422;
while the first is still running, a retry is a 409 with Retry-After. Keys are per
caller and expire after IDEMPOTENCY_KEY_HOURS; each keyed write purges a few expired ones.

Routes opt in by using `IdempotencyDep` (JSON bodies, checked before the endpoint
runs) or `DeferredIdempotencyDep` (streamed bodies: the endpoint calls `check()` with
the spooled body's digest), on a router whose route class is `IdempotentRoute`.
"""
