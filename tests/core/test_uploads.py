"""Spooling uploads and heavy-operation slots (the HTTP side is in tests/drills)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator

import pytest

from keel.core.uploads import (
    SPOOL_MEMORY_BYTES,
    HeavyOperations,
    HeavyOperationsBusy,
    TooManyHeavyOperations,
    spool,
)


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("length", [0, 10, SPOOL_MEMORY_BYTES + 1, 3 * SPOOL_MEMORY_BYTES + 7])
async def test_spool_gives_back_the_same_bytes(length: int) -> None:
    data = bytes(range(256)) * (length // 256) + b"x" * (length % 256)
    async with spool(pieces(data, 65_536)) as body:
        assert body.size == length
        assert body.sha256 == hashlib.sha256(data).digest()
        assert b"".join([piece async for piece in body.chunks()]) == data
        assert b"".join([piece async for piece in body.chunks()]) == data  # readable twice
        on_disk = body._file is not None  # noqa: SLF001
    assert on_disk == (length > SPOOL_MEMORY_BYTES)


def test_heavy_operations_per_user_then_per_process() -> None:
    slots = HeavyOperations(per_user=2, per_process=3)
    alice, bob = uuid.uuid4(), uuid.uuid4()
    with slots.slot(alice), slots.slot(alice):
        with pytest.raises(TooManyHeavyOperations) as refused, slots.slot(alice):
            pass
        assert refused.value.status_code == 429
        assert refused.value.headers == {"Retry-After": "5"}
        with slots.slot(bob):
            with pytest.raises(HeavyOperationsBusy) as busy, slots.slot(uuid.uuid4()):
                pass
            assert busy.value.status_code == 503
    with slots.slot(alice), slots.slot(alice), slots.slot(bob):  # all given back
        pass
