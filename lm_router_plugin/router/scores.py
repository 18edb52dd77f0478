"""Task-level scores of METHOD.md (thesis §3.2): S1, S2, S3, the dataset distance u, the
kernel-smoothed confidence p and the Monte Carlo fallback test (eq. 3.8).

All functions are pure numpy; shapes: n inputs of the new task, M models, D reference tasks.

    >>> g = np.array([[0.8, 0.2], [0.6, 0.4]])   # (n=2, M=2) predicted P(correct)
    >>> s1(g), s2(g)                             # (array([0.7, 0.3]), array([1., 0.]))
"""

from __future__ import annotations

import math

import numpy as np


def quiet_nanmean(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """np.nanmean without the "Mean of empty slice" warning: nan where nothing is labelled."""
    x = np.asarray(x, dtype=float)
    has = ~np.isnan(x)
    n = has.sum(axis=axis)
    total = np.where(has, x, 0).sum(axis=axis)
    return np.divide(total, n, out=np.full(np.shape(total), np.nan), where=n > 0)


def s1(g: np.ndarray) -> np.ndarray:
    """S1 (eq. 3.3): mean predicted correctness per model. g (n, M) -> (M,)."""
    return np.asarray(g, dtype=float).mean(axis=0)


def s2(g: np.ndarray, t: float = 0.5) -> np.ndarray:
    """S2 (eq. 3.4): fraction of inputs predicted correct, 1[g > t]. g (n, M) -> (M,)."""
    return (np.asarray(g) > t).mean(axis=0)


def s3(s2_scores: np.ndarray, p: np.ndarray) -> np.ndarray:
    """S3 (eq. 3.7): expected accuracy given a thresholded predictor of accuracy p. (M,)."""
    return s2_scores * p + (1.0 - s2_scores) * (1.0 - p)


def mean_neighbour_distance(similarities: np.ndarray) -> np.ndarray:
    """nn(x, R): mean cosine distance to the kappa nearest references. (n, kappa) -> (n,).

    Missing neighbours (similarity -inf, fewer eligible references than kappa) are ignored.
    """
    sims = np.asarray(similarities, dtype=float)
    finite = np.isfinite(sims)
    dist = np.where(finite, 1.0 - sims, 0.0)
    return dist.sum(axis=1) / np.maximum(finite.sum(axis=1), 1)


def task_distance(similarities: np.ndarray) -> float:
    """u(d) (§3.2.3): mean over the task's inputs of nn(x, D_-d). (n, kappa) -> scalar."""
    return float(mean_neighbour_distance(similarities).mean())


def thresholded_accuracy(g: np.ndarray, y: np.ndarray, t: float = 0.5) -> np.ndarray:
    """p(d, m): accuracy of 1[g > t] against the true labels y, ignoring missing labels.

    g, y: (n, M), y in {0, 1, nan} -> (M,) (nan where a model has no label on the task).
    """
    pred = np.asarray(g) > t
    y = np.asarray(y, dtype=float)
    has = ~np.isnan(y)
    hits = ((pred == (y == 1)) & has).sum(axis=0)
    n = has.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, hits / np.maximum(n, 1), np.nan)


def kernel_smoothed_p(u_new: float, u_ref: np.ndarray, p_ref: np.ndarray, sigma: float = 0.09,
                      exclude: np.ndarray | None = None) -> np.ndarray:
    """p(d', m) = sum_z p_z(m) K(u(d'), u_z) / sum_z K(u(d'), u_z) (§3.2.4), Gaussian K.

    Args:
        u_new: u of the new task.
        u_ref: (D,) u of each reference task (calibration pairs).
        p_ref: (D, M) accuracy of each model's thresholded predictor on each reference task
            (nan where the model has no labels on that task; those pairs are skipped).
        sigma: kernel bandwidth.
        exclude: (D,) bool, pairs to leave out (the held-out task during evaluation).

    Returns:
        (M,) estimated p. If every kernel weight underflows to 0 (u far outside the
        calibration range), the pairs of the nearest u get all the weight.
    """
    u_ref = np.asarray(u_ref, dtype=float)
    p_ref = np.asarray(p_ref, dtype=float)
    keep = np.ones(len(u_ref), bool) if exclude is None else ~np.asarray(exclude, bool)
    log_w = -((u_new - u_ref) ** 2) / (2.0 * sigma**2)
    log_w = np.where(keep, log_w, -np.inf)
    # Shifting by the max keeps the ratio exact and avoids 0/0 when all weights underflow.
    w = np.exp(log_w - np.max(log_w[keep])) if keep.any() else np.zeros_like(log_w)
    w = w[:, None] * ~np.isnan(p_ref)
    num = (w * np.nan_to_num(p_ref)).sum(axis=0)
    den = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def prob_beats(n: int, n_pos_a: int, p_a: float, n_pos_b: int, p_b: float, *,
               n_draws: int = 1000, rng: np.random.Generator) -> float:
    """P(true accuracy of model a > that of model b) by Monte Carlo (eq. 3.8).

    A model with n_pos inputs predicted correct (of n) and predictor accuracy p gets
    Binomial(n_pos, p) + Binomial(n - n_pos, 1 - p) correct answers; ``n_draws`` draws each.
    """
    if n == 0:
        return 0.0
    p_a, p_b = float(np.clip(p_a, 0, 1)), float(np.clip(p_b, 0, 1))
    correct_a = rng.binomial(n_pos_a, p_a, n_draws) + rng.binomial(n - n_pos_a, 1 - p_a, n_draws)
    correct_b = rng.binomial(n_pos_b, p_b, n_draws) + rng.binomial(n - n_pos_b, 1 - p_b, n_draws)
    return float(np.mean(correct_a > correct_b))


def normal_cdf(x: float) -> float:
    """Phi(x), the standard normal distribution function."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def argmax_with_ties(scores: np.ndarray, tie_break: np.ndarray) -> int:
    """Index of the highest score; equal scores go to the higher ``tie_break`` value."""
    scores = np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf)
    return int(np.lexsort((-np.arange(len(scores)), tie_break, scores))[-1])
