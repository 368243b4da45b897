"""The numpy MiniLM against vectors from the real sentence-transformers (make_reference.py)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from keel.embeddings import HttpEmbedder, MiniLMEmbedder, make_embedder, minilm
from keel.embeddings.bert import erf, gelu_
from keel.embeddings.minilm import plan_batches

REFERENCE = Path(__file__).with_name("reference_vectors.json")
MIXED = [
    "A man is eating food.",
    "",
    "Größe, Straße und Übermut.",
    "How do I reset my password if I no longer have access to my e-mail? " * 3,
    "Hi",
    "The invoice total is $1,234.56, due on 2025-03-31.",
    "東京は日本の首都です。",
]


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    model = MiniLMEmbedder()
    model.load()
    return model


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REFERENCE.read_text())
    return data


def cosines(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    a, b = a.astype(np.float64), b.astype(np.float64)
    result: np.ndarray[Any, Any] = (a * b).sum(axis=1) / (
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    )
    return result


def test_reference_covers_edge_cases(embedder: MiniLMEmbedder, reference: dict[str, Any]) -> None:
    sentences = reference["sentences"]
    assert "" in sentences
    assert len(sentences) == len(reference["vectors"]) >= 20
    lengths = [len(ids) for ids in embedder.token_ids(sentences)]
    assert lengths[sentences.index("")] == 2  # [CLS] [SEP]
    assert max(lengths) == reference["max_seq_length"] == 256  # the long one was truncated


def test_matches_sentence_transformers(embedder: MiniLMEmbedder, reference: dict[str, Any]) -> None:
    ours = embedder.embed_sync(reference["sentences"])
    expected = np.array(reference["vectors"])
    similarity = cosines(ours, expected)
    worst = int(similarity.argmin())
    # Observed: min cosine 1 - 1e-12, max abs difference 3e-7 (float32 noise).
    assert similarity[worst] >= 0.9999, reference["sentences"][worst][:80]
    assert np.abs(ours - expected).max() < 1e-4


def test_vectors_are_unit_length_float32(embedder: MiniLMEmbedder) -> None:
    vectors = embedder.embed_sync(MIXED)
    assert vectors.shape == (len(MIXED), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_batches_keep_order_and_match_single_texts(embedder: MiniLMEmbedder) -> None:
    singles = np.stack([embedder.embed_sync([text])[0] for text in MIXED])
    for batch_size in (1, 3, 64):
        batched = embedder.embed_sync(MIXED, batch_size=batch_size)
        np.testing.assert_allclose(batched, singles, atol=1e-5)
    # Distinct texts give distinct vectors, so a permuted batch would have failed above.
    assert cosines(singles[:-1], singles[1:]).max() < 0.99


def test_plan_batches_sorts_and_caps_padding() -> None:
    lengths = [9, 256, 2, 7, 7, 30]
    assert plan_batches(lengths, batch_size=2, max_tokens=10_000) == [[2, 3], [4, 0], [5, 1]]
    # A token budget keeps the 256-token text from padding the short ones to its length.
    assert plan_batches(lengths, batch_size=32, max_tokens=512) == [[2, 3, 4, 0, 5], [1]]
    assert plan_batches([], batch_size=4, max_tokens=512) == []


def test_token_budget_does_not_change_vectors(embedder: MiniLMEmbedder) -> None:
    tight = MiniLMEmbedder(batch_size=64, max_batch_tokens=1)  # one text per batch
    np.testing.assert_allclose(tight.embed_sync(MIXED), embedder.embed_sync(MIXED), atol=1e-5)


def test_similar_sentences_are_closer(embedder: MiniLMEmbedder) -> None:
    food, bread, horse = embedder.embed_sync(
        ["A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."]
    )
    assert float(food @ bread) > float(food @ horse) + 0.2


def test_empty_inputs(embedder: MiniLMEmbedder) -> None:
    assert embedder.embed_sync([]).shape == (0, 384)
    (blank,) = embedder.embed_sync(["   "])
    (empty,) = embedder.embed_sync([""])
    np.testing.assert_allclose(blank, empty, atol=1e-6)  # whitespace is stripped first
    with pytest.raises(TypeError):
        embedder.embed_sync("one string")


async def test_async_embed_matches_sync(embedder: MiniLMEmbedder) -> None:
    vectors = await embedder.embed(MIXED)
    assert len(vectors) == len(MIXED)
    assert all(len(v) == 384 and isinstance(v[0], float) for v in vectors)
    np.testing.assert_allclose(np.array(vectors), embedder.embed_sync(MIXED), atol=1e-6)
    assert await embedder.embed([]) == []


def test_loads_once_under_concurrent_use(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[Path] = []
    real_load: Callable[[Path], Any] = minilm._load

    def counting_load(model_dir: Path) -> Any:
        loads.append(model_dir)
        return real_load(model_dir)

    monkeypatch.setattr(minilm, "_load", counting_load)
    fresh = MiniLMEmbedder(batch_size=2)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: fresh.embed_sync(MIXED), range(4)))
    assert len(loads) == 1
    assert fresh.load_seconds is not None
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])


def test_erf_and_gelu_are_exact_to_float32() -> None:
    xs = np.linspace(-8.0, 8.0, 40_001, dtype=np.float32)
    want_erf = np.array([math.erf(float(x)) for x in xs])
    want_gelu = np.array([0.5 * float(x) * (1 + math.erf(float(x) / math.sqrt(2))) for x in xs])
    assert np.abs(erf(xs) - want_erf).max() < 5e-7
    got_gelu = gelu_(np.tile(xs, 3))[: xs.size]  # longer than one chunk: chunks line up
    assert np.abs(got_gelu - want_gelu).max() < 2e-6


def test_make_embedder() -> None:
    assert isinstance(make_embedder(), MiniLMEmbedder)
    remote = make_embedder("http", url="http://127.0.0.1:9", model="m", dimension=8)
    assert isinstance(remote, HttpEmbedder)
    assert (remote.name, remote.dimension) == ("m", 8)
    with pytest.raises(ValueError, match="needs url"):
        make_embedder("http", url="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="unknown embedder kind"):
        make_embedder("word2vec")
