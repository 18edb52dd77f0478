"""Leave-one-task-out evaluation speed on real data (MMLU-Pro, 91 `src` tasks, 29 models).

Measures, in one run and with cached embeddings:
  * the full evaluation: alphas 0,0.02,0.05,0.1,0.2,0.3 with 10 repeats (target < 5 min);
  * evaluate() at alpha 0 versus the baseline of re-fitting the router once per held-out task
    (Router().fit on the other 90 tasks, then scoring the held-out one), timed on a few tasks
    and scaled to all tasks (target: at least 10x faster).

Reproduce (the store must already hold the table and the MiniLM embeddings, e.g. after
`lm-router ingest table ../shared/data/mmlu_pro/table.tsv.gz --store S` and one
`lm-router evaluate --store S`):

    python bench/bench_evaluate.py --store S [--baseline-tasks 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from lm_router_plugin.embedding import SentenceTransformerEmbedder, embed_texts
from lm_router_plugin.evaluation import evaluate, read_side_table, regroup_tasks
from lm_router_plugin.router import Router, build_pool
from lm_router_plugin.store import Store

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmlu_pro"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--tasks-file", default=str(SHARED / "instances.tsv.gz"))
    parser.add_argument("--baseline-tasks", type=int, default=3)
    args = parser.parse_args()

    store = Store(args.store)
    table = regroup_tasks(store.read_table(required=True), "src",
                          read_side_table(args.tasks_file))
    pool = build_pool(table)
    t0 = time.perf_counter()
    X = embed_texts(pool.texts, SentenceTransformerEmbedder(), store)
    print(f"embeddings from the cache: {X.shape} in {time.perf_counter() - t0:.1f} s")
    D = len(pool.task_names)

    t0 = time.perf_counter()
    evaluate(table, embeddings=X, alphas=[0.0])
    ours_alpha0 = time.perf_counter() - t0

    # Baseline: a fresh router per held-out task (fit includes its own calibration).
    rng = np.random.default_rng(0)
    sample = rng.choice(D, size=min(args.baseline_tasks, D), replace=False)
    t0 = time.perf_counter()
    for d in sample:
        held_out = pool.task_names[d]
        rest = table[table["task"] != held_out]
        keep = pool.task_of != d
        router = Router().fit(rest, embeddings=X[keep])
        router.recommend(embeddings=X[~keep], task=held_out)
    per_task = (time.perf_counter() - t0) / len(sample)
    baseline = per_task * D

    t0 = time.perf_counter()
    evaluate(table, embeddings=X, alphas=[0, 0.02, 0.05, 0.1, 0.2, 0.3], repeats=10)
    full = time.perf_counter() - t0

    print(f"tasks {D}, models {len(pool.models)}, reference inputs {len(X)}")
    print(f"evaluate, alpha 0:                     {ours_alpha0:8.2f} s")
    print(f"re-fit per task (timed on {len(sample)}, x{D}):   {baseline:8.2f} s "
          f"({per_task:.2f} s per task)")
    print(f"speed-up over re-fitting:              {baseline / ours_alpha0:8.1f}x  (target >= 10x)")
    print(f"full sweep (6 alphas x 10 repeats):    {full:8.2f} s  (target < 300 s)")


if __name__ == "__main__":
    main()
