"""Which predicts an unseen task's IRT doc parameters better from the embeddings: the ridge
regression irt.py uses, or a kNN average of the neighbours' fitted parameters? On one real
pool (MMLU-Pro or RouterDC, MiniLM embeddings from the store's cache), the IRT model is
fitted once (fit_reference: rank and ridge strength by its inner leave-one-task-out); then
each task's docs get parameters from the other tasks only (ridge refitted without it; kNN
over the other tasks' docs), and both are scored leave-one-task-out by the squared error of
the predicted task accuracies (the quantity the decision ranks) and by the mean log-loss of
the docs' outcomes. Both see the abilities of the whole-pool fit (the same for both).

    python bench/irt_doc_params.py STORE [--tasks-by src --tasks-file F] [--k 5,20,50]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load(store_dir: str, tasks_by: str, tasks_file: str | None, embedder: str):
    from lm_router_plugin import Store
    from lm_router_plugin.evaluation.protocol import read_side_table, regroup_tasks
    from lm_router_plugin.router.pool import build_pool
    from lm_router_plugin.router.router import Router

    store = Store(store_dir)
    table = store.read_table()
    table = regroup_tasks(table, tasks_by, read_side_table(tasks_file) if tasks_file else None)
    pool = build_pool(table)
    X, _ = Router(embedder=embedder).reference_embeddings(pool, store, None)
    return X, pool.Y, pool.task_of


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--tasks-by", default="task")
    parser.add_argument("--tasks-file")
    parser.add_argument("--embedder", default="minilm")
    parser.add_argument("--k", default="5,20,50")
    args = parser.parse_args()
    from scipy.special import expit

    from lm_router_plugin.router.irt import PI_8, _ridge_solve, fit_reference, task_rows
    from lm_router_plugin.router.neighbors import topk_cosine

    X, Y, task_of = load(args.store, args.tasks_by, args.tasks_file, args.embedder)
    t0 = time.time()
    ref = fit_reference(X, Y, task_of, seed=0)
    print(f"fit: {time.time() - t0:.0f}s, rank {ref.rank}, ridge alpha {ref.inner['alpha']}")
    rows = task_rows(task_of)
    T = ref.fit.doc_params()
    F = ref.F
    kappa = 1.0 / np.sqrt(1.0 + PI_8 * ref.doc_var())
    has = ~np.isnan(Y)

    def scores(pred: np.ndarray) -> tuple[float, float]:
        mu = ref.fit.c[None, :] + pred @ F.T
        p = np.clip(expit(mu * kappa), 1e-6, 1 - 1e-6)
        loss = -np.where(has, np.where(Y > 0.5, np.log(p), np.log(1 - p)), 0).sum() / has.sum()
        errs = []
        for r in rows:
            ok = has[r].any(0)
            acc = np.where(has[r], Y[r], 0).sum(0)[ok] / has[r].sum(0)[ok]
            errs.append(np.mean((p[r].mean(0)[ok] - acc) ** 2))
        return float(np.mean(errs)), float(loss)

    # ridge, leave-one-task-out (its strength as chosen by fit_reference)
    Z = ref.reg.features(X)
    xtx, xty = Z.T @ Z, Z.T @ T
    pred = np.empty_like(T)
    for r in rows:
        coef = _ridge_solve(xtx - Z[r].T @ Z[r], xty - Z[r].T @ T[r], ref.inner["alpha"])
        pred[r] = Z[r] @ coef
    mse, loss = scores(pred)
    print(f"ridge (alpha {ref.inner['alpha']:g}): task-accuracy RMSE {np.sqrt(mse):.4f}, "
          f"log-loss {loss:.4f}")
    ks = [int(k) for k in args.k.split(",")]
    t0 = time.time()
    idx, _ = topk_cosine(X, X, max(ks), query_groups=task_of, ref_groups=task_of)
    print(f"kNN search: {time.time() - t0:.0f}s")
    for k in ks:
        pred = T[idx[:, :k]].mean(1)
        mse, loss = scores(pred)
        print(f"kNN k={k}: task-accuracy RMSE {np.sqrt(mse):.4f}, log-loss {loss:.4f}")
    mean = np.empty_like(T)
    for r in rows:  # no embedding at all: the other tasks' mean parameters
        others = np.ones(len(T), bool)
        others[r] = False
        mean[r] = T[others].mean(0)
    mse, loss = scores(mean)
    print(f"mean of the other tasks (no embedding): task-accuracy RMSE {np.sqrt(mse):.4f}, "
          f"log-loss {loss:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
