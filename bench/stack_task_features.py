"""Task-level neighbourhood features for the stacked switch (issue 19, item 1): do they help?

The stacked switch (router/stacking.py) predicts each model's gain over BMA from three
differences to BMA: S1 (the mean of the kNN predictor's g, k = 5), the mean reference accuracy
A, and S3. Two task-level estimates with a neighbourhood chosen by an inner leave-one-task-out
(bench/kernel_s1.py: the 200 most similar reference inputs, kernel exp((sim - 1) / h), h
from BANDWIDTHS chosen for the argmax decision on the reference tasks, without the held-out
task) are tried in their place, strict leave-one-task-out, zero labels:

  s1k      S1 replaced by the kernel S1 (the neighbours' correctness, kernel-weighted)
  s1k_add  the kernel S1 added as a fourth feature
  w        A replaced by W: the reference tasks' accuracies weighted by where the task's
           nearest reference inputs fall (the kernel S1 of each row's own-task accuracies)
  select   per fit, "stack" or "s1k", whichever has the higher expected gain (the switch's
           own leave-one-task-out estimate of its gain over BMA on the reference tasks)

Every variant refits the switch exactly as fit_switch does (same inner LOTO of the weights
and threshold), only the feature columns differ; the baseline column "stack" is the switch
on the kNN's S1 (``--task-k 0``, the default here: the rule these variants were measured
against). "s1k" is the rule shipped since (``Router(task_k=200)``; it reproduces evaluate's
stack row). Printed per set: each row's mean accuracy and the paired difference to "stack" with a
90% bootstrap interval over tasks (seeded).

    . .venv/bin/activate; export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
    python bench/stack_task_features.py --set routerdc --routerdc-store S1 --mmlu-store S2
    (sets: routerdc, routerdc_notop, cat14, src91, src91_small, src91_notop; stores made as in
    bench/routerdc_results.sh and bench/mmlu_pro_results.sh, MiniLM embeddings cached there)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lm_router_plugin import Store
from lm_router_plugin.evaluation.protocol import _HeldOut, read_side_table, regroup_tasks
from lm_router_plugin.router import stacking
from lm_router_plugin.router.calibration import best_on_average
from lm_router_plugin.router.pool import build_pool
from lm_router_plugin.router.router import Router, model_mask
from lm_router_plugin.router.scores import argmax_with_ties, quiet_nanmean
from kernel_s1 import choose_bandwidth, leave_out_kernel
from lm_router_plugin.store.ingest import load_models_file

ROOT = Path(__file__).resolve().parents[1]
SIDE = ROOT.parent / "shared/data/mmlu_pro/instances.tsv.gz"
MODELS = ROOT / "bench/mmlu_pro_models.yaml"


def fit_with(cal, allowed, sigma, seed, column: int | None, values: np.ndarray | None):
    """fit_switch with feature ``column`` of the reference tasks replaced by ``values`` (D, M)
    (column None: ``values`` appended as a fourth feature; values None: the shipped rule)."""
    if values is None:
        return stacking.fit_switch(cal, allowed, sigma=sigma, seed=seed)
    original = stacking._reference_rows

    def rows(cal_, allowed_, sigma_, n_labels, Y, rows_of, seed_, *rest):
        F, T, B, G = original(cal_, allowed_, sigma_, n_labels, Y, rows_of, seed_, *rest)
        Z = np.flatnonzero(cal_.included)
        v = values[Z] - values[Z][np.arange(len(Z)), B][:, None]
        if column is None:
            return np.concatenate([F, v[..., None]], -1), T, B, G
        F = F.copy()
        F[..., column] = v
        return F, T, B, G

    features = stacking.FEATURES
    stacking._reference_rows = rows
    if column is None:
        stacking.FEATURES = features + ("extra",)
    try:
        return stacking.fit_switch(cal, allowed, sigma=sigma, seed=seed)
    finally:
        stacking._reference_rows, stacking.FEATURES = original, features


SETS = ["routerdc", "routerdc_notop", "cat14", "src91", "src91_small", "src91_notop"]


def add_set_arguments(ap: argparse.ArgumentParser) -> None:
    """--set, --routerdc-store, --mmlu-store, --embedder, --task-k (shared with
    stack_label_profile.py)."""
    ap.add_argument("--set", required=True, choices=SETS)
    ap.add_argument("--task-k", type=int, default=0,
                    help="the router's task_k (0: the switch on the kNN's S1)")
    ap.add_argument("--routerdc-store", required=True)
    ap.add_argument("--mmlu-store", required=True)
    ap.add_argument("--embedder", default="minilm")


def load_set(args: argparse.Namespace):
    """(router, pool, X (n, dim), per-task accuracies (D, M), candidates (M,) bool) of one of
    the six shared sets, as bench/six_sets.sh builds them."""
    store = Store(args.routerdc_store if args.set.startswith("routerdc") else args.mmlu_store)
    table = store.read_table()
    if args.set.startswith("src91"):
        table = regroup_tasks(table, "src", read_side_table(SIDE))
    pool = build_pool(table)
    router = Router(embedder=args.embedder, task_k=args.task_k)
    X, _ = router.reference_embeddings(pool, store, None)
    acc_all = np.array([quiet_nanmean(pool.Y[pool.task_of == d])
                        for d in range(len(pool.task_names))])
    allowed = np.ones(len(pool.models), bool)
    if args.set.endswith("_small"):
        allowed = model_mask(pool.models, None, 13_000_000_000, load_models_file(MODELS))
    if args.set.endswith("_notop"):  # as bench/six_sets.sh: without the best on average
        allowed[np.nanargmax(np.nanmean(acc_all, 0))] = False
    return router, pool, X, acc_all, allowed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_set_arguments(ap)
    args = ap.parse_args()
    if args.task_k != 0:
        ap.error("--task-k: this bench compares variants with the switch on the kNN's S1 (0)")
    router, pool, X, acc_all, allowed0 = load_set(args)
    D, Y, task_of = len(pool.task_names), pool.Y, pool.task_of
    ev = _HeldOut(router, X, Y, task_of, D)
    table_s1 = leave_out_kernel(X, Y, task_of, n_tasks=D)
    kernel_w = leave_out_kernel(X, acc_all[task_of], task_of, n_tasks=D)
    names = ("stack", "s1k", "s1k_add", "w", "select", "bma", "oracle")
    out = {name: [] for name in names}
    for d in range(D):
        rows = ev.rows_of[d]
        acc = acc_all[d]
        allowed = allowed0 & ~np.isnan(acc)
        cal = ev.calibration_without(d)
        feats, bma = stacking.task_features(cal, ev.g_held[rows], ev.kappa_sim(rows), allowed,
                                            router.t, router.sigma)
        picks = {"bma": best_on_average(cal, allowed),
                 "oracle": argmax_with_ties(np.where(allowed, acc, -np.inf),
                                            cal.mean_accuracy)}
        gains = {}
        for name, table_k, column in (("stack", None, 0), ("s1k", table_s1, 0),
                                      ("s1k_add", table_s1, None), ("w", kernel_w, 1)):
            f, values = feats, None
            if table_k is not None:
                h, _ = choose_bandwidth(table_k, allowed, held_out=d)
                j = table_k.bandwidths.index(h)
                values = table_k.s1k[j, :, d]  # reference tasks, fit without d
                own = table_k.s1k[j, d, D]  # the held-out task, references outside d
                col = own - own[bma]
                if column is None:
                    f = np.concatenate([feats, col[:, None]], 1)
                else:
                    f = feats.copy()
                    f[:, column] = col
            switch = fit_with(cal, allowed, router.sigma, router.seed, column, values)
            gains[name] = switch.expected_gain
            features = stacking.FEATURES
            stacking.FEATURES = features + ("extra",) * (len(switch.beta) - len(features))
            try:  # Switch.predict reads the feature count from the module
                picks[name] = switch.decide(f, allowed, bma, cal.mean_accuracy)[0]
            finally:
                stacking.FEATURES = features
        picks["select"] = picks["s1k"] if gains["s1k"] > gains["stack"] else picks["stack"]
        for name in names:
            out[name].append(float(acc[picks[name]]))
    rng = np.random.default_rng(0)
    boot = rng.integers(0, D, (2000, D))
    summary = {"set": args.set, "n_tasks": D, "embedder": args.embedder}
    base = np.array(out["stack"])
    for name in names:
        summary[name] = round(float(np.mean(out[name])), 4)
        if name in ("s1k", "s1k_add", "w", "select"):
            diff = np.array(out[name]) - base
            lo, hi = np.percentile(diff[boot].mean(1), [5, 95])
            summary[f"{name}-stack"] = [round(100 * float(diff.mean()), 2),
                                        round(100 * float(lo), 2), round(100 * float(hi), 2)]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
