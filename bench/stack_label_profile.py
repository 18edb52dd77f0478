"""Labels that inform every candidate, at the task level: does profile smoothing help the
stacked switch with labels? (issue 19, item 2's idea without an item model)

With L labelled docs, the stacked switch compares each candidate's label accuracy with BMA's
on those docs (paired differences, precision-weighted into its zero-label prediction). Each
candidate's label accuracy is noisy on its own (10 docs), but the labels of all M candidates
together tell which reference tasks the new task resembles: fit non-negative weights w over
the reference tasks, summing to 1, so that the candidates' label accuracies L (M,) are best
matched by the weighted reference accuracies A' w (least squares over the models); the
smoothed label accuracy of every candidate is then (A' w)_m. Variant ``profile``: the switch
with the smoothed label accuracies in place of the raw ones, in the reference tasks' simulated
label draws (each from the other reference tasks' accuracies) and for the new task alike.

Strict leave-one-task-out, the evaluation's own label draws (same seeds as ``lm-router
evaluate --labels N``), scored on the unlabelled docs; prints each row's mean accuracy and the
paired difference to the switch with a 90% bootstrap interval over tasks. The switch is the
one of ``--task-k`` (default 0: on the kNN's S1, the rule measured in docs/results.md; 200:
the task-level S1 shipped since).

    . .venv/bin/activate; export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
    python bench/stack_label_profile.py --set routerdc --routerdc-store S1 --mmlu-store S2 \\
        --labels 10,20 --repeats 5
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy.optimize import nnls

from lm_router_plugin.evaluation.protocol import _HeldOut, _TaskScorer
from lm_router_plugin.router import stacking
from lm_router_plugin.router.deciders import StackedSwitch
from lm_router_plugin.router.scores import quiet_nanmean
from stack_task_features import add_set_arguments, load_set  # bench/, run as a script

SIMPLEX_WEIGHT = 10.0  # the row that pins sum(w) = 1 in the least squares


def smooth(lab: np.ndarray, A: np.ndarray) -> np.ndarray:
    """(M,) smoothed label accuracies: A' w with w >= 0, sum 1, fitted to ``lab`` (M,) over
    the models with a label; A (Z, M) reference accuracies (nan: filled by the model's mean)."""
    if len(A) == 0:
        return lab
    fill = np.nan_to_num(quiet_nanmean(A), nan=0.5)
    A = np.where(np.isnan(A), fill[None, :], A)
    ok = ~np.isnan(lab)
    if ok.sum() < 2:
        return lab
    design = np.vstack([A[:, ok].T, SIMPLEX_WEIGHT * np.ones(len(A))])
    target = np.concatenate([lab[ok], [SIMPLEX_WEIGHT]])
    w, _ = nnls(design, target)
    w = w / w.sum() if w.sum() > 0 else np.full(len(A), 1.0 / len(A))
    return np.where(ok, A.T @ w, np.nan)


def profile_rows(original):
    """_reference_rows with the label feature from smoothed label accuracies."""

    def rows(cal, allowed, sigma, n_labels, Y, rows_of, seed, *rest):
        F, T, B, G = original(cal, allowed, sigma, n_labels, Y, rows_of, seed, *rest)
        if n_labels <= 0:
            return F, T, B, G
        Z = np.flatnonzero(cal.included)
        F = F.copy()
        k = len(stacking.FEATURES)
        for i, z in enumerate(Z):  # the same draws as _reference_rows
            y = Y[rows_of[z]]
            labelled = ~np.isnan(y)
            y0 = np.where(labelled, y, 0.0)
            n = min(n_labels, len(y) - 1)
            rng = np.random.default_rng([seed, 7877, i, n_labels])
            others = cal.accuracy[np.delete(Z, i)]
            for r in range(stacking.LABEL_DRAWS):
                pick = np.zeros(len(y))
                pick[rng.choice(len(y), n, replace=False)] = 1.0
                lab_n = pick @ labelled
                lab = np.divide(pick @ y0, lab_n, out=np.full(len(lab_n), np.nan),
                                where=lab_n > 0)
                s = smooth(lab, others)
                row = i * stacking.LABEL_DRAWS + r
                F[row, :, k] = s - s[B[row]]
        return F, T, B, G

    return rows


class ProfileSwitch(StackedSwitch):
    """The stacked switch with smoothed label accuracies (module docstring)."""

    def decide(self, view):
        original_rows = stacking._reference_rows
        stacking._reference_rows = profile_rows(original_rows)
        try:
            lab = view.label_accuracy
            A = view.cal.accuracy[view.cal.included]
            view.__dict__["_smoothed"] = smooth(lab, A)
            cls = type(view)
            prop = cls.label_accuracy
            cls.label_accuracy = property(lambda v: v.__dict__.get("_smoothed", prop.fget(v)))
            try:
                return super().decide(view)
            finally:
                cls.label_accuracy = prop
        finally:
            stacking._reference_rows = original_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_set_arguments(ap)
    ap.add_argument("--labels", default="10,20")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    router, pool, X, acc_all, allowed0 = load_set(args)
    D, M, Y, task_of = len(pool.task_names), len(pool.models), pool.Y, pool.task_of
    ev = _HeldOut(router, X, Y, task_of, D)
    scorer = _TaskScorer(ev, allowed0, np.full(M, np.nan), pool.models, None, 0,
                         pool.instance_ids)
    summary = {"set": args.set, "n_tasks": D}
    boot = np.random.default_rng(0).integers(0, D, (2000, D))
    for N in [int(x) for x in args.labels.split(",")]:
        per = {"stack": np.zeros(D), "profile": np.zeros(D), "bma": np.zeros(D)}
        count = np.zeros(D)
        for rep in range(args.repeats):
            rng = np.random.default_rng([router.seed, rep, 10**9 + N])  # evaluate's draws
            for d in range(D):
                rows = ev.rows_of[d]
                n_lab = min(N, len(rows) - 1)
                if n_lab < 1:
                    continue
                lab = np.sort(rng.choice(rows, size=n_lab, replace=False))
                rest = np.setdiff1d(rows, lab)
                acc = quiet_nanmean(Y[rest])
                allowed = allowed0 & ~np.isnan(acc)
                view = scorer.view(d, rest, allowed, lab)
                per["stack"][d] += acc[StackedSwitch().decide(view).choice]
                view = scorer.view(d, rest, allowed, lab)
                per["profile"][d] += acc[ProfileSwitch().decide(view).choice]
                per["bma"][d] += acc[view.bma]
                count[d] += 1
        keep = count > 0
        mean = {k: v[keep] / count[keep] for k, v in per.items()}
        diff = mean["profile"] - mean["stack"]
        lo, hi = np.percentile(diff[boot[:, :keep.sum()] % keep.sum()].mean(1), [5, 95])
        summary[f"@{N}"] = {k: round(float(v.mean()), 4) for k, v in mean.items()}
        summary[f"@{N}"]["profile-stack"] = [round(100 * float(diff.mean()), 2),
                                             round(100 * float(lo), 2), round(100 * float(hi), 2)]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
