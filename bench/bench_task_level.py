"""What the task-level S1 (router/task_level.py) costs the fit and recommend, at leaderboard
scale, against the same work without it, measured in the same run.

Synthetic pool: --prompts unit vectors (dim 384) in --tasks task clusters, --models models
with Bernoulli labels (skill per model and task), embeddings given (as when cached); a new
task of --new prompts. Timed, median of --repeats, in one process:

1. ``Router(task_k=200).fit`` against ``Router(task_k=0).fit`` (everything else the same:
   the kNN, the leave-one-task-out calibration; the ratio is what the task-level S1 adds);
2. ``recommend(embeddings=Q)`` with each fitted router (the task-level S1 of the new docs is
   one search of 200 neighbours and the kernel estimates);
3. the kernel estimates themselves (``kernel_estimates``: a sparse (rows x H, n) weight
   matrix times Y) against a dense numpy implementation of the same sums (gather the
   neighbours' labels (b, K, M), one batched (H, K) @ (K, M) product per row), checked equal.

    python bench/bench_task_level.py                       # 10,000 prompts x 1,000 models
    python bench/bench_task_level.py --prompts 2000 --models 100 --repeats 1   # quick look
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lm_router_plugin.router.neighbors import topk_cosine
from lm_router_plugin.router.router import Router
from lm_router_plugin.router.task_level import BANDWIDTHS, kernel_estimates, kernel_weights


def make_pool(prompts: int, models: int, tasks: int, seed: int):
    """(table, X (prompts, 384) in build_pool order, Q (new task's embeddings))."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(tasks + 1, 384))
    task_of = np.repeat(np.arange(tasks), prompts // tasks)
    X = centres[task_of] + 1.5 * rng.normal(size=(len(task_of), 384))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    skill = rng.uniform(0.2, 0.9, size=(tasks, models))
    Y = (rng.random((len(task_of), models)) < skill[task_of]).astype(np.int8)
    names = [f"task{t:03d}" for t in range(tasks)]
    ids = [f"{i:06d}" for i in range(len(task_of))]
    table = pd.DataFrame({
        "task": np.repeat([names[t] for t in task_of], models),
        "instance_id": np.repeat(ids, models),
        "model": np.tile([f"m{m:04d}" for m in range(models)], len(task_of)),
        "correct": Y.ravel()})
    Q = centres[tasks] + 1.5 * rng.normal(size=(500, 384))
    return table, X, (Q / np.linalg.norm(Q, axis=1, keepdims=True)).astype(np.float32)


def dense_estimates(idx, sim, Y, bandwidths, block=256):
    """The same (H, r, M) sums by gathering the labels (the straightforward numpy way)."""
    H, r, M = len(bandwidths), len(idx), Y.shape[1]
    out = np.empty((H, r, M))
    for r0 in range(0, r, block):
        labels = Y[idx[r0:r0 + block]]  # (b, K, M)
        w = np.stack([kernel_weights(sim[r0:r0 + block], h) for h in bandwidths], axis=1)
        out[:, r0:r0 + len(labels)] = (np.matmul(w, labels)
                                       / w.sum(2, keepdims=True)).transpose(1, 0, 2)
    return out


def timed(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=10_000)
    ap.add_argument("--models", type=int, default=1_000)
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchinfo import print_header

    print_header()
    table, X, Q = make_pool(args.prompts, args.models, args.tasks, args.seed)
    print(f"{args.prompts} prompts x {args.models} models, {args.tasks} tasks; new task "
          f"{len(Q)} prompts; median of {args.repeats}")
    fits = {}
    for task_k in (0, 200):
        fits[task_k] = timed(lambda: Router(task_k=task_k).fit(table, embeddings=X),
                             args.repeats)
    base, new = fits[0][0], fits[200][0]
    print(f"fit: task_k 0 {base:.2f} s, task_k 200 {new:.2f} s -> x{new / base:.2f}")
    recs = {k: timed(lambda: fits[k][1].recommend(embeddings=Q), args.repeats)[0]
            for k in (0, 200)}
    print(f"recommend: task_k 0 {recs[0]:.3f} s, task_k 200 {recs[200]:.3f} s -> "
          f"x{recs[200] / recs[0]:.2f}")
    task_of = np.repeat(np.arange(args.tasks), args.prompts // args.tasks)
    rows = slice(0, min(2048, len(X)))
    idx, sim = topk_cosine(X[rows], X, 200, query_groups=task_of[rows], ref_groups=task_of)
    Y = table["correct"].to_numpy(float).reshape(len(X), args.models)
    sparse_t, a = timed(lambda: kernel_estimates(idx, sim, Y, BANDWIDTHS), args.repeats)
    dense_t, b = timed(lambda: dense_estimates(idx, sim, Y, BANDWIDTHS), args.repeats)
    assert np.allclose(a, b), "the two implementations disagree"
    print(f"kernel estimates, {len(idx)} rows x 200 neighbours x {len(BANDWIDTHS)} bandwidths: "
          f"sparse {sparse_t:.2f} s, dense gather + matmul {dense_t:.2f} s -> "
          f"x{dense_t / sparse_t:.2f} faster (same sums)")


if __name__ == "__main__":
    main()
