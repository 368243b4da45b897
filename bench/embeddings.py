"""Embedding throughput of the in-process all-MiniLM-L6-v2 (numpy, no torch).

    uv run python bench/embeddings.py [--sentences 2000] [--posts 200] [--batch-sizes 1,16,64]
                                      [--repeats 3] [--seed 1] [--quiet-wait 120]

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
Results go to bench/results/embeddings.{json,md}; see bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import _harness as h

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


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Runs in the measured process: load the model, then time every corpus × batch size."""
    t0 = time.perf_counter()
    from keel.embeddings.minilm import MiniLMEmbedder

    import_s = time.perf_counter() - t0
    embedder = MiniLMEmbedder()
    embedder.load()
    texts = corpora(args.sentences, args.posts, args.seed)
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
        for size in args.batch_sizes:
            walls, cpus, others = [], [], []
            for _ in range(args.repeats):
                with h.cpu_meter(os.getpid()) as other_cpu:
                    w0, c0 = time.perf_counter(), time.process_time()
                    vectors = embedder.embed_sync(batch, batch_size=size)
                    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                walls.append(wall)
                cpus.append(cpu / wall * 100)
                others.append(other_cpu() or 0.0)
            if vectors.shape != (len(batch), embedder.dimension):
                raise h.BenchError(f"bad output shape {vectors.shape}")
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
            print(
                f"  {corpus:>9} batch {size:>3}: {len(batch) / wall:8.1f} texts/s"
                f"  CPU {statistics.median(cpus):.0f}%  other CPU {statistics.median(others):.0f}%",
                file=sys.stderr,
            )
    return out


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start a fresh child for one mode and return what it measured."""
    h.wait_for_quiet(args.quiet_wait)
    print(f"{mode}:", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        out = Path(tmp) / "result.json"  # not stdout: the model's load is logged there
        argv = [sys.executable, __file__, f"--child-out={out}", *child_args(args)]
        if mode == "1 core":
            argv = h.pinned(h.SERVER_CPU, argv)
        env = {**os.environ, **MODES[mode]}
        proc = subprocess.run(argv, cwd=h.REPO_ROOT, env=env, check=False)
        if proc.returncode != 0:
            raise h.BenchError(f"{mode}: child exited with {proc.returncode}")
        result: dict[str, Any] = json.loads(out.read_text())
    return result


def child_args(args: argparse.Namespace) -> list[str]:
    return [
        f"--sentences={args.sentences}",
        f"--posts={args.posts}",
        f"--batch-sizes={','.join(map(str, args.batch_sizes))}",
        f"--repeats={args.repeats}",
        f"--seed={args.seed}",
    ]


def render(data: dict[str, Any]) -> str:
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
        h.markdown_table(header, rows),
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
    if worst >= h.NOISY_OTHER_CPU_PCT:
        lines += [
            "",
            f"**Warning: other processes used up to {worst:.0f}% of a core during the runs; "
            "the figures may be low. Re-run on a quiet machine.**",
        ]
    return "\n".join(lines)


def batch_sizes(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=2_000)
    parser.add_argument("--posts", type=int, default=200)
    parser.add_argument("--batch-sizes", type=batch_sizes, default=[1, 16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quiet-wait", type=float, default=120.0)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_out is not None:
        args.child_out.write_text(json.dumps(child(args)))
        return 0
    data: dict[str, Any] = {
        "name": NAME,
        "timestamp": h.now_iso(),
        "commit": h.git_commit(),
        "settings": {k: v for k, v in vars(args).items() if k != "child_out"},
        "modes": {mode: run_mode(mode, args) for mode in MODES},
    }
    worst = max(r["other_cpu_pct"] for m in data["modes"].values() for r in m["runs"])
    data["noisy"] = worst >= h.NOISY_OTHER_CPU_PCT
    markdown = render(data)
    h.write_results(NAME, data, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
