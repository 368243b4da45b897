"""Embedding throughput of the in-process all-MiniLM-L6-v2 (numpy, no torch).

Texts come from keel.seed's FakeRows (the seed's Faker pools): post titles as the
"sentences" corpus (3-11 words, ~9 tokens) and title + content of whole posts as the
"posts" corpus (~130 tokens, some cut at the model's 256). Each corpus is embedded with
`MiniLMEmbedder.embed_sync` at each batch size, `--repeats` times (median reported), in
two fresh child processes:

- "all cores": numpy's OpenBLAS and the tokenizer use their default threads (2 here);
- "1 core": OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=RAYON_NUM_THREADS=1 and the child pinned
  to one CPU with taskset: what one uvicorn worker gets when others share the box.

Also reports the model's load time (tokenizer + weights) in a fresh process. Other
processes' CPU use is measured during each run, as in the HTTP benchmarks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Mapping
from typing import Any

from bench.harness import results as res
from bench.harness.base import SERVER_CPU, BenchError, say
from bench.harness.noise import NOISY_OTHER_CPU_PCT, cpu_split, wait_for_quiet
from bench.harness.proc import run_child, source_tree
from bench.harness.scenario import Results, Scenario, first_line

NAME = "embeddings"
MODES = {
    "all cores": {},
    "1 core": {
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "RAYON_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    },
}


def corpora(sentences: int, posts: int, seed: int) -> dict[str, list[str]]:
    """Seed-like texts: post titles, and whole posts (title, blank line, content)."""
    from keel.seed.fake import FakeRows

    fake = FakeRows(seed)
    rows = fake.posts(max(sentences, posts), [uuid.UUID(int=1)], [fake.now_us - 10**12], 1.0)
    return {
        "sentences": [row[1] for row in rows[:sentences]],
        "posts": [f"{row[1]}\n\n{row[2]}" for row in rows[:posts]],
    }


def child(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Runs in the measured process: load the model, then time every corpus × batch size."""
    t0 = time.perf_counter()
    from keel.embeddings.minilm import MiniLMEmbedder

    import_s = time.perf_counter() - t0
    embedder = MiniLMEmbedder()
    embedder.load()
    texts = corpora(spec["sentences"], spec["posts"], spec["seed"])
    embedder.embed_sync(texts["sentences"][:64] + texts["posts"][:16])  # warm caches and pools
    out: dict[str, Any] = {
        "import_s": import_s,
        "load_s": embedder.load_seconds,
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "runs": [],
    }
    for corpus, batch in texts.items():
        tokens = [len(ids) for ids in embedder.token_ids(batch)]
        for size in spec["batch_sizes"]:
            walls, cpus, others = [], [], []
            for _ in range(spec["repeats"]):
                with cpu_split() as noise:
                    w0, c0 = time.perf_counter(), time.process_time()
                    vectors = embedder.embed_sync(batch, batch_size=size)
                    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                walls.append(wall)
                cpus.append(cpu / wall * 100)
                others.append(noise().other_pct)
            if vectors.shape != (len(batch), embedder.dimension):
                raise BenchError(f"bad output shape {vectors.shape}")
            wall = statistics.median(walls)
            out["runs"].append(
                {
                    "corpus": corpus,
                    "batch_size": size,
                    "texts": len(batch),
                    "mean_tokens": statistics.fmean(tokens),
                    "texts_per_s": len(batch) / wall,
                    "tokens_per_s": sum(tokens) / wall,
                    "ms_per_text": wall / len(batch) * 1e3,
                    "wall_s": walls,
                    "cpu_pct": statistics.median(cpus),
                    "other_cpu_pct": statistics.median(others),
                }
            )
            say(
                f"  {corpus:>9} batch {size:>3}: {len(batch) / wall:8.1f} texts/s"
                f"  CPU {statistics.median(cpus):.0f}%  other CPU {statistics.median(others):.0f}%"
            )
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sentences", type=int, default=2_000)
    parser.add_argument("--posts", type=int, default=200)
    parser.add_argument("--batch-sizes", type=batch_sizes, default=[1, 16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)


def batch_sizes(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = {
        "sentences": args.sentences,
        "posts": args.posts,
        "batch_sizes": args.batch_sizes,
        "repeats": args.repeats,
        "seed": args.seed,
    }
    modes: dict[str, Any] = {}
    with source_tree(args.ref) as src:
        for mode, env in MODES.items():
            wait_for_quiet(args.quiet_wait)
            say(f"{mode}:")
            cpu = SERVER_CPU if mode == "1 core" else None
            target = "bench.scenarios.embeddings:child"
            modes[mode] = run_child(target, spec, src=src, cpu=cpu, env=env)
    worst = max(r["other_cpu_pct"] for m in modes.values() for r in m["runs"])
    return {"modes": modes, "noisy": worst >= NOISY_OTHER_CPU_PCT}


def render(data: Mapping[str, Any]) -> str:
    modes = data["modes"]
    header = ["corpus (mean tokens)", "batch", *(f"{m}: texts/s" for m in modes)]
    header += [f"{m}: ms/text" for m in modes] + [f"{m}: CPU %" for m in modes]
    rows = []
    first = next(iter(modes.values()))["runs"]
    for i, run in enumerate(first):
        per_mode = [m["runs"][i] for m in modes.values()]
        rows.append(
            [
                f"{run['corpus']} ({run['mean_tokens']:.0f})",
                run["batch_size"],
                *(f"**{r['texts_per_s']:,.1f}**" for r in per_mode),
                *(f"{r['ms_per_text']:.2f}" for r in per_mode),
                *(f"{r['cpu_pct']:.0f}" for r in per_mode),
            ]
        )
    loads = ", ".join(f"{m} {v['load_s']:.2f} s" for m, v in modes.items())
    imports = ", ".join(f"{m} {v['import_s']:.2f} s" for m, v in modes.items())
    worst = max(r["other_cpu_pct"] for m in modes.values() for r in m["runs"])
    s = data["settings"]
    lines = [
        f"### Embeddings ({data['timestamp']}, {data['commit'][:12]})",
        "",
        "`MiniLMEmbedder.embed_sync` (all-MiniLM-L6-v2, numpy float32, no torch), one process, "
        f"median of {s['repeats']} runs per cell; texts/s counts every text, tokens include "
        "[CLS]/[SEP] and stop at 256.",
        "",
        res.markdown_table(header, rows),
        "",
        f"Corpora from `keel.seed` (seed {s['seed']}): {s['sentences']:,} post titles and "
        f'{s["posts"]:,} whole posts (title + content). "all cores": default BLAS/tokenizer '
        f'threads on {os.cpu_count()} CPUs; "1 core": all thread pools at 1 and the process '
        "pinned to one CPU (taskset). CPU % is the process's CPU time over wall time "
        "(100 = one core busy).",
        "",
        f"Model load (tokenizer + safetensors weights, fresh process): {loads}; importing "
        f"`keel.embeddings.minilm` (numpy, tokenizers, structlog, ...): {imports}.",
        f"Other processes used at most {worst:.0f}% of a core during the runs.",
    ]
    if worst >= NOISY_OTHER_CPU_PCT:
        lines += [
            "",
            f"**Warning: other processes used up to {worst:.0f}% of a core during the runs; "
            "the figures may be low. Re-run on a quiet machine.**",
        ]
    return "\n".join(lines)


def _cell(data: Mapping[str, Any], corpus: str, size: int, mode: str) -> str:
    runs = data["modes"][mode]["runs"]
    run = next((r for r in runs if r["corpus"] == corpus and r["batch_size"] == size), None)
    return f"{run['texts_per_s']:,.0f}" if run else ""


def table(results: Results) -> str:
    stem, data = next(iter(results.items()))
    modes = list(data["modes"])
    first = data["modes"][modes[0]]["runs"]
    corpora_seen = list(dict.fromkeys(r["corpus"] for r in first))
    sizes = list(dict.fromkeys(r["batch_size"] for r in first))
    rows = []
    for corpus in corpora_seen:
        tokens = next(r["mean_tokens"] for r in first if r["corpus"] == corpus)
        rows.append(
            [
                f"{corpus} (~{tokens:.0f} tokens), {' / '.join(modes)}",
                *(" / ".join(_cell(data, corpus, size, m) for m in modes) for size in sizes),
            ]
        )
    header = ["texts/s (median)", *(f"batch {size}" for size in sizes)]
    loads = ", ".join(f"{m} {v['load_s']:.2f} s" for m, v in data["modes"].items())
    note = f"Model load: {loads}. From {res.source_line(data, stem)}."
    return f"{res.markdown_table(header, rows)}\n\n{note}"


def headline(results: Results) -> list[list[str]]:
    data = next(iter(results.values()))
    one = data["modes"].get("1 core", {}).get("runs", [])
    best = {r["corpus"]: r for r in one if r["batch_size"] == max(x["batch_size"] for x in one)}
    if not best:
        return []
    parts = [
        f"{r['texts_per_s']:,.0f} {c}/s (~{r['mean_tokens']:.0f} tokens)" for c, r in best.items()
    ]
    return [
        ["MiniLM embedding, one process on one core, largest batch", "; ".join(parts), "report"]
    ]


SCENARIO = Scenario(
    name="embeddings",
    summary=first_line(__doc__),
    add_arguments=add_arguments,
    run=run,
    render=render,
    table=table,
    headline=headline,
)
