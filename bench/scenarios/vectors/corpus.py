"""The vector scenario's corpus: Faker sentences, embedded by pinned single-threaded children.

Vectors are cached as .npy under --cache-dir, so later runs skip the embedding.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.harness.base import BenchError, now_iso, say
from bench.harness.noise import cpu_split, wait_for_quiet
from bench.harness.proc import Child

Vectors = npt.NDArray[np.float32]
Indices = npt.NDArray[np.intp]
K = 10
SINGLE_THREAD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "RAYON_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def make_texts(count: int, seed: int) -> list[str]:
    """`count` distinct sentences, made the way `keel.seed` makes post titles."""
    from faker import Faker

    from keel.posts.models import TITLE_MAX

    fake, rng = Faker("en_US"), random.Random(seed)  # noqa: S311 - reproducible fake text
    fake.seed_instance(seed)
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen.setdefault(fake.sentence(nb_words=rng.randint(3, 11)).rstrip(".")[:TITLE_MAX])
    return list(seen)


def digest(texts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


def embed_part(spec: Mapping[str, Any]) -> dict[str, Any]:
    """In a child: embed texts[start:stop], write the vectors to spec["out"] (.npy)."""
    from keel.embeddings.minilm import MiniLMEmbedder

    texts = make_texts(spec["count"], spec["seed"])
    if digest(texts) != spec["digest"]:
        raise BenchError("child made different texts than the parent")
    start, stop = int(spec["start"]), int(spec["stop"])
    part = texts[start:stop]
    embedder = MiniLMEmbedder()
    embedder.load()
    embedder.embed_sync(part[:256], batch_size=spec["batch_size"])  # warm caches and pools
    tokens = [len(ids) for ids in embedder.token_ids(part)]
    w0, c0 = time.perf_counter(), time.process_time()
    vectors = embedder.embed_sync(part, batch_size=spec["batch_size"])
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    np.save(spec["out"], vectors)
    info = {
        "texts": len(part),
        "mean_tokens": statistics.fmean(tokens),
        "wall_s": wall,
        "cpu_pct": cpu / wall * 100,
        "texts_per_s": len(part) / wall,
        "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    return info


def embeddings(
    texts: list[str], args: argparse.Namespace, src: Path | None = None
) -> tuple[Vectors, dict[str, Any]]:
    """All texts' vectors, from the cache or computed now by --workers pinned children."""
    from keel.embeddings.minilm import MODEL_NAME

    key = digest(texts)
    stem = f"{MODEL_NAME}-{len(texts)}-seed{args.seed}-b{args.batch_size}-{key[:12]}"
    npy, meta = args.cache_dir / f"{stem}.npy", args.cache_dir / f"{stem}.json"
    if npy.exists() and meta.exists() and not args.no_cache:
        vectors = np.load(npy)
        if vectors.shape == (len(texts), 384):
            info: dict[str, Any] = json.loads(meta.read_text())
            say(f"embeddings: cached {npy}")
            return vectors, {**info, "cached": True, "cache_file": str(npy)}
    wait_for_quiet(args.quiet_wait)
    workers = max(1, args.workers)
    bounds = np.linspace(0, len(texts), workers + 1).astype(int)
    say(f"embedding {len(texts):,} texts in {workers} processes ...")
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    outs = [args.cache_dir / f"{stem}.part{i}.npy" for i in range(workers)]
    spec = {"count": len(texts), "seed": args.seed, "digest": key, "batch_size": args.batch_size}
    with cpu_split() as noise:
        t0 = time.perf_counter()
        children = [
            Child(
                "bench.scenarios.vectors.corpus:embed_part",
                {**spec, "start": int(bounds[i]), "stop": int(bounds[i + 1]), "out": str(outs[i])},
                src=src,
                cpu=i,
                env=SINGLE_THREAD_ENV,
            )
            for i in range(workers)
        ]
        parts = [child.result() for child in children]
        wall = time.perf_counter() - t0
    vectors = np.concatenate([np.load(o) for o in outs])
    for o in outs:
        o.unlink()
    info = {
        "model": MODEL_NAME,
        "texts": len(texts),
        "batch_size": args.batch_size,
        "workers": workers,
        "per_process": parts,
        "single_process_texts_per_s": statistics.fmean(p["texts_per_s"] for p in parts),
        "mean_tokens": statistics.fmean(p["mean_tokens"] for p in parts),
        "wall_s": wall,
        # All processes together, over the longest one's embedding time (load excluded).
        "aggregate_texts_per_s": len(texts) / max(p["wall_s"] for p in parts),
        "other_cpu_pct": noise().other_pct,
        "measured_at": now_iso(),
    }
    np.save(npy, vectors)
    meta.write_text(json.dumps(info, indent=2) + "\n")
    return vectors, {**info, "cached": False, "cache_file": str(npy)}


def ground_truth(corpus: Vectors, queries: Vectors, rows: Indices | None) -> Indices:
    """Indices of each query's K nearest corpus rows by cosine (unit vectors: dot product)."""
    candidates = np.arange(len(corpus)) if rows is None else rows
    sims = queries.astype(np.float64) @ corpus[candidates].astype(np.float64).T
    top = np.argpartition(-sims, K, axis=1)[:, :K]
    order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
    return candidates[np.take_along_axis(top, order, axis=1)]
