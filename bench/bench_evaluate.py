"""Strict leave-one-task-out evaluation on real data (MMLU-Pro, 29 models), against the
brute-force baseline doing the same work: a Router fitted from scratch without each held-out
task, then scoring that task. Both run in this process on the same cached embeddings, every
per-task output is checked equal, and both are timed on the same tasks (nothing
extrapolated).

Also times the full sweep: alphas 0,0.02,0.05,0.1,0.2,0.3 and --labels 5,10,20,30 with 10
repeats each, every row (every registered decider - s1, s2, s3, the stacked switch - and
few-shot, with and without labels)
(targets: >= 10x faster than the refit loop; sweep < 300 s).

Reproduce (the store must already hold the table and the MiniLM embeddings, e.g. after
`lm-router ingest table ../shared/data/mmlu_pro/table.tsv.gz --store S` and one
`lm-router evaluate --store S`):

    python bench/bench_evaluate.py --store S [--tasks-by src|category]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from lm_router_plugin.evaluation.protocol import evaluate, read_side_table, regroup_tasks
from lm_router_plugin.router.pool import build_pool
from lm_router_plugin.router.router import Router
from lm_router_plugin.store.store import Store

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmlu_pro"


def refit_loop(table, pool, X):
    """Per held-out task: Router().fit without it, recommend on it (s1, s2, s3, stack)."""
    out = {}
    for d, task in enumerate(pool.task_names):
        keep = pool.task_of != d
        router = Router().fit(table[table["task"] != task], embeddings=X[keep])
        y = pool.Y[~keep]
        labelled = [m for j, m in enumerate(pool.models) if (~np.isnan(y[:, j])).any()]
        out[task] = {s: router.recommend(embeddings=X[~keep], score=s, candidates=labelled)
                     for s in ("s1", "s2", "s3", "stack")}
    return out


def check_equal(result, expected) -> int:
    """Number of per-task values compared; raises on the first difference."""
    n = 0
    for record in result.per_task:
        recs = expected[record["task"]]
        for score, rec in recs.items():
            assert record[score]["model"] == rec.choice, (record["task"], score)
            n += 1
            for row in rec.models:
                got = record["scores"][row.model]
                for key in ("s1", "s2", "s3", "p"):
                    assert abs(got[key] - getattr(row, key)) <= 1e-6 * max(1, abs(got[key])), \
                        (record["task"], row.model, key, got[key], getattr(row, key))
                    n += 1
        assert record["bma"]["model"] == recs["s3"].bma
        assert abs(record["u"] - recs["s3"].u) <= 1e-6
        n += 2
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--tasks-file", default=str(SHARED / "instances.tsv.gz"))
    parser.add_argument("--tasks-by", default="src", help="src (91 tasks) or category (14)")
    parser.add_argument("--embedder", default=None,
                        help="as lm-router's --embedder (default MiniLM; e.g. static)")
    args = parser.parse_args()

    store = Store(args.store)
    table = store.read_table(required=True)
    if args.tasks_by == "src":  # the table's own task column holds the 14 categories
        table = regroup_tasks(table, "src", read_side_table(args.tasks_file))
    pool = build_pool(table)
    t0 = time.perf_counter()
    # the package's own embedder resolution (names, static, paths), cached in the store
    X, embedder_id = Router(embedder=args.embedder).reference_embeddings(pool, store, None)
    print(f"embeddings ({embedder_id}) from the cache: {X.shape} in "
          f"{time.perf_counter() - t0:.1f} s")
    D = len(pool.task_names)

    t0 = time.perf_counter()
    result = evaluate(table, embeddings=X, alphas=[0.0], n_bootstrap=0)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    expected = refit_loop(table, pool, X)
    baseline = time.perf_counter() - t0
    compared = check_equal(result, expected)

    t0 = time.perf_counter()
    evaluate(table, embeddings=X, alphas=[0, 0.02, 0.05, 0.1, 0.2, 0.3],
             label_counts=[5, 10, 20, 30], repeats=10)
    full = time.perf_counter() - t0

    print(f"python {platform.python_version()}, numpy {np.__version__}, "
          f"{platform.platform()} ({platform.machine()}), os.cpu_count() {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"tasks {D}, models {len(pool.models)}, reference inputs {len(X)}")
    print(f"strict evaluate, alpha 0:                 {ours:8.2f} s")
    print(f"refit a Router per held-out task (all {D}): {baseline:8.2f} s")
    print(f"outputs identical: {compared} per-task values compared (choices of s1, s2, s3 and "
          "stack, S1-S3, p, u, BMA)")
    print(f"speed-up over the refit loop:             {baseline / ours:8.1f}x  (target >= 10x)")
    print(f"full sweep (6 alphas + 4 label counts, 10 repeats, bootstrap): {full:8.2f} s "
          "(target < 300 s)")
    print("reproduce: python bench/bench_evaluate.py "
          + " ".join(shlex.quote(a) for a in sys.argv[1:]))


if __name__ == "__main__":
    main()
