"""Task accuracy estimates that combine the router's zero-label prediction with a few
labelled items of the new task (beyond the paper; issue "routing that beats BMA").

For each candidate m the unknown is theta_m, its accuracy on the new task.

* **Prior (no labels)**: S1_m (mean predicted correctness) corrected by the model's bias on
  the reference tasks, mu0_m = S1_m + mean_z(acc(m, z) - S1(m, z)), with the covariance of
  the remaining errors across reference tasks (both from leave-task-out predictions, so the
  prior's strength is calibrated, not chosen; the correlations shrunk by the Schafer-Strimmer
  intensity, :func:`shrunk_covariance`), times (1 + 1/D') for the bias's own estimation
  error over D' reference tasks.
* **Labels**: a prediction-powered (difference) estimate, theta_hat = mean g over the task +
  mean over the (randomly drawn) labelled items of (y - g). Its covariance
  uses the reference inputs' per-item residual covariance (not the few labels' own sample
  covariance: 10 labels a model got all right would claim a residual variance of ~0 and
  infinite weight), with the labels' overlap, so differences between models are estimated
  from the same items.
* **Posterior**: the Gaussian combination of the two: a report beside the decision
  (``recommend``'s estimated accuracy, 90% interval, P(best) and expected gain of more
  labels), not a decision (as a decision it lost to the stacked switch on every set,
  docs/results.md). Intervals, P(better) and P(best) are predictive for the accuracy on the
  items given (they add the items' own sampling noise). ``evaluate`` measures how honest
  they are (its ``uncertainty`` entries).

    >>> est = estimate(cal, g, allowed, lab_g=g_lab, lab_y=y_lab)
    >>> est.mean, est.interval(0.9), est.p_best(rng), est.expected_gain(10, rng)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .calibration import Calibration, pairwise_cov
from .scores import normal_cdf

#: P(best) and the expected gain are drawn over the MC_LEADERS candidates of highest posterior
#: mean only (the draws cost O(K^3)); with 1,000 models the others have P(best) ~ 0.
MC_LEADERS = 64
VARIANCE_FLOOR = 1e-4
NO_EVIDENCE = 1e6  # variance of a model without labels (no information)



def shrunk_covariance(errors: np.ndarray) -> tuple[np.ndarray, float]:
    """(cov (M, M), lambda): covariance of the columns of ``errors`` (Z, M; nan: missing,
    pairwise-complete) with the correlations shrunk toward 0 by the Schafer-Strimmer (2005)
    intensity lambda = sum Var(r_ij) / sum r_ij^2 over pairs i != j, estimated from the data
    (no tuning). The variances are kept: the shrinkage only weakens the correlations, and
    only as much as their sampling noise warrants (errors of different models on the same
    task are strongly correlated, so the variance of a difference is small; a fixed heavy
    shrinkage would inflate it and overstate what a few labels can change)."""
    errors = np.asarray(errors, dtype=float)
    cov = pairwise_cov(errors)
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    has = ~np.isnan(errors)
    n = has.T.astype(float) @ has.astype(float)  # rows shared by each pair
    col_n = has.sum(0)
    mean = np.divide(np.where(has, errors, 0).sum(0), col_n, out=np.zeros(errors.shape[1]),
                     where=col_n > 0)
    x = np.where(has, np.divide(errors - mean, sd, out=np.zeros_like(errors), where=sd > 0), 0)
    # r_ij = sum_k w_kij / (n - 1), w_kij = x_ki x_kj; Var(r_ij) = n / (n - 1)^3 sum (w - wbar)^2
    w_sum, w_sq = x.T @ x, (x * x).T @ (x * x)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(n > 1, w_sum / (n - 1), 0.0)
        var_r = np.where(n > 1, n / (n - 1) ** 3 * (w_sq - w_sum**2 / n), 0.0)
    off = ~np.eye(len(r), dtype=bool)
    denom = float(np.sum(r[off] ** 2))
    lam = float(np.clip(np.sum(var_r[off]) / denom, 0.0, 1.0)) if denom > 0 else 1.0
    shrunk = np.where(off, (1.0 - lam) * cov, cov)
    return shrunk, lam


def prior(cal: Calibration, s1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu0 (M,), Sigma0 (M, M)): bias-corrected S1 and the predictive covariance of its
    error on a new task: the covariance of the errors over the reference tasks of ``cal``
    (correlations shrunk by :func:`shrunk_covariance`) times (1 + 1/D'), since the bias is
    itself a mean over the D' reference tasks (the textbook predictive variance of a new
    draw; pairwise: Cov(bias_i, bias_j) = Sigma_ij n_ij / (n_i n_j) with n the tasks that
    have labels). It matters on small sets: with 10 reference tasks, 10% more variance."""
    inc = cal.included
    errors = cal.accuracy[inc] - cal.s1[inc]  # (D', M), nan where a model has no labels
    has = ~np.isnan(errors)
    n_pair = has.T.astype(float) @ has.astype(float)  # tasks shared by each pair of models
    n_model = np.diag(n_pair)  # tasks with results of each model
    bias = np.divide(np.where(has, errors, 0).sum(0), n_model,
                     out=np.zeros(errors.shape[1]), where=n_model > 0)
    cov, _ = shrunk_covariance(errors - bias)
    bias_share = np.divide(n_pair, np.outer(n_model, n_model), out=np.zeros_like(n_pair),
                           where=np.outer(n_model, n_model) > 0)
    cov = nearest_psd(cov * (1.0 + bias_share)) + VARIANCE_FLOOR * np.eye(len(cov))
    return np.clip(s1 + bias, 0.0, 1.0), cov


