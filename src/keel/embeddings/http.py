"""An `Embedder` that calls an OpenAI-compatible `POST {url}/embeddings` endpoint."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import httpx

from keel.embeddings.base import EmbeddingError

DEFAULT_TIMEOUT = 30.0
# OpenAI accepts up to 2,048 inputs per request; stay well under it.
DEFAULT_BATCH_SIZE = 256


class HttpEmbedder:
    """Vectors from a remote model (OpenAI, vLLM, Ollama, text-embeddings-inference, ...).

    Every vector is checked to have `dimension` finite floats and is scaled to unit length,
    as the `Embedder` protocol promises. Failures raise `EmbeddingError`. Call `aclose()`
    (or use `async with`) to release the connection pool.
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        dimension: int,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if dimension < 1 or batch_size < 1:
            raise ValueError("dimension and batch_size must be at least 1")
        self.endpoint = url.rstrip("/") + "/embeddings"
        self.model = model
        self._dimension = dimension
        self.batch_size = batch_size
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout)

    @property
    def name(self) -> str:
        return self.model

    @property
    def dimension(self) -> int:
        return self._dimension

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> HttpEmbedder:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector per text, in order; at most `batch_size` texts per request."""
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts, not one string")
        batch = list(texts)
        vectors: list[list[float]] = []
        for start in range(0, len(batch), self.batch_size):
            vectors += await self._request(batch[start : start + self.batch_size])
        return vectors

    async def _request(self, texts: list[str]) -> list[list[float]]:
        try:
            reply = await self._client.post(
                self.endpoint, json={"model": self.model, "input": texts}
            )
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"{self.endpoint}: {type(exc).__name__}: {exc}") from exc
        if reply.status_code != 200:
            raise EmbeddingError(
                f"{self.endpoint} answered HTTP {reply.status_code}: {reply.text[:200]}"
            )
        try:
            body = reply.json()
        except ValueError as exc:
            raise EmbeddingError(f"{self.endpoint} answered invalid JSON") from exc
        return self._parse(body, len(texts))

    def _parse(self, body: Any, count: int) -> list[list[float]]:
        """data[i].embedding ordered by data[i].index, checked and normalised."""
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) != count:
            got = len(data) if isinstance(data, list) else "no"
            raise EmbeddingError(f"{self.endpoint}: expected {count} embeddings, got {got}")
        vectors: list[list[float] | None] = [None] * count
        for position, item in enumerate(data):
            if not isinstance(item, dict):
                raise EmbeddingError(f"{self.endpoint}: data[{position}] is not an object")
            index = item.get("index", position)
            if type(index) is not int or not 0 <= index < count or vectors[index] is not None:
                raise EmbeddingError(f"{self.endpoint}: bad or repeated index {index!r}")
            vectors[index] = self._unit_vector(item.get("embedding"), index)
        return [v for v in vectors if v is not None]

    def _unit_vector(self, embedding: Any, index: int) -> list[float]:
        if not isinstance(embedding, list) or len(embedding) != self._dimension:
            size = len(embedding) if isinstance(embedding, list) else type(embedding).__name__
            raise EmbeddingError(
                f"{self.endpoint}: embedding {index} has dimension {size}, "
                f"expected {self._dimension}"
            )
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in embedding):
            raise EmbeddingError(f"{self.endpoint}: embedding {index} holds non-numbers")
        norm = math.sqrt(math.fsum(v * v for v in embedding))
        if not math.isfinite(norm) or norm == 0.0:
            raise EmbeddingError(f"{self.endpoint}: embedding {index} is zero or not finite")
        return [float(v) / norm for v in embedding]
