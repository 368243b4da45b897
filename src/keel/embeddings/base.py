"""What every embedder offers: a fixed dimension and a batch `embed`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


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