def nearest_psd(a: np.ndarray) -> np.ndarray:
    """(M, M) the symmetric matrix nearest ``a`` (Frobenius) with no negative eigenvalue.
    Covariances computed pairwise over the tasks or items each pair of models shares (models
    missing on some) need not be positive semi-definite; P(best) draws from them."""
    w, v = np.linalg.eigh(0.5 * (a + a.T))
    if w.min() >= 0:
        return 0.5 * (a + a.T)
    return (v * np.clip(w, 0.0, None)) @ v.T


@dataclass
class TaskEstimate:
    """Posterior over the candidates' accuracies on one task. mean (M,), cov (M, M) of the
    accuracies' expected values; n_labels (M,) labelled items per model; residual_cov
    (M, M) per-item noise of a label; n_items: the items the accuracy is for (those whose
    g was given). Intervals, P(better) and P(best) are predictive: for the accuracy on those
    n_items items, so they add the items' own sampling noise residual_cov / n_items (what
    a small task's realised accuracy has beyond its expected value)."""

    mean: np.ndarray
    cov: np.ndarray
    prior_mean: np.ndarray
    n_labels: np.ndarray
    residual_cov: np.ndarray
    allowed: np.ndarray
    n_items: int = 0

    def predictive_cov(self) -> np.ndarray:
        """(M, M) covariance of the accuracies on the n_items items (cov + their noise)."""
        if self.n_items <= 0:
            return self.cov
        return self.cov + self.residual_cov / self.n_items

    def interval(self, level: float = 0.9) -> np.ndarray:
        """(M, 2) central normal interval of each model's accuracy, clipped to [0, 1]."""
        z = {0.8: 1.2816, 0.9: 1.6449, 0.95: 1.96}.get(level, 1.6449)
        sd = np.sqrt(np.maximum(np.diag(self.predictive_cov()), 0))
        return np.clip(np.stack([self.mean - z * sd, self.mean + z * sd], 1), 0, 1)

    def p_better(self, a: int, b: int) -> float:
        """P(theta_a > theta_b) under the posterior (paired: uses their covariance)."""
        if a == b:
            return 0.5
        cov = self.predictive_cov()
        var = cov[a, a] + cov[b, b] - 2 * cov[a, b]
        return normal_cdf((self.mean[a] - self.mean[b]) / math.sqrt(max(var, 1e-12)))

    def leaders(self) -> np.ndarray:
        """Indices of the (at most MC_LEADERS) allowed models of highest posterior mean."""
        idx = np.flatnonzero(self.allowed)
        if len(idx) <= MC_LEADERS:
            return idx
        return np.sort(idx[np.argsort(-self.mean[idx], kind="stable")[:MC_LEADERS]])

    def p_best(self, rng: np.random.Generator, n_draws: int = 4000) -> np.ndarray:
        """(M,) P(each allowed model has the highest accuracy), Monte Carlo over the leaders
        (0 for the others and for models not allowed)."""
        idx = self.leaders()
        cov = self.predictive_cov()[np.ix_(idx, idx)]
        draws = rng.multivariate_normal(self.mean[idx], cov, n_draws,
                                        method="cholesky" if _is_pd(cov) else "eigh")
        out = np.zeros(len(self.mean))
        out[idx] = np.bincount(draws.argmax(1), minlength=len(idx)) / n_draws
        return out

    def expected_gain(self, n_more: int, rng: np.random.Generator, n_draws: int = 4000
                      ) -> float:
        """Expected rise of the best posterior mean after ``n_more`` random labels per model
        (preposterior analysis; accuracy units)."""
        if n_more <= 0:
            return 0.0
        idx = self.leaders()
        post = self.cov[np.ix_(idx, idx)]
        noise = self.residual_cov[np.ix_(idx, idx)] / n_more + VARIANCE_FLOOR * np.eye(len(idx))
        new = post - post @ np.linalg.solve(post + noise, post)
        spread = 0.5 * ((post - new) + (post - new).T)
        w, v = np.linalg.eigh(spread)
        factor = v * np.sqrt(np.clip(w, 0, None))
        means = self.mean[idx][None, :] + rng.standard_normal((n_draws, len(idx))) @ factor.T
        # accuracies lie in [0, 1]: with a wide posterior the Gaussian's draws do not, and
        # the best of them promised gains above 100% accuracy (few reference tasks)
        means = np.clip(means, 0.0, 1.0)
        return float(np.mean(means.max(1)) - np.clip(self.mean[idx], 0.0, 1.0).max())


