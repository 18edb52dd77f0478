"""Embedding throughput: ``embed_texts`` (empty cache, Store in a temp folder) against
``SentenceTransformer.encode`` called directly on the same texts (same loaded model, same
batch size, normalize_embeddings=True); target ratio >= 0.9. Also the cached second pass.

The two are timed alternately (direct first on even repeats, embed_texts first on odd ones)
so drift (thermal, other load) hits both; the ratio is printed for the medians and for the
best of the repeats (timeit's rule on a shared machine). Texts are ~1,000 prompt-like strings generated
deterministically (QA, multiple choice, translation, summarisation, arithmetic word
problems). Run from the repository root, offline:

    HF_HUB_OFFLINE=1 python bench/bench_embedding.py
    HF_HUB_OFFLINE=1 python bench/bench_embedding.py --n-texts 300 --repeats 2   # quick
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shlex
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402

from lm_router_plugin.embedding.embedders import SentenceTransformerEmbedder, embed_texts  # noqa: E402
from lm_router_plugin.store.store import Store  # noqa: E402

WORDS = ("the model river history energy market policy cell protein theorem city network "
         "student teacher language climate ocean budget contract court patient symptom "
         "algorithm dataset planet orbit treaty empire revolution harvest engine voltage "
         "molecule reaction company profit vaccine gene election museum painting novel poem "
         "bridge tower mountain desert forest island festival recipe kitchen garden").split()
NAMES = "Alice Bob Carla Deepak Elena Farid Grace Hiro Ines Jonas Kemal Lena".split()
COUNTRIES = "Kenya Peru Norway Vietnam Canada Egypt Chile Poland Ghana Nepal Japan".split()


def _sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def _paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(_sentence(rng, rng.randint(8, 18)) for _ in range(sentences))


def make_texts(n: int, seed: int = 0) -> list[str]:
    """n distinct prompt-like texts, typically 30-250 words."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        kind = len(out) % 5
        if kind == 0:
            text = (f"{_paragraph(rng, rng.randint(2, 6))}\nQuestion: According to the passage, "
                    f"what happened to the {rng.choice(WORDS)}?\nAnswer:")
        elif kind == 1:
            options = "\n".join(f"{c}. {_sentence(rng, rng.randint(3, 8))}" for c in "ABCD")
            text = (f"The following are multiple choice questions about {rng.choice(WORDS)}."
                    f"\n\n{_sentence(rng, rng.randint(10, 25))[:-1]}?\n{options}\nAnswer:")
        elif kind == 2:
            text = (f"Translate the following sentence into French: "
                    f"'{_sentence(rng, rng.randint(6, 20))}'")
        elif kind == 3:
            text = (f"Summarize the following article in one sentence.\n\n"
                    f"{_paragraph(rng, rng.randint(4, 10))}\n\nSummary:")
        else:
            a, b = rng.randint(2, 900), rng.randint(2, 900)
            text = (f"{rng.choice(NAMES)} lives in {rng.choice(COUNTRIES)} and has {a} "
                    f"{rng.choice(WORDS)}s. A friend gives {b} more. How many are there now? "
                    "Let's think step by step.")
        out.append(f"{text} [{len(out)}]")  # distinct texts: nothing deduplicated
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-texts", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--embedder", default=None, help="model name or folder (default MiniLM)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    command = "python bench/bench_embedding.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"# HF_HUB_OFFLINE=1 {command.strip()}")
    import torch

    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)")
    texts = make_texts(args.n_texts, args.seed)
    words = [len(t.split()) for t in texts]
    print(f"{len(texts)} texts, {np.mean(words):.0f} words on average "
          f"(min {min(words)}, max {max(words)}), batch size {args.batch_size}")

    embedder = SentenceTransformerEmbedder(args.embedder, batch_size=args.batch_size)
    model = embedder.model  # one loaded model serves both paths
    print(f"embedder {embedder.id}")

    def direct() -> np.ndarray:
        return model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True,
                            normalize_embeddings=True, show_progress_bar=False)

    def ours(store: Store) -> np.ndarray:
        return embed_texts(texts, embedder, store)

    embedded: list[int] = []
    plain_encode = embedder.encode

    def counting_encode(batch):
        embedded.append(len(batch))
        return plain_encode(batch)

    embedder.encode = counting_encode  # counts what embed_texts sends to the model

    with tempfile.TemporaryDirectory() as tmp:
        model.encode(texts[:args.batch_size], batch_size=args.batch_size)  # warm-up
        t_direct, t_ours, t_cached, n_recomputed = [], [], [], []
        for rep in range(args.repeats):
            store = Store(os.path.join(tmp, f"store-{rep}"))  # empty cache every repeat
            steps = ["direct", "ours"] if rep % 2 == 0 else ["ours", "direct"]
            for step in steps:
                t0 = time.perf_counter()
                X = direct() if step == "direct" else ours(store)
                (t_direct if step == "direct" else t_ours).append(time.perf_counter() - t0)
                if step == "direct":
                    X_direct = X
                else:
                    X_ours = X
            embedded.clear()
            t0 = time.perf_counter()
            X_cached = ours(store)  # second pass: everything should be cached
            t_cached.append(time.perf_counter() - t0)
            n_recomputed.append(sum(embedded))
            print(f"repeat {rep}: direct {t_direct[-1]:.2f} s, embed_texts {t_ours[-1]:.2f} s, "
                  f"cached {t_cached[-1]:.3f} s, {n_recomputed[-1]} texts re-embedded "
                  f"(order: {' then '.join(steps)})", flush=True)
        # same vectors (up to float rounding of the re-normalisation / batch composition)
        assert np.allclose(X_ours, X_direct, atol=1e-5)
        assert np.allclose(X_cached, X_ours, atol=1e-5)

    n = len(texts)
    for label, pick in (("median", statistics.median), ("best", min)):
        md, mo = pick(t_direct), pick(t_ours)
        ratio = md / mo  # throughput of embed_texts / throughput of the direct call
        print(f"\n{label} of {args.repeats}: SentenceTransformer.encode {n / md:.1f} texts/s "
              f"({md:.2f} s); embed_texts, empty cache {n / mo:.1f} texts/s ({mo:.2f} s)")
        print(f"  throughput ratio embed_texts / direct: {ratio:.3f} (target >= 0.9) "
              f"{'PASS' if ratio >= 0.9 else 'FAIL'}")
    mc = statistics.median(t_cached)
    print(f"\nembed_texts, cached second pass: median {mc * 1000:.1f} ms for {n} texts "
          f"({statistics.median(t_direct) / mc:.0f}x faster than embedding); texts re-embedded "
          f"on the second pass: {n_recomputed} (should be 0)")

if __name__ == "__main__":
    main()
