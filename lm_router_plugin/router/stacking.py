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

With n labelled items of the new task, the predictions d0 (one per candidate) are the prior
of a Gaussian update of all candidates at once by the paired label differences L_m - L_b
(accuracies on the same items; label_update.py):

    gain  =  d0 + S (S + V (1/n + 1/(N - n)))^-1 (L - d0)

S = c ((1 - lam) K + lam s^2 I) in BMA's coordinates, K the second moments of the zero-label
errors on the reference tasks (inner leave-one-task-out), s^2 their mean variance; V the
per-item covariance of the label differences over the reference items (a model close to BMA
is compared precisely with few labels); N - n the unlabelled items the choice is scored on.
The prior strength c (0 = ignore the labels), the pooling lam and tau are chosen together
by the inner leave-one-task-out, on label draws of the same count simulated on every
reference task. tau is chosen by an inner leave-one-task-out over the reference tasks
(the tau of highest realised gain; ties go to the larger, more conservative tau), so on a
reference set where switching does not pay the rule learns to stay with BMA, and where it
pays it learns to switch. Nothing here reads the task being decided: in the strict
evaluation ``cal`` is the calibration of a fit without it.

    >>> switch = fit_switch(cal, allowed, sigma=0.09)                   # zero labels
    >>> features, bma = task_features(cal, g, kappa_sim, allowed, t=0.5, sigma=0.09)
    >>> choice, best, gain, p = switch.decide(features, allowed, bma, cal.mean_accuracy)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from .calibration import UNINFORMATIVE_P, Calibration, best_on_average, smoothed_p
from .scores import argmax_with_ties, normal_cdf, quiet_nanmean, s3, task_distance
from .label_update import (
    error_moments,
    fill_unknown,
    item_covariances,
    mean_positive_diagonal,
    posterior_gains,
    relative,
)
from .task_level import inner_choice_accuracy, widest_best

#: switch thresholds on the predicted gain (accuracy units) the inner LOTO chooses from
TAUS = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, math.inf)
FEATURES = ("s1", "mean_accuracy", "s3")
LABEL_FEATURE = "labels"
#: multipliers c of the prior variance the inner LOTO chooses from with labels (0: the
#: labels are ignored, the zero-label rule; ties go to the smaller c)
PRIOR_SCALES = (0.0, 0.0625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0)
#: shares lam of the pooled prior s^2 I in the prior covariance of the true gains, the inner
#: LOTO chooses from with labels (label_update.py; 1: what one model's labels tell about
#: another comes from BMA's shared term only; ties go to the larger)
POOLING = (1.0, 0.5)
#: the most candidates the label update reads together (label_models)
MAX_LABEL_MODELS = 128
LABEL_DRAWS = 4  # simulated label sets per reference task
RIDGE = 1e-4

logger = logging.getLogger(__name__)