def _is_pd(a: np.ndarray) -> bool:
    try:
        np.linalg.cholesky(a)
        return True
    except np.linalg.LinAlgError:
        return False


def label_evidence(g: np.ndarray, y: np.ndarray, residual_cov: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Difference estimate of the mean residual (y - g) from randomly drawn labelled items.

    Args:
        g: (n, M) predicted correctness of the labelled items.
        y: (n, M) their labels (nan: model not run on the item).
        residual_cov: (M, M) reference per-item residual covariance (the per-label noise).

    Returns:
        (mean residual (M,), its covariance (M, M), labels per model (M,)). A model without
        labels gets residual 0 and variance NO_EVIDENCE.
    """
    M = g.shape[1]
    has = ~np.isnan(y)
    r = np.where(has, y - g, 0.0)
    w = has.astype(float)
    total = w.sum(0)
    mean = np.divide((w * r).sum(0), total, out=np.zeros(M), where=total > 0)
    n = has.sum(0).astype(float)
    # per-item covariance: the reference inputs' (a sample covariance from 10-30 0/1 labels
    # is too noisy to set the labels' precision; measured in the README's calibration rows)
    per_item = residual_cov
    # covariance of two means over shared items: per-item covariance x
    # n_ab (items labelled for both) / (n_a n_b) (= 1/n when every item is shared)
    denom = np.outer(total, total)
    shared = np.divide(w.T @ w, denom, out=np.zeros((M, M)), where=denom > 0)
    cov = per_item * shared
    none = n == 0
    cov[none, :] = 0
    cov[:, none] = 0
    cov[none, none] = NO_EVIDENCE
    return mean, cov + VARIANCE_FLOOR / 10 * np.eye(M), n


def estimate(cal: Calibration, g: np.ndarray, allowed: np.ndarray, *,
             lab_g: np.ndarray | None = None, lab_y: np.ndarray | None = None
             ) -> TaskEstimate:
    """Posterior of each model's accuracy on a task.

    Args:
        cal: calibration of the fit (reference tasks only).
        g: (n, M) zero-label predicted correctness of the items whose accuracy is wanted.
        allowed: (M,) bool candidates.
        lab_g, lab_y: (n_lab, M) zero-label predictions and labels of the labelled items.
    """
    s1 = np.asarray(g, dtype=float).mean(0)
    mu0, cov0 = prior(cal, s1)
    residual = nearest_psd(cal.residual_cov) + VARIANCE_FLOOR * np.eye(len(s1))
    if lab_y is None or len(lab_y) == 0:
        return TaskEstimate(mu0, cov0, mu0, np.zeros(len(s1)), residual, allowed, len(g))
    r_mean, cov_l, n = label_evidence(np.asarray(lab_g, float), np.asarray(lab_y, float),
                                      residual)
    theta_l = s1 + r_mean
    inv0 = np.linalg.inv(cov0)
    inv_l = np.linalg.inv(cov_l)
    cov = np.linalg.inv(inv0 + inv_l)
    cov = 0.5 * (cov + cov.T)
    mean = cov @ (inv0 @ mu0 + inv_l @ theta_l)
    return TaskEstimate(np.clip(mean, 0, 1), cov, mu0, n, residual, allowed, len(g))


__all__ = ["TaskEstimate", "estimate", "label_evidence", "nearest_psd", "prior",
           "shrunk_covariance"]
