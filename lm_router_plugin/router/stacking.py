"""The stacked switch: a zero-label (and few-label) decision learned on the reference tasks
(beyond the paper; issue "routing that beats BMA").

The paper keeps the highest-S3 model only when a binomial test says it beats the best model
on average (BMA). Here the rule itself is fitted, leave-one-task-out, on the reference
tasks: each reference task z is treated as a new task (its S1/S3 come from a predictor
fitted without it, its BMA from the other reference tasks), and a linear model learns how
much of a model's score lead over BMA turns into a real accuracy lead:

    predicted gain of m over BMA  =  beta . [S1_m - S1_b, A_m - A_b, S3_m - S3_b (, L_m - L_b)]

with A the mean reference accuracy. The model of highest predicted gain is chosen if its gain
exceeds tau, else BMA. S1 here is the task-level kernel S1 (task_level.TaskKernel: the mean
over the task's docs of the kernel-weighted correctness of their ``task_k`` nearest reference
inputs) at the bandwidth whose argmax choices were best on the reference tasks (an inner
leave-one-task-out, for the candidates at hand); a router with task_k = 0 uses the kNN
predictor's S1 (k = 5) instead.

With n labelled items of the new task, that prediction d0_m is the prior of a precision-
weighted update by the paired label difference L_m - L_b (accuracies on the same items):

    gain_m  =  d0_m + w_m (L_m - L_b - d0_m),    w_m = c s^2 / (c s^2 + v_m),
    v_m     =  disagree(m, b) (1/n + 1/(N - n))

s^2 is the spread of the true gains around d0 on the reference tasks (inner leave-one-task-
out), disagree(m, b) the share of reference items on which m and b differ (the variance of a
paired difference per item; a model close to BMA is compared precisely with few labels), and
N - n the unlabelled items the choice is scored on. The prior strength c (0 = ignore the
labels) and tau are chosen together by the inner leave-one-task-out, on label draws of the
same count simulated on every reference task. tau is chosen by an inner leave-one-task-out over the reference tasks
(the tau of highest realised gain; ties go to the larger, more conservative tau), so on a
reference set where switching does not pay the rule learns to stay with BMA, and where it
pays it learns to switch. Nothing here reads the task being decided: in the strict
evaluation ``cal`` is the calibration of a fit without it.

    >>> switch = fit_switch(cal, allowed, sigma=0.09)                   # zero labels
    >>> features, bma = task_features(cal, g, kappa_sim, allowed, t=0.5, sigma=0.09)
    >>> choice, best, gain, p = switch.decide(features, allowed, bma, cal.mean_accuracy)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .calibration import UNINFORMATIVE_P, Calibration, best_on_average, smoothed_p
from .scores import argmax_with_ties, normal_cdf, quiet_nanmean, s3, task_distance
from .task_level import inner_choice_accuracy, widest_best

#: switch thresholds on the predicted gain (accuracy units) the inner LOTO chooses from
TAUS = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, math.inf)
FEATURES = ("s1", "mean_accuracy", "s3")
LABEL_FEATURE = "labels"
#: multipliers c of the prior variance the inner LOTO chooses from with labels (0: the
#: labels are ignored, the zero-label rule; ties go to the smaller c)
PRIOR_SCALES = (0.0, 0.0625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0)
LABEL_DRAWS = 4  # simulated label sets per reference task
#: per-item variance of y_m - y_b assumed for a model never labelled beside BMA (the most a
#: difference of two 0/1 labels can have: its labels then count least)
UNKNOWN_DISAGREEMENT = 1.0
RIDGE = 1e-4



@dataclass
class Switch:
    """A fitted stacked switch.

    beta (3,) weights of the zero-label features; tau the switch threshold; n_labels the
    label count it was fitted for (0: labels unused); inner_gain (len(TAUS),) mean realised
    gain over the reference tasks per tau (inner LOTO); bias and sd of the realised minus
    predicted gain of the switched-to model over the reference tasks (selection-aware:
    measured at the argmax); n_tasks. With labels: prior_var = c s^2 (accuracy^2) and
    disagreement (M,), each model's share of reference items on which it and the new task's
    BMA differ. expected_gain: the rule's gain over BMA estimated by a leave-one-task-out
    around the choice of (c, tau) itself (accuracy units; what the rule, fitted for this
    many labels, realised on reference tasks it was not tuned on). task_h: the bandwidth of
    its kernel S1 feature, task_h_index its position in the calibration's task_bandwidths
    (None: the kNN predictor's S1)."""

    beta: np.ndarray
    tau: float
    n_labels: int
    inner_gain: np.ndarray
    bias: float
    sd: float
    n_tasks: int
    features: tuple[str, ...]
    prior_var: float = 0.0
    disagreement: np.ndarray | None = None
    expected_gain: float = math.nan
    task_h: float | None = None
    task_h_index: int | None = None

    def label_weights(self, n_rest: int | None) -> np.ndarray | None:
        """(M,) weight w_m of the paired label difference (None without labels); n_rest:
        the unlabelled items the choice is for (None: many)."""
        if self.n_labels <= 0 or self.prior_var <= 0 or self.disagreement is None:
            return None
        v = self.disagreement * (1.0 / self.n_labels + (1.0 / n_rest if n_rest else 0.0))
        return self.prior_var / (self.prior_var + v)

    def predict(self, features: np.ndarray, allowed: np.ndarray, n_rest: int | None = None
                ) -> np.ndarray:
        """(M,) predicted accuracy gain over BMA; -inf for models not allowed. ``features``
        (M, 3) or, with labels, (M, 4) whose last column is the label difference (nan: a
        model without labels, which keeps its zero-label prediction)."""
        gain = features[:, :len(FEATURES)] @ self.beta
        w = self.label_weights(n_rest)
        if w is not None and features.shape[1] > len(FEATURES):
            lab = features[:, len(FEATURES)]
            gain = gain + np.where(np.isnan(lab), 0.0, w * (np.nan_to_num(lab) - gain))
        return np.where(allowed, gain, -np.inf)

    def decide(self, features: np.ndarray, allowed: np.ndarray, bma: int, tie: np.ndarray,
               n_rest: int | None = None) -> tuple[int, int, np.ndarray, float]:
        """(choice, best by predicted gain (ties: higher ``tie``), predicted gains (M,),
        P(best beats BMA)). P is Phi((gain + bias) / sd) with the bias and spread of the
        inner-LOTO errors of the switched-to model."""
        gain = self.predict(features, allowed, n_rest)
        best = argmax_with_ties(gain, tie)
        if best == bma or not np.isfinite(gain[best]):
            return bma, bma, gain, 0.5
        p = normal_cdf((gain[best] + self.bias) / max(self.sd, 1e-6))
        return (best if gain[best] > self.tau else bma), best, gain, p

    def describe(self) -> str:
        """The learned rule in words, e.g. "threshold 0.02 learned leave-one-task-out over
        6 reference tasks; weights S1 (task-level, h 0.05) +0.57, mean_accuracy +0.04, S3
        +1.17"."""
        shown = {"s1": "S1", "s3": "S3"}
        if self.task_h is not None:
            width = "uniform" if math.isinf(self.task_h) else f"h {self.task_h:g}"
            shown["s1"] = f"S1 (task-level, {width})"
        names = ", ".join(f"{shown.get(n, n)} {b:+.2f}" for n, b in zip(FEATURES, self.beta))
        labels = ""
        if self.n_labels > 0:
            labels = (f"; {self.n_labels} labels update it with prior sd "
                      f"{math.sqrt(self.prior_var):.3f}")
        if not math.isfinite(self.tau):
            return (f"switching away from the best model on average gained nothing "
                    f"leave-one-task-out over {self.n_tasks} reference tasks, so it never "
                    f"switches{labels}")
        return (f"threshold {self.tau:g} learned leave-one-task-out over {self.n_tasks} "
                f"reference tasks; weights {names}{labels}")


def _features(s1: np.ndarray, s3_: np.ndarray, mean_acc: np.ndarray, b: int,
              labels: np.ndarray | None) -> np.ndarray:
    """(M, F) differences to model b: S1, mean reference accuracy, S3 (, label accuracy;
    nan where m or b has no label)."""
    cols = [s1 - s1[b], mean_acc - mean_acc[b], s3_ - s3_[b]]
    if labels is not None:
        cols.append(labels - labels[b])
    return np.stack(cols, 1)


def task_features(cal: Calibration, g: np.ndarray, kappa_sim: np.ndarray, allowed: np.ndarray,
                  t: float, sigma: float, labels: np.ndarray | None = None,
                  task_s1: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """(features (M, F), BMA) of a new task from its g (n, M) and kappa similarities (n, k);
    ``labels`` (M,): accuracy on its labelled items (nan: a model without labels);
    ``task_s1`` (M,): its task-level kernel S1 at the switch's bandwidth (None: S1 is the
    mean of g)."""
    bma = best_on_average(cal, allowed)
    p = smoothed_p(cal, task_distance(kappa_sim), sigma)
    s1 = g.mean(0) if task_s1 is None else np.asarray(task_s1, dtype=float)
    return _features(s1, s3((g > t).mean(0), p), cal.mean_accuracy, bma, labels), bma


def choose_task_bandwidth(cal: Calibration, allowed: np.ndarray) -> int | None:
    """Index into ``cal.task_bandwidths`` of the kernel S1 whose argmax choices among
    ``allowed`` were most accurate over the included reference tasks, each predicted from
    the others (task_level.inner_choice_accuracy; ties: the wider); None without a
    task-level kernel S1 (task_k = 0)."""
    if cal.task_s1 is None:
        return None
    refs = np.flatnonzero(cal.included)
    return widest_best(inner_choice_accuracy(cal.task_s1, cal.accuracy, allowed, refs))


def _leave_one_out_p(cal: Calibration, Z: np.ndarray, sigma: float) -> np.ndarray:
    """(len(Z), M) kernel-smoothed p of each reference task z from the other reference tasks
    (what :func:`smoothed_p` gives a new task at u(z)); one matrix product for all z."""
    u = np.nan_to_num(cal.u[Z])
    P = cal.p[Z]
    log_w = -((u[:, None] - u[None, :]) ** 2) / (2.0 * sigma**2)
    np.fill_diagonal(log_w, -np.inf)
    if len(Z) < 2:
        return np.full(P.shape, UNINFORMATIVE_P)
    # shifting each row by its max keeps the ratios exact (kernel_smoothed_p's rule)
    w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
    has = ~np.isnan(P)
    num, den = w @ np.where(has, P, 0.0), w @ has
    p = np.divide(num, den, out=np.full(P.shape, np.nan), where=den > 0)
    return np.where(np.isnan(p), UNINFORMATIVE_P, p)


def _reference_rows(cal: Calibration, allowed: np.ndarray, sigma: float, n_labels: int,
                    Y: np.ndarray | None, rows_of: list[np.ndarray] | None, seed: int,
                    task_h_index: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each included reference task z seen as a new task: features (R, M, F), realised gain
    over its BMA (R, M) (nan: no labels), its BMA (R,), and its task index (R,). With labels,
    LABEL_DRAWS rows per task, each with n_labels items drawn at random: their accuracy
    difference to BMA is the last feature (nan: a model or BMA without labels there), the
    accuracy difference on the other items the target."""
    Z = np.flatnonzero(cal.included)
    acc = cal.accuracy[Z]  # (Z, M)
    has = ~np.isnan(acc)
    acc0 = np.where(has, acc, 0.0)
    # BMA and p of each z from the other reference tasks only (0: a model on no other task)
    mean_acc = np.nan_to_num(_mean_without(acc))
    known = allowed[None, :] & has
    bma = np.where(known, mean_acc, -np.inf).argmax(1)  # ties: lower index (= tie rule)
    s3_all = s3(cal.s2[Z], _leave_one_out_p(cal, Z, sigma))
    def diff(x: np.ndarray, b: np.ndarray) -> np.ndarray:
        return x - x[np.arange(len(x)), b][:, None]

    s1 = cal.s1[Z] if task_h_index is None else cal.task_s1[task_h_index][Z]
    base = [diff(s1, bma), diff(mean_acc, bma), diff(s3_all, bma)]
    if n_labels <= 0:
        target = np.where(known, diff(acc0, bma), np.nan)
        return np.stack(base, -1), target, bma, Z
    lab = np.empty((len(Z), LABEL_DRAWS, acc.shape[1]))
    rest = np.empty_like(lab)
    for i, z in enumerate(Z):
        y = Y[rows_of[z]]
        labelled = ~np.isnan(y)
        y0 = np.where(labelled, y, 0.0)
        n = min(n_labels, len(y) - 1)
        # seeded by the rank among the reference tasks, the same with or without a held-out task
        rng = np.random.default_rng([seed, 7877, i, n_labels])
        pick = np.zeros((LABEL_DRAWS, len(y)))
        for r in range(LABEL_DRAWS):
            pick[r, rng.choice(len(y), n, replace=False)] = 1.0
        lab_sum, lab_n = pick @ y0, pick @ labelled
        rest_n = labelled.sum(0) - lab_n
        lab[i] = np.divide(lab_sum, lab_n, out=np.full(lab_sum.shape, np.nan), where=lab_n > 0)
        rest[i] = np.divide(y0.sum(0) - lab_sum, rest_n, out=np.full(lab_sum.shape, np.nan),
                            where=rest_n > 0)
    b = np.repeat(bma, LABEL_DRAWS)

    def flat(x: np.ndarray) -> np.ndarray:  # (Z, draws, M) -> (Z * draws, M)
        return x.reshape(len(Z) * LABEL_DRAWS, -1)

    features = [np.repeat(f, LABEL_DRAWS, axis=0) for f in base] + [diff(flat(lab), b)]
    ok = np.repeat(known, LABEL_DRAWS, axis=0) & ~np.isnan(flat(rest))
    target = np.where(ok, diff(np.nan_to_num(flat(rest)), b), np.nan)
    return np.stack(features, -1), target, b, np.repeat(Z, LABEL_DRAWS)


def _ridge(xtx: np.ndarray, xty: np.ndarray, n: int) -> np.ndarray:
    """Ridge-stabilised least squares from the sums X'X (F, F) and X'y (F,) of n cells."""
    if n < len(xty) + 1:
        return np.zeros(len(xty))
    return np.linalg.solve(xtx + RIDGE * np.eye(len(xty)), xty)


def _disagreement(Y: np.ndarray, rows_of: list[np.ndarray], Z: np.ndarray, b: int
                  ) -> np.ndarray:
    """(len(Z), M) per reference task, the share of its items on which each model and model
    b differ (items labelled for both; nan: none): the per-item variance of y_m - y_b."""
    out = np.full((len(Z), Y.shape[1]), np.nan)
    for i, z in enumerate(Z):
        y = Y[rows_of[z]]
        both = ~np.isnan(y) & ~np.isnan(y[:, [b]])
        n = both.sum(0)
        differ = np.where(both, (y - y[:, [b]]) ** 2, 0.0).sum(0)
        out[i] = np.divide(differ, n, out=np.full(len(n), np.nan), where=n > 0)
    return out


def _mean_without(per_task: np.ndarray) -> np.ndarray:
    """(Z, M) nan-mean over the other rows of per_task (Z, M), for each row."""
    has = ~np.isnan(per_task)
    total, count = np.where(has, per_task, 0.0).sum(0), has.sum(0)
    rest_n = count[None, :] - has
    return np.divide(total[None, :] - np.where(has, per_task, 0.0), rest_n,
                     out=np.full(per_task.shape, np.nan), where=rest_n > 0)


def _per_task_gain(realised: np.ndarray, group: np.ndarray, n_tasks: int) -> np.ndarray:
    """(n_tasks, len(TAUS)) mean realised gain per reference task and tau, from the rows'
    realised gains (R, len(TAUS)) (each task's label draws averaged)."""
    per_task = np.zeros((n_tasks, realised.shape[1]))
    np.add.at(per_task, group, realised / np.bincount(group)[group][:, None])
    return per_task


def _choose_tau(per_task: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-tau mean over tasks of the realised gains (n_tasks, len(TAUS)), and the chosen
    tau's index (ties: the larger tau)."""
    mean_gain = per_task.mean(0)
    return mean_gain, max(np.flatnonzero(mean_gain >= mean_gain.max() - 1e-12))


def _nested_gain(per_config: np.ndarray) -> float:
    """Leave-one-task-out estimate of the gain of the fitted rule: for each reference task,
    the (c, tau) that gained most on the other tasks (ties as in the fit: smaller c, larger
    tau), scored on that task; the mean over tasks (accuracy units; nan with one task).
    per_config (n_tasks, n_configs) with configs in order of preference."""
    n_tasks = len(per_config)
    if n_tasks < 2:
        return math.nan
    others = (per_config.sum(0)[None, :] - per_config) / (n_tasks - 1)
    picked = np.argmax(others >= others.max(1, keepdims=True) - 1e-12, axis=1)
    return float(per_config[np.arange(n_tasks), picked].mean())


def fit_switch(cal: Calibration, allowed: np.ndarray, *, sigma: float, n_labels: int = 0, Y: np.ndarray | None = None,
               rows_of: list[np.ndarray] | None = None, seed: int = 0) -> Switch:
    """Fit the switch on the reference tasks of ``cal`` (those ``included``).

    Args:
        cal: calibration (with ``s1``, ``s2``) of the fit; a held-out task is not included.
        allowed: (M,) candidates.
        sigma: the router's kernel width (the p, hence S3, of the reference tasks; their S2
            comes from ``cal``, computed with the router's t).
        n_labels: labelled items of the new task (0: zero-label rule).
        Y, rows_of: reference correctness (n, M) and each task's rows, needed with labels.
        seed: for the simulated label draws.
    """
    if n_labels > 0 and (Y is None or rows_of is None):
        raise ValueError("fit_switch with labels needs the reference correctness Y, rows_of")
    h_index = choose_task_bandwidth(cal, allowed)
    F, T, B, G = _reference_rows(cal, allowed, sigma, n_labels, Y, rows_of, seed, h_index)
    k = len(FEATURES)
    valid = ~np.isnan(T) & allowed[None, :]
    Fv = np.where(valid[..., None], F[..., :k], 0.0)
    Tv = np.where(valid, T, 0.0)
    xtx_row = np.einsum("rmf,rmg->rfg", Fv, Fv)  # (R, F, F) per row
    xty_row = np.einsum("rmf,rm->rf", Fv, Tv)
    tasks, group = np.unique(G, return_inverse=True)
    xtx_task = np.zeros((len(tasks),) + xtx_row.shape[1:])
    xty_task = np.zeros((len(tasks), xty_row.shape[1]))
    cells = np.zeros(len(tasks))
    np.add.at(xtx_task, group, xtx_row)
    np.add.at(xty_task, group, xty_row)
    np.add.at(cells, group, valid.sum(1))
    xtx, xty, n = xtx_task.sum(0), xty_task.sum(0), cells.sum()
    rows = np.arange(len(T))
    # inner leave-one-task-out: weights fitted without the row's own task
    betas = np.array([_ridge(xtx - xtx_task[j], xty - xty_task[j], int(n - cells[j]))
                      for j in range(len(tasks))])
    prior = np.einsum("rmf,rf->rm", F[..., :k], betas[group])  # (R, M) zero-label gains
    beta = _ridge(xtx, xty, int(n))
    bma = best_on_average(cal, allowed)
    prior_var, disagreement, scales = 0.0, None, (0.0,)
    if n_labels > 0:
        # spread of the true gains around the zero-label prediction (models other than BMA)
        others = valid.copy()
        others[rows, B] = False
        prior_var = float(np.mean((T - prior)[others] ** 2)) if others.any() else 0.0
        # label-difference variance per item: disagreement with the row's BMA, averaged
        # over the other reference tasks (the row's own task is the one being predicted)
        Z = np.flatnonzero(cal.included)
        row_dis = np.full(T.shape, np.nan)
        for b in np.unique(np.r_[B, bma]):
            per_task = _disagreement(Y, rows_of, Z, int(b))
            if b == bma:
                mean = quiet_nanmean(per_task)
                disagreement = np.where(np.isnan(mean), UNKNOWN_DISAGREEMENT, mean)
            at = B == b
            row_dis[at] = _mean_without(per_task)[np.searchsorted(Z, G[at])]
        # as drawn in _reference_rows: min(n_labels, n - 1) labels, the rest scored
        n_lab = np.maximum(np.minimum(n_labels, cal.n[G] - 1), 1)
        n_rest = np.maximum(cal.n[G] - n_lab, 1)
        row_dis = np.where(np.isnan(row_dis), UNKNOWN_DISAGREEMENT, row_dis)
        row_var = row_dis * (1.0 / n_lab + 1.0 / n_rest)[:, None]
        lab = F[..., k]
        # a prior that was exact on every reference task leaves nothing for labels to fix
        scales = PRIOR_SCALES if prior_var > 0 else (0.0,)
    best_fit = None
    per_config = []  # (n_tasks, len(TAUS)) per c, taus from the largest: preference order
    for c in scales:  # ties keep the smaller c (0: the labels are not used)
        gain = prior
        if c > 0:
            w = c * prior_var / (c * prior_var + row_var)
            gain = prior + np.where(np.isnan(lab), 0.0, w * (np.nan_to_num(lab) - prior))
        gain = np.where(valid, gain, -np.inf)
        best = gain.argmax(1)  # ties: lower index
        top = gain[rows, best]
        realised = np.nan_to_num(np.array([np.where(top > tau, T[rows, best], T[rows, B])
                                           for tau in TAUS]).T)
        per_task = _per_task_gain(realised, group, len(tasks))
        per_config.append(per_task[:, ::-1])
        mean_gain, chosen = _choose_tau(per_task)
        if best_fit is not None and mean_gain[chosen] <= best_fit[0][best_fit[1]] + 1e-12:
            continue
        switched = (best != B) & np.isfinite(top)
        errors = (T[rows, best] - top)[switched] if switched.any() else np.zeros(1)
        best_fit = (mean_gain, chosen, c, errors)
    mean_gain, chosen, c, errors = best_fit
    return Switch(beta=beta, tau=TAUS[chosen], n_labels=n_labels if c > 0 else 0,
                  inner_gain=mean_gain, bias=float(np.nanmean(errors)),
                  sd=float(np.sqrt(np.nanmean(errors ** 2))), n_tasks=len(tasks),
                  features=FEATURES + ((LABEL_FEATURE,) if c > 0 else ()),
                  prior_var=c * prior_var if c > 0 else 0.0,
                  disagreement=disagreement if c > 0 else None,
                  expected_gain=_nested_gain(np.concatenate(per_config, axis=1)),
                  task_h=None if h_index is None else float(cal.task_bandwidths[h_index]),
                  task_h_index=h_index)


__all__ = ["Switch", "choose_task_bandwidth", "fit_switch", "task_features"]