@dataclass
class Switch:
    """A fitted stacked switch.

    beta (3,) weights of the zero-label features; tau the switch threshold; n_labels the
    label count it was fitted for (0: labels unused); inner_gain (len(TAUS),) mean realised
    gain over the reference tasks per tau (inner LOTO); bias and sd of the realised minus
    predicted gain of the switched-to model over the reference tasks (selection-aware:
    measured at the argmax); n_tasks. With labels: prior_cov (M, M) the prior covariance
    of the true gains over BMA (accuracy^2; c times the reference errors' second moments,
    a share ``pooling`` of them pooled as s^2 I), label_cov (M, M) the per-item covariance
    of the label differences, both in the coordinates of the new task's BMA ``bma`` over
    the models ``label_models`` (K,) (M, M above is K, K; None: all; label_update.py).
    expected_gain: the rule's gain over BMA estimated by a leave-one-task-out
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
    expected_gain: float = math.nan
    task_h: float | None = None
    task_h_index: int | None = None
    prior_cov: np.ndarray | None = None
    label_cov: np.ndarray | None = None
    pooling: float = 1.0
    bma: int | None = None
    label_models: np.ndarray | None = None

    def label_weights(self, n_rest: int | None) -> np.ndarray | None:
        """(K,) the weight of each model's own label difference in its updated gain, the
        diagonal of S (S + V (1/n + 1/n_rest))^-1, for the models ``label_models`` (0 for
        BMA; None without labels); n_rest: the unlabelled items the choice is for (None:
        many)."""
        if self.n_labels <= 0 or self.prior_cov is None:
            return None
        f = 1.0 / self.n_labels + (1.0 / n_rest if n_rest else 0.0)
        J = self._label_cols() != self.bma
        S = self.prior_cov[np.ix_(J, J)]
        A = (self.prior_cov + f * self.label_cov)[np.ix_(J, J)]
        w = np.zeros(len(J))
        w[J] = np.diag(np.linalg.solve(A.T, S.T).T)  # diag of S A^-1
        return w

    def _label_cols(self) -> np.ndarray:
        """(K,) the models the label update reads (all when label_models is None)."""
        if self.label_models is None:
            return np.arange(len(self.prior_cov))
        return np.asarray(self.label_models)

    def predict(self, features: np.ndarray, allowed: np.ndarray, n_rest: int | None = None
                ) -> np.ndarray:
        """(M,) predicted accuracy gain over BMA; -inf for models not allowed. ``features``
        (M, 3) or, with labels, (M, 4) whose last column is the label difference (nan: a
        model without labels, whose gain moves only with the others' labels)."""
        gain = features[:, :len(FEATURES)] @ self.beta
        if self.prior_cov is not None and features.shape[1] > len(FEATURES):
            f = 1.0 / self.n_labels + (1.0 / n_rest if n_rest else 0.0)
            cols = self._label_cols()
            lab = features[cols, len(FEATURES)]
            J = allowed[cols] & ~np.isnan(lab)
            J[cols == self.bma] = False
            gain[cols] = posterior_gains(gain[None, None, cols], lab[None, None], J[None],
                                         self.prior_cov[None], self.label_cov[None],
                                         np.array([f]))[0, 0]
        # an accuracy (or normalised value) gain over BMA lies in [-1, 1]; a linear
        # prediction far outside the reference tasks' range (one odd prompt) may not
        return np.where(allowed, np.clip(gain, -1.0, 1.0), -np.inf)

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
            J = self._label_cols() != self.bma
            sd = math.sqrt(float(np.mean(np.diag(self.prior_cov)[J]))) if J.any() else 0.0
            shared = ("" if self.pooling >= 1 else
                      f", {1 - self.pooling:.0%} of the prior from how the models went "
                      "together on the reference tasks")
            labels = (f"; {self.n_labels} labels update every candidate with prior sd "
                      f"{sd:.3f}{shared}")
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
    s1 = g.mean(0) if task_s1 is None else _kernel_or_knn(task_s1, g.mean(0))
    return _features(s1, s3((g > t).mean(0), p), cal.mean_accuracy, bma, labels), bma


def _kernel_or_knn(kernel_s1: np.ndarray, knn_s1: np.ndarray) -> np.ndarray:
    """The task-level kernel S1, and the kNN's S1 where it is nan: a model none of whose
    task_k nearest reference inputs has a result (sparse results) still gets a prediction
    (the kNN predictor falls back to the model's own labels)."""
    kernel_s1 = np.asarray(kernel_s1, dtype=float)
    return np.where(np.isnan(kernel_s1), knn_s1, kernel_s1)


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

    s1 = cal.s1[Z] if task_h_index is None else _kernel_or_knn(cal.task_s1[task_h_index][Z],
                                                               cal.s1[Z])
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


def label_models(cal: Calibration, allowed: np.ndarray, bmas: np.ndarray) -> np.ndarray:
    """(K,) sorted indices of the models the label update reads: the allowed ones, at most
    MAX_LABEL_MODELS of them by mean reference accuracy, and every BMA in ``bmas``. The
    covariances take K^2 memory per reference task; with more candidates, those beyond the
    best MAX_LABEL_MODELS on average keep their zero-label predictions (logged)."""
    idx = np.flatnonzero(allowed)
    if len(idx) > MAX_LABEL_MODELS:
        logger.info("labels update the %d candidates best on average of %d; the others keep "
                    "their zero-label prediction", MAX_LABEL_MODELS, len(idx))
        order = np.argsort(-np.nan_to_num(cal.mean_accuracy[idx], nan=-np.inf), kind="stable")
        idx = idx[order[:MAX_LABEL_MODELS]]
    return np.union1d(idx, bmas)


def _label_moments(cal: Calibration, T: np.ndarray, prior: np.ndarray, valid: np.ndarray,
                   lab: np.ndarray, B: np.ndarray, bma: int, n_labels: int, Y: np.ndarray,
                   rows_of: list[np.ndarray], cols: np.ndarray) -> dict:
    """What the label update (label_update.posterior_gains) needs, for the reference rows of
    _reference_rows (LABEL_DRAWS per included task, in task order) and for the new task,
    over the models ``cols`` (K,) (label_models: M below is K; B and bma are among them).

    Per task (each from the other reference tasks only, in the task's BMA coordinates):
    "full" and "pooled" (Z, M, M), the second moments of the zero-label errors T - prior
    and their pooled form s^2 I; "V" (Z, M, M), the per-item covariance of the label
    differences; "f" (Z,) = 1/n + 1/(N - n) as drawn; "J" (Z, M) the candidates whose labels
    are read (labelled in every draw, not BMA); "prior", "lab" (Z, LABEL_DRAWS, M).
    "new": (full, pooled, V) (M, M) from all reference tasks, in bma's coordinates; "s2"
    the mean squared zero-label error (0: nothing for labels to fix)."""
    Z = np.flatnonzero(cal.included)
    shape = (len(Z), LABEL_DRAWS, -1)
    T, prior, valid, lab, Y = T[:, cols], prior[:, cols], valid[:, cols], lab[:, cols], Y[:, cols]
    Bz = np.searchsorted(cols, B[::LABEL_DRAWS])  # each task's BMA (the same in its draws)
    bma = int(np.searchsorted(cols, bma))
    lab3, ok = lab.reshape(shape), valid.reshape(shape)
    J = ok.all(1) & ~np.isnan(lab3).any(1)
    J[np.arange(len(Z)), Bz] = False
    sums, counts = error_moments(np.where(ok, (T - prior).reshape(shape), np.nan))
    total, n = sums.sum(0), counts.sum(0)
    K_new = np.divide(total, n, out=np.zeros_like(total), where=n > 0)
    K = np.divide(total - sums, n - counts, out=np.zeros_like(sums), where=n - counts > 0)
    eye = np.eye(K.shape[-1])
    cov = item_covariances(Y, rows_of, Z)
    cov_without = _mean_without(cov.reshape(len(Z), -1)).reshape(cov.shape)
    # as drawn in _reference_rows: min(n_labels, n - 1) labels, the rest scored
    n_lab = np.maximum(np.minimum(n_labels, cal.n[Z] - 1), 1)
    n_rest = np.maximum(cal.n[Z] - n_lab, 1)
    return {"full": relative(K, Bz),
            "pooled": relative(mean_positive_diagonal(K)[:, None, None] * eye, Bz),
            "V": fill_unknown(relative(cov_without, Bz)), "f": 1.0 / n_lab + 1.0 / n_rest,
            "J": J, "prior": prior.reshape(shape), "lab": lab3,
            "new": (relative(K_new, bma), relative(mean_positive_diagonal(K_new) * eye, bma),
                    fill_unknown(relative(quiet_nanmean(cov, 0), bma))),
            "s2": float(mean_positive_diagonal(K_new))}


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
    the (c, lam, tau) that gained most on the other tasks (ties as in the fit: smaller c,
    more pooling, larger tau), scored on that task; the mean over tasks (accuracy units;
    nan with one task). per_config (n_tasks, n_configs) with configs in order of
    preference."""
    n_tasks = len(per_config)
    if n_tasks < 2:
        return math.nan
    others = (per_config.sum(0)[None, :] - per_config) / (n_tasks - 1)
    picked = np.argmax(others >= others.max(1, keepdims=True) - 1e-12, axis=1)
    return float(per_config[np.arange(n_tasks), picked].mean())


def fit_switch(cal: Calibration, allowed: np.ndarray, *, sigma: float, n_labels: int = 0,
               Y: np.ndarray | None = None, rows_of: list[np.ndarray] | None = None,
               seed: int = 0) -> Switch:
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
    # a cell without a finite feature (a model with no prediction there) is left out,
    # never fitted as nan
    valid = ~np.isnan(T) & allowed[None, :] & np.isfinite(F[..., :len(FEATURES)]).all(-1)
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
    configs, moments = [(0.0, 1.0)], None  # (c, lam); c = 0: the labels are not used
    if n_labels > 0:
        cols = label_models(cal, allowed, np.r_[B, bma])
        moments = _label_moments(cal, T, prior, valid, F[..., k], B, bma, n_labels, Y,
                                 rows_of, cols)
        if moments["s2"] > 0:  # a prior exact on every reference task: nothing to fix
            configs += [(c, lam) for c in PRIOR_SCALES if c > 0 for lam in POOLING]
    best_fit = None
    per_config = []  # (n_tasks, len(TAUS)) per config, taus from the largest: preference order
    for c, lam in configs:  # ties keep the earlier: smaller c, more pooling
        gain = prior
        if c > 0:
            m = moments
            S = c * ((1 - lam) * m["full"] + lam * m["pooled"])
            gain = prior.copy()
            gain[:, cols] = posterior_gains(m["prior"], m["lab"], m["J"], S, m["V"],
                                            m["f"]).reshape(len(prior), -1)
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
        best_fit = (mean_gain, chosen, c, lam, errors)
    mean_gain, chosen, c, lam, errors = best_fit
    new = moments["new"] if c > 0 else None
    return Switch(beta=beta, tau=TAUS[chosen], n_labels=n_labels if c > 0 else 0,
                  inner_gain=mean_gain, bias=float(np.nanmean(errors)),
                  sd=float(np.sqrt(np.nanmean(errors ** 2))), n_tasks=len(tasks),
                  features=FEATURES + ((LABEL_FEATURE,) if c > 0 else ()),
                  expected_gain=_nested_gain(np.concatenate(per_config, axis=1)),
                  task_h=None if h_index is None else float(cal.task_bandwidths[h_index]),
                  task_h_index=h_index,
                  prior_cov=None if new is None else c * ((1 - lam) * new[0] + lam * new[1]),
                  label_cov=None if new is None else new[2], pooling=lam, bma=int(bma),
                  label_models=None if new is None else cols)


__all__ = ["Switch", "choose_task_bandwidth", "fit_switch", "task_features"]
