"""Calibration: what a fitted router knows about its reference tasks (METHOD.md §3.2.1).

For each reference task z, its inputs are predicted by a predictor fitted without z; that
gives the calibration pair (u(z), p(z, m)) per model, and the task's true accuracies give the
best model on average (BMA). ``Router.fit`` and the strict leave-one-task-out evaluation
both build a :class:`Calibration` with :func:`calibrate`; scoring reads it through
:func:`smoothed_p` and :func:`best_on_average`, the only places where the NaN-p rule and
the BMA rule live.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scores import (
    argmax_with_ties,
    kernel_smoothed_p,
    quiet_nanmean,
    task_distance,
    thresholded_accuracy,
)

UNINFORMATIVE_P = 0.5  # p of a model with no calibration pair: a coin flip


@dataclass
class Calibration:
    """Per reference task z (D,) and model m (M,), from leave-task-out predictions.

    u (D,): task distance u(z). p (D, M): accuracy of 1[g > t] on z (nan: no labels).
    accuracy (D, M): true accuracy (nan: no labels). included (D,): tasks of the fit (False
    for a task held out in evaluation; its entries are ignored). mean_accuracy (M,): mean
    of the included tasks' accuracies (0 for a model without any). s1 (D, M): S1 of each
    task from its leave-task-out g (what the router would have predicted for it); s2 (D, M)
    likewise the share of inputs with g > t; n (D,) inputs per task.
    residual_cov (M, M): covariance across reference inputs of y - g (leave-task-out), the
    per-input noise of a label around its prediction (pairwise over inputs with both labels).
    task_s1 (H, D, M): each task's task-level kernel S1 per bandwidth of task_bandwidths (H,)
    (task_level.TaskKernel, references outside the task and outside a held-out task; None:
    the router's task_k is 0), the stacked switch's S1 feature.
    """

    u: np.ndarray
    p: np.ndarray
    accuracy: np.ndarray
    included: np.ndarray
    mean_accuracy: np.ndarray
    s1: np.ndarray | None = None
    residual_cov: np.ndarray | None = None
    s2: np.ndarray | None = None
    n: np.ndarray | None = None
    task_s1: np.ndarray | None = None
    task_bandwidths: np.ndarray | None = None

    def u_range(self) -> tuple[float, float]:
        u = self.u[self.included]
        return float(u.min()), float(u.max())


def calibrate(task_of: np.ndarray, Y: np.ndarray, g: np.ndarray, kappa_sim: np.ndarray,
              t: float, n_tasks: int, held_out: int | None = None) -> Calibration:
    """Calibration pairs and accuracies from leave-task-out predictions.

    Args:
        task_of: (n,) task index of each reference row.
        Y: (n, M) correctness in {0, 1, nan}.
        g: (n, M) each row's predicted correctness from a fit without its own task (and
            without ``held_out``).
        kappa_sim: (n, kappa) similarities of each row to its kappa nearest references
            outside its own task (and ``held_out``).
        t: threshold on g.
        n_tasks: D.
        held_out: a task left out of this fit (its rows are ignored), or None.
    """
    M = Y.shape[1]
    u = np.full(n_tasks, np.nan)
    p = np.full((n_tasks, M), np.nan)
    accuracy = np.full((n_tasks, M), np.nan)
    s1 = np.full((n_tasks, M), np.nan)
    s2 = np.full((n_tasks, M), np.nan)
    n = np.zeros(n_tasks, dtype=np.int64)
    included = np.ones(n_tasks, dtype=bool)
    if held_out is not None:
        included[held_out] = False
    order = np.argsort(task_of, kind="stable")
    bounds = np.searchsorted(task_of[order], np.arange(n_tasks + 1))
    for d in np.flatnonzero(included):
        rows = order[bounds[d]:bounds[d + 1]]
        if len(rows) == 0:
            included[d] = False
            continue
        u[d] = task_distance(kappa_sim[rows])
        p[d] = thresholded_accuracy(g[rows], Y[rows], t)
        accuracy[d] = quiet_nanmean(Y[rows])
        s1[d] = np.mean(g[rows], axis=0)
        s2[d] = np.mean(g[rows] > t, axis=0)
        n[d] = len(rows)
    mean_accuracy = np.nan_to_num(quiet_nanmean(accuracy[included]))
    in_fit = included[task_of]
    return Calibration(u=u, p=p, accuracy=accuracy, included=included,
                       mean_accuracy=mean_accuracy, s1=s1,
                       residual_cov=pairwise_cov(Y[in_fit] - g[in_fit]), s2=s2, n=n)


def pairwise_cov(R: np.ndarray) -> np.ndarray:
    """(M, M) covariance of the columns of R (n, M) over the rows where both are labelled
    (nan elsewhere); 0 for a pair that never shares a row."""
    has = ~np.isnan(R)
    Z = np.where(has, R, 0.0)
    n = has.T.astype(float) @ has.astype(float)
    sums = Z.T @ has.astype(float)  # sums[a, b] = sum of column a over rows where b labelled
    prod = Z.T @ Z
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = (prod - sums * sums.T / n) / (n - 1)
    return np.where(n > 1, cov, 0.0)


def smoothed_p(cal: Calibration, u: float, sigma: float) -> np.ndarray:
    """(M,) kernel-smoothed p(d', m) at distance u; a model without pairs gets 0.5."""
    p = kernel_smoothed_p(u, np.nan_to_num(cal.u), cal.p, sigma, exclude=~cal.included)
    return np.where(np.isnan(p), UNINFORMATIVE_P, p)


def measured_p(g: np.ndarray, Y: np.ndarray, t: float) -> np.ndarray:
    """(M,) the true p of a task (evaluation's "S3 with true p"), same NaN rule."""
    p = thresholded_accuracy(g, Y, t)
    return np.where(np.isnan(p), UNINFORMATIVE_P, p)


def best_on_average(cal: Calibration, allowed: np.ndarray) -> int:
    """The BMA among ``allowed`` (M,) bool: highest mean reference accuracy."""
    return argmax_with_ties(np.where(allowed, cal.mean_accuracy, -np.inf), cal.mean_accuracy)
