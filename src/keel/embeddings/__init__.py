"""Text embedders: all-MiniLM-L6-v2 in-process (default) or an OpenAI-compatible service."""

from __future__ import annotations

from keel.embeddings.base import Embedder, EmbeddingError
from keel.embeddings.http import DEFAULT_TIMEOUT, HttpEmbedder
from keel.embeddings.minilm import MiniLMEmbedder

__all__ = ["Embedder", "EmbeddingError", "HttpEmbedder", "MiniLMEmbedder", "make_embedder"]

EMBEDDER_KINDS = ("minilm", "http")


def make_embedder(
    kind: str = "minilm",
    *,
    url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    dimension: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    threads: int | None = None,
) -> Embedder:
    """The embedder for `kind`: "minilm" (no options) or "http" (url, model, dimension)."""
    if kind == "minilm":
        return MiniLMEmbedder(threads=threads)
    if kind == "http":
        if not url or not model or dimension is None:
            raise ValueError("the http embedder needs url, model and dimension")
        return HttpEmbedder(url, model, dimension=dimension, api_key=api_key, timeout=timeout)
    raise ValueError(f"unknown embedder kind {kind!r}; expected one of {EMBEDDER_KINDS}")
