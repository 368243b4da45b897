"""Time-ordered UUIDv7 keys (RFC 9562): better B-tree locality than uuid4."""

from __future__ import annotations

import os
import time
from uuid import UUID

_RAND_A_BITS = 12
_RAND_B_BITS = 62


def uuid7() -> UUID:
    """A new UUIDv7: 48-bit Unix milliseconds, version 7, variant 10, 74 random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10))
    rand_a = rand >> (80 - _RAND_A_BITS) & ((1 << _RAND_A_BITS) - 1)
    rand_b = rand & ((1 << _RAND_B_BITS) - 1)
    value = (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return UUID(int=value)
