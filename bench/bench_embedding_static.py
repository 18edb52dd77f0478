"""Static (model2vec) embedder vs all-MiniLM-L6-v2, on the same 2,000 MMLU-Pro questions.

In one run: the one-time distillation of the static embedder from the packaged MiniLM
(reported apart; into a fresh temp cache unless --cache-dir is given), its load from the
cache, then ``SentenceTransformer.encode`` (MiniLM, batch 64, normalize_embeddings=True) and
the static embedder's ``encode`` on the same texts, and ``embed_texts`` with the static
embedder into an empty store (cache overhead included). The static embedder is timed before
and after MiniLM (--repeats times each side) so load drift shows; the ratio uses the median.
It also reports how alike the two embeddings are: the mean overlap of each question's 10
nearest neighbours (cosine) under the two.

The questions: the first --n unique ``input_text`` values of ../shared/data/mmlu_pro/table.tsv.gz
after a seeded shuffle of the unique instance ids (skips with a message if the data is absent).
Run from the repository root, offline:

    HF_HUB_OFFLINE=1 python bench/bench_embedding_static.py
    HF_HUB_OFFLINE=1 python bench/bench_embedding_static.py --cache-dir ~/.cache/lm-router  # reuse
    HF_HUB_OFFLINE=1 python bench/bench_embedding_static.py --n 300 --cache-dir ~/.cache/lm-router
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402

from lm_router_plugin.embedding.embedders import SentenceTransformerEmbedder, embed_texts  # noqa: E402
from lm_router_plugin.embedding.static import StaticEmbedder  # noqa: E402
from lm_router_plugin.store.store import Store  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmlu_pro" / "table.tsv.gz"


def load_questions(path: Path, n: int, seed: int) -> list[str]:
    """n distinct MMLU-Pro questions (with their options), chosen by a seeded shuffle."""
    import pandas as pd

    table = pd.read_csv(path, sep="\t", keep_default_na=False,
                        usecols=["instance_id", "input_text"])
    unique = table.drop_duplicates("instance_id").sort_values("instance_id")
    order = np.random.default_rng(seed).permutation(len(unique))
    return unique["input_text"].iloc[order[:n]].tolist()


def neighbour_overlap(A: np.ndarray, B: np.ndarray, k: int = 10) -> float:
    """Mean |top-k(A) & top-k(B)| / k over rows (self excluded); A, B (n, d) unit rows."""
    def topk(X):
        sim = X @ X.T
        np.fill_diagonal(sim, -np.inf)
        return np.argpartition(-sim, k, axis=1)[:, :k]
    ta, tb = topk(A), topk(B)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ta, tb)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="questions")
    parser.add_argument("--repeats", type=int, default=5, help="static timings per side")
    parser.add_argument("--batch-size", type=int, default=64, help="MiniLM batch size")
    parser.add_argument("--cache-dir", default=None,
                        help="static cache to reuse (default: a fresh temp folder, so the "
                             "distillation is measured)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    command = ("python bench/bench_embedding_static.py "
               + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    print(f"# HF_HUB_OFFLINE=1 {command.strip()}")
    if not Path(args.data).exists():
        print(f"skipped: {args.data} is absent (MMLU-Pro table, see ../shared/data)")
        return
    import model2vec
    import sentence_transformers
    import torch

    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), sentence-transformers "
          f"{sentence_transformers.__version__}, model2vec {model2vec.__version__}")
    texts = load_questions(Path(args.data), args.n, args.seed)
    words = [len(t.split()) for t in texts]
    print(f"{len(texts)} MMLU-Pro questions, {np.mean(words):.0f} words on average "
          f"(min {min(words)}, max {max(words)})")

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache_dir).expanduser() if args.cache_dir else Path(tmp) / "cache"
        static = StaticEmbedder(cache_dir=cache)
        t0 = time.perf_counter()
        static.model
        t_first = time.perf_counter() - t0
        if static.distill_seconds is not None:
            print(f"\nstatic: one-time distillation {static.distill_seconds:.1f} s "
                  f"(first use incl. saving and loading: {t_first:.1f} s)")
        else:
            print(f"\nstatic: loaded from the cache {cache} in {t_first:.2f} s (no distillation)",
                  flush=True)
        t0 = time.perf_counter()
        StaticEmbedder(cache_dir=cache).model
        print(f"static: load of the cached distillation {time.perf_counter() - t0:.2f} s")
        print(f"static id: {static.id}", flush=True)

        def time_static() -> list[float]:
            out = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                static.encode(texts)
                out.append(time.perf_counter() - t0)
            return out

        static.encode(texts[:64])  # warm-up
        t_static = time_static()

        minilm = SentenceTransformerEmbedder(batch_size=args.batch_size)
        model = minilm.model
        model.encode(texts[:args.batch_size], batch_size=args.batch_size)  # warm-up
        print(f"static encode before MiniLM: {', '.join(f'{t:.3f}' for t in t_static)} s",
              flush=True)
        t0 = time.perf_counter()
        X_minilm = model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)
        t_minilm = time.perf_counter() - t0
        print(f"MiniLM encode: {t_minilm:.2f} s", flush=True)

        t_static += time_static()
        X_static = static.encode(texts)
        t0 = time.perf_counter()
        X_store = embed_texts(texts, static, Store(Path(tmp) / "store"))
        t_embed_texts = time.perf_counter() - t0
        # embed_texts re-normalises: equal up to float32 rounding
        assert np.allclose(X_store, X_static, atol=1e-6)

    n = len(texts)
    ms = statistics.median(t_static)
    print(f"\nSentenceTransformer.encode (MiniLM, batch {args.batch_size}): {t_minilm:.2f} s "
          f"= {n / t_minilm:.1f} texts/s (one run)")
    print(f"static encode: median {ms:.3f} s = {n / ms:,.0f} texts/s over {len(t_static)} runs "
          f"(first half before MiniLM {statistics.median(t_static[:args.repeats]):.3f} s, "
          f"after {statistics.median(t_static[args.repeats:]):.3f} s; best {min(t_static):.3f} s)")
    print(f"static through embed_texts, empty store: {t_embed_texts:.3f} s")
    print(f"\nspeed-up static / MiniLM: {t_minilm / ms:.0f}x (median), "
          f"{t_minilm / min(t_static):.0f}x (best); through embed_texts "
          f"{t_minilm / t_embed_texts:.0f}x")
    if static.distill_seconds is not None:
        with_distill = t_minilm / (static.distill_seconds + ms)
        print(f"including the one-time distillation: {with_distill:.2f}x")
    print(f"mean overlap of the 10 nearest neighbours, MiniLM vs static: "
          f"{neighbour_overlap(X_minilm, X_static):.3f}")


if __name__ == "__main__":
    main()
