"""Can the router aim labels where they decide something? Strict leave-one-task-out: for
each held-out task, the best model on average (BMA, from the other tasks) and the challenger
of highest S1 (from a predictor fitted without the task); items ranked by their predicted
disagreement g_b (1 - g_c) + g_c (1 - g_b). Prints, per task set, how often the two models
really differ on the top 20% of items by that rank against all items: the headroom of a
planned label design (labels on items where the pair agrees tell nothing about it). The
planner this measured is retired (plan-labels now draws a stratified random sample); the
script needs only the evaluation's leave-one-task-out state and is kept for the figure
docs/results.md cites.

    python bench/label_targeting.py --store STORE [--tasks-by src --tasks-file F] [--embedder E]
"""

from __future__ import annotations

import argparse

import numpy as np

from lm_router_plugin import Store
from lm_router_plugin.errors import LMRouterError
from lm_router_plugin.evaluation.protocol import _HeldOut, read_side_table, regroup_tasks
from lm_router_plugin.router.pool import build_pool
from lm_router_plugin.router.router import Router
from lm_router_plugin.router.scores import quiet_nanmean


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--tasks-by", default="task")
    parser.add_argument("--tasks-file")
    parser.add_argument("--embedder")
    parser.add_argument("--top", type=float, default=0.2, help="share of items kept")
    args = parser.parse_args()
    store = Store(args.store)
    side = read_side_table(args.tasks_file) if args.tasks_file else None
    table = regroup_tasks(store.read_table(), args.tasks_by, side)
    pool = build_pool(table)
    router = Router(embedder=args.embedder)
    X, embedder_id = router.reference_embeddings(pool, store, None)
    D = len(pool.task_names)
    ev = _HeldOut(router, X, pool.Y, pool.task_of, D)
    acc = np.array([quiet_nanmean(pool.Y[rows]) for rows in ev.rows_of])  # (D, M)
    share_all, share_top = [], []
    for d, rows in enumerate(ev.rows_of):
        y, g = pool.Y[rows], ev.g_held[rows]
        others = np.delete(acc, d, axis=0)
        known = ~np.isnan(acc[d])
        b = int(np.argmax(np.where(known, np.nanmean(others, 0), -np.inf)))
        s1 = np.where(known, g.mean(0), -np.inf)
        s1[b] = -np.inf
        c = int(np.argmax(s1))
        both = ~np.isnan(y[:, b]) & ~np.isnan(y[:, c])
        differ = (y[both, b] != y[both, c]).astype(float)
        predicted = (g[both, b] * (1 - g[both, c]) + g[both, c] * (1 - g[both, b]))
        top = np.argsort(-predicted, kind="stable")[:max(1, int(args.top * both.sum()))]
        share_all.append(differ.mean())
        share_top.append(differ[top].mean())
    print(f"{D} tasks, {len(pool.models)} models, embedder {embedder_id}: the BMA and the S1 "
          f"challenger differ on {np.mean(share_all):.3f} of all items, on "
          f"{np.mean(share_top):.3f} of the top {args.top:.0%} by predicted disagreement "
          f"(ratio {np.mean(share_top) / np.mean(share_all):.2f}; means over tasks)")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except LMRouterError as exc:  # one line naming what to fix, no traceback
        raise SystemExit(f"label_targeting.py: error: {exc}") from None
