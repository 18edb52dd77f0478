"""Two ways to change the zero-label switch's weights, measured by its own inner
leave-one-task-out on the reference tasks (issue 19): do they help?

The stacked switch (router/stacking.py) predicts each model's gain over BMA as a ridge
regression on three features (S1, mean reference accuracy, S3; differences to BMA), fitted
over every (reference task, model) cell. Both variants keep its features and change only how
the gains are turned into a choice; every reference task is predicted from the others
(the weights of its row fitted without it, as fit_switch does), and the choice is the argmax
when its predicted gain is above 0 (tau = 0, so no threshold choice adds noise):

  ridge      the shipped weights (the baseline)
  offset k0  a per-model bias: each model's mean residual (realised minus predicted gain) over
             the other reference tasks, shrunk as sum / (n + k0), added to its prediction
  direction  the weight direction (a grid of 312 on the sphere; the scale changes neither the
             argmax nor the sign) whose argmax decisions gained most on the other reference
             tasks, chosen per task (nested): weights fitted for the decision, not the cells

Printed per set: the split-half correlation over the models of their mean residuals (is the
bias a property of the model?) and the mean realised gain over BMA in accuracy points of
each. This is the inner estimate the switch is tuned by (every task of the set is a reference
task here), not the strict evaluation; a variant that loses here is not worth the strict run.

    . .venv/bin/activate; export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
    for s in routerdc routerdc_notop cat14 src91 src91_small src91_notop; do
      python bench/stack_weight_variants.py --set $s --routerdc-store S1 --mmlu-store S2
    done
(stores made as in bench/routerdc_results.sh and bench/mmlu_pro_results.sh)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack_task_features import MODELS, SETS, SIDE  # noqa: E402

from lm_router_plugin import Store  # noqa: E402
from lm_router_plugin.evaluation.protocol import read_side_table, regroup_tasks  # noqa: E402
from lm_router_plugin.router import stacking  # noqa: E402
from lm_router_plugin.router.router import Router, model_mask  # noqa: E402
from lm_router_plugin.router.scores import quiet_nanmean  # noqa: E402
from lm_router_plugin.store.ingest import load_models_file  # noqa: E402

OFFSET_K0 = (20.0, 5.0)


def inner_rows(cal, allowed, sigma):
    """(features (R, M, 3), realised gains (R, M), BMA (R,), valid (R, M), predicted gains
    (R, M)): each reference task with the ridge weights fitted without it."""
    h = stacking.choose_task_bandwidth(cal, allowed)
    F, T, B, _ = stacking._reference_rows(cal, allowed, sigma, 0, None, None, 0, h)
    valid = ~np.isnan(T) & allowed[None] & np.isfinite(F).all(-1)
    Fv, Tv = np.where(valid[..., None], F, 0.0), np.where(valid, T, 0.0)
    xtx, xty = np.einsum("rmf,rmg->rfg", Fv, Fv), np.einsum("rmf,rm->rf", Fv, Tv)
    n = valid.sum(1)
    betas = np.array([stacking._ridge(xtx.sum(0) - xtx[j], xty.sum(0) - xty[j],
                                      int(n.sum() - n[j])) for j in range(len(T))])
    return F, T, B, valid, np.einsum("rmf,rf->rm", F, betas)


def realised(gain: np.ndarray, T: np.ndarray) -> np.ndarray:
    """(R,) realised gain of the argmax of ``gain`` (R, M; -inf: not allowed) where its
    predicted gain is above 0, else 0 (BMA)."""
    best = gain.argmax(1)
    rows = np.arange(len(T))
    return np.where(gain[rows, best] > 0, np.nan_to_num(T[rows, best]), 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", required=True, choices=SETS)
    ap.add_argument("--routerdc-store", required=True)
    ap.add_argument("--mmlu-store", required=True)
    ap.add_argument("--embedder", default="minilm")
    args = ap.parse_args()
    store = Store(args.routerdc_store if args.set.startswith("routerdc") else args.mmlu_store)
    table = store.read_table(required=True)
    if args.set.startswith("src91"):
        table = regroup_tasks(table, "src", read_side_table(SIDE))
    router = Router(embedder=args.embedder).fit(table, store=store)
    cal, models = router.calibration_, router.models_
    allowed = np.ones(len(models), bool)
    if args.set.endswith("_small"):
        allowed = model_mask(models, None, 13_000_000_000, load_models_file(MODELS))
    if args.set.endswith("_notop"):  # as bench/six_sets.sh: without the best on average
        allowed[np.nanargmax(np.nanmean(cal.accuracy, 0))] = False
    F, T, B, valid, prior = inner_rows(cal, allowed, router.sigma)
    R = len(T)
    out = {"set": args.set, "n_tasks": R,
           "ridge": realised(np.where(valid, prior, -np.inf), T)}
    residual = np.where(valid, T - prior, np.nan)
    residual[np.arange(R), B] = np.nan  # BMA's own cell: 0 by construction
    # is the bias a property of the model? its mean residual on random halves of the tasks
    rng = np.random.default_rng(0)
    corr = []
    for _ in range(500):
        half = rng.permutation(R) < R // 2
        m1, m2 = quiet_nanmean(residual[half]), quiet_nanmean(residual[~half])
        ok = np.isfinite(m1) & np.isfinite(m2)
        corr.append(np.corrcoef(m1[ok], m2[ok])[0, 1])
    out["bias split-half correlation"] = round(float(np.mean(corr)), 2)
    for k0 in OFFSET_K0:
        gain = np.empty_like(prior)
        for j in range(R):
            others = np.delete(residual, j, 0)
            offset = np.nansum(others, 0) / (np.isfinite(others).sum(0) + k0)
            gain[j] = np.where(valid[j], prior[j] + offset, -np.inf)
        out[f"offset k0={k0:g}"] = realised(gain, T)
    a = np.linspace(-np.pi, np.pi, 25)[:-1]
    b = np.linspace(-np.pi / 2, np.pi / 2, 13)
    dirs = np.stack([np.outer(np.cos(a), np.cos(b)).ravel(),
                     np.outer(np.sin(a), np.cos(b)).ravel(),
                     np.tile(np.sin(b), len(a))], 1)  # (312, 3)
    per_dir = np.array([realised(np.where(valid, F @ w, -np.inf), T) for w in dirs])
    out["direction"] = np.array([per_dir[np.delete(per_dir, j, 1).mean(1).argmax(), j]
                                 for j in range(R)])
    print(json.dumps({k: (round(100 * float(np.mean(v)), 2) if isinstance(v, np.ndarray)
                          else v) for k, v in out.items()}))


if __name__ == "__main__":
    main()
