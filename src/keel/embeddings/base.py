"""What every embedder offers: a fixed dimension and a batch `embed`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from keel.core.errors import KeelError


class Embedder(Protocol):
    """Turns texts into unit-length vectors of `dimension` floats."""

    @property
    def name(self) -> str:
        """The model's name, e.g. `all-MiniLM-L6-v2`."""
        ...

    @property
    def dimension(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order. Runs off the event loop."""
        ...


class EmbeddingError(KeelError):
    """An embedder could not produce vectors: its service failed or answered nonsense.

    `str(exc)` gives the reason, for logs; clients see only a generic detail, since the
    reason may name an internal endpoint or quote its reply.
    """

    status_code, slug, title = 502, "embedding-failed", "Embedding Failed"

    def __init__(self, reason: str) -> None:
        super().__init__("The text could not be embedded; try again later.")
        self.reason = reason

    def __str__(self) -> str:
        return self.reason
