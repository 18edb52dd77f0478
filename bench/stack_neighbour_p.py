"""Does a task-similarity p help the stacked switch? (issue 19: "any task-similarity feature")

S3 = S2 p + (1 - S2)(1 - p) needs p, the accuracy of the thresholded predictor on the new
task. The paper smooths the reference tasks' p over the task distance u (tasks at a similar
distance, wherever they are). Here p comes from the reference tasks the new task's docs
actually fall near: with pi_z the kernel-weighted share of the docs' 200 nearest reference
inputs that lie in task z (router/task_level.py's TaskKernel over one-hot task labels),

    p_nw(m) = sum_z pi_z p(z, m) / sum_z pi_z   (over tasks where m has a p)

at the bandwidth whose p_nw had the smallest mean absolute error against the true p on the
reference tasks (each from the others: inner leave-one-task-out). Variant ``nw``: the
stacked switch with S3 from p_nw, for the reference tasks (each from the other reference
tasks, never the held-out one) and for the held-out task alike; everything else as shipped.
Strict leave-one-task-out, zero labels; prints the mean accuracy of ``stack`` (shipped) and
``nw``, their paired difference with a 90% bootstrap interval over tasks, and both p's MAE.

    python bench/stack_neighbour_p.py --set routerdc --routerdc-store S1 --mmlu-store S2 \\
        --task-k 200
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from lm_router_plugin.evaluation.protocol import _HeldOut, _TaskScorer
from lm_router_plugin.router import stacking
from lm_router_plugin.router.calibration import smoothed_p
from lm_router_plugin.router.deciders import StackedSwitch
from lm_router_plugin.router.scores import s3, task_distance, thresholded_accuracy
from lm_router_plugin.router.task_level import TaskKernel

from stack_task_features import add_set_arguments, load_set  # bench/, run as a script


def weighted_p(share: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(..., M) sum_z share_z p_zm / sum_z share_z over tasks with a p for m (0.5: none);
    share (..., D), p (D, M) with nan."""
    has = ~np.isnan(p)
    num = np.nan_to_num(share) @ np.where(has, p, 0.0)
    den = np.nan_to_num(share) @ has
    return np.where(den > 0, num / np.maximum(den, 1e-300), 0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_set_arguments(ap)
    args = ap.parse_args()
    router, pool, X, acc_all, allowed0 = load_set(args)
    D, Y, task_of = len(pool.task_names), pool.Y, pool.task_of
    ev = _HeldOut(router, X, Y, task_of, D)
    onehot = np.eye(D)[task_of]
    shares = TaskKernel(X, onehot, task_of, k=200, n_tasks=D)  # (H, D, D) per exclusion
    scorer = _TaskScorer(ev, allowed0, np.full(len(pool.models), np.nan), pool.models, None, 0)
    out = {"stack": [], "nw": [], "mae_u": [], "mae_nw": []}
    original_rows = stacking._reference_rows
    for d in range(D):
        rows = ev.rows_of[d]
        acc = acc_all[d]
        allowed = allowed0 & ~np.isnan(acc)
        cal = ev.calibration_without(d)
        view = scorer.view(d, rows, allowed)
        out["stack"].append(float(acc[StackedSwitch().decide(view).choice]))
        # reference tasks' shares without d; the bandwidth of smallest inner MAE of p
        pi_ref = shares.task_s1(d)  # (H, D, D): row z's shares over the tasks (z, d: 0)
        Z = np.flatnonzero(cal.included)
        p_ref = np.where(cal.included[:, None], cal.p, np.nan)
        maes = [np.nanmean(np.abs(weighted_p(pi_ref[j][Z], p_ref) - cal.p[Z]))
                for j in range(len(shares.bandwidths))]
        j = int(np.nanargmin(maes))
        p_nw_ref = np.full(cal.p.shape, 0.5)
        p_nw_ref[Z] = weighted_p(pi_ref[j][Z], p_ref)
        pi_new = shares.rows_s1(rows)[j]  # (D,) the held-out task's shares
        p_new = weighted_p(pi_new, p_ref)
        true_p = thresholded_accuracy(ev.g_held[rows], Y[rows], router.t)
        out["mae_u"].append(float(np.nanmean(np.abs(
            smoothed_p(cal, task_distance(view.kappa_sim), router.sigma) - true_p))))
        out["mae_nw"].append(float(np.nanmean(np.abs(p_new - true_p))))

        def rows_nw(cal_, allowed_, sigma_, n_labels, Y_, rows_of, seed_, *rest,
                    p_nw_ref=p_nw_ref):
            F, T, B, G = original_rows(cal_, allowed_, sigma_, n_labels, Y_, rows_of, seed_,
                                       *rest)
            Zs = np.flatnonzero(cal_.included)
            s3_nw = s3(cal_.s2[Zs], p_nw_ref[Zs])
            F = F.copy()
            F[..., 2] = s3_nw - s3_nw[np.arange(len(Zs)), B][:, None]
            return F, T, B, G

        stacking._reference_rows = rows_nw
        try:
            switch = stacking.fit_switch(cal, allowed, sigma=router.sigma, seed=router.seed)
        finally:
            stacking._reference_rows = original_rows
        task_s1 = view.task_s1(switch.task_h_index) if switch.task_h_index is not None \
            else None
        feats, bma = stacking.task_features(cal, view.g, view.kappa_sim, allowed, router.t,
                                            router.sigma, None, task_s1)
        s3_new = s3((view.g > router.t).mean(0), p_new)
        feats[:, 2] = s3_new - s3_new[bma]
        out["nw"].append(float(acc[switch.decide(feats, allowed, bma, cal.mean_accuracy)[0]]))
    rng = np.random.default_rng(0)
    boot = rng.integers(0, D, (2000, D))
    diff = np.array(out["nw"]) - np.array(out["stack"])
    lo, hi = np.percentile(diff[boot].mean(1), [5, 95])
    print(json.dumps({"set": args.set, "n_tasks": D,
                      "stack": round(float(np.mean(out["stack"])), 4),
                      "nw": round(float(np.mean(out["nw"])), 4),
                      "nw-stack": [round(100 * float(diff.mean()), 2), round(100 * lo, 2),
                                   round(100 * hi, 2)],
                      "p_mae_u": round(float(np.mean(out["mae_u"])), 4),
                      "p_mae_nw": round(float(np.mean(out["mae_nw"])), 4)}))


if __name__ == "__main__":
    main()
