"""How the stacked switch reads labels: every candidate's gain over BMA updated at once.

With n labelled items of a new task, the vector of label differences L_m - L_b (each
candidate's accuracy minus BMA's on the same items) is a noisy view of the vector of true
gains d; the zero-label prediction d0 is its prior. Both are Gaussian in this model:

    d ~ N(d0, S),    L - d0 | d ~ N(d - d0, V (1/n + 1/(N - n)))
    E[d | L] = d0 + S (S + V (1/n + 1/(N - n)))^-1 (L - d0)

S is the second moment of the zero-label predictor's errors on the reference tasks (inner
leave-one-task-out), shrunk towards s^2 I with weight lam: what one model's labels tell about
another (models that gained and lost together on the reference tasks share their labels'
evidence, and BMA's own luck on the labelled items moves every difference at once). V is the
per-item covariance of the label differences y_m - y_b over the reference items (two models
that answer alike are compared precisely by few labels; their label noise is shared). N - n
are the unlabelled items the choice is scored on. Everything is in the coordinates of the new
task's BMA b (the differences x_m - x_b; b's own row and column are zero).

With S and V diagonal this is a per-candidate precision-weighted update, gain_m = d0_m +
w_m (L_m - L_b - d0_m), w_m = S_mm / (S_mm + V_mm (1/n + 1/(N - n))), close to the rule
before (issue 19; docs/results.md measures both). The matrices take O(M^2) memory per
reference task and an M x M solve per task and configuration (M candidates, at most
stacking.MAX_LABEL_MODELS): 0.05 s per labelled switch fit at 78 candidates
(bench/bench_label_update.py).
"""

from __future__ import annotations

import numpy as np

from .calibration import pairwise_cov
from .scores import quiet_nanmean

#: per-item variance of y_m - y_b assumed for a model never labelled beside BMA (the most a
#: difference of two 0/1 labels can have: its labels then count least)
UNKNOWN_VARIANCE = 1.0


def posterior_gains(prior: np.ndarray, lab: np.ndarray, J: np.ndarray, S: np.ndarray,
                    V: np.ndarray, f: np.ndarray) -> np.ndarray:
    """E[d | L] for G groups of D label draws that share their matrices.

    prior (G, D, M) zero-label gains d0; lab (G, D, M) label differences to BMA; J (G, M)
    the candidates whose labels are read (not BMA; labelled in every draw of the group); S,
    V (G, M, M); f (G,) = 1/n + 1/(N - n). Returns (G, D, M): every candidate updated,
    including those in no J (through S's covariances)."""
    M = prior.shape[-1]
    both = J[:, :, None] & J[:, None, :]
    S_cols = np.where(J[:, None, :], S, 0.0)
    A = np.where(both, S + f[:, None, None] * V, 0.0)
    diag = np.arange(M)
    # outside J: identity rows (their x is 0); inside: a tiny ridge for duplicate models
    A[:, diag, diag] += np.where(J, 1e-9, 1.0)
    rhs = np.where(J[:, None, :], np.nan_to_num(lab - prior), 0.0)  # (G, D, M)
    x = np.linalg.solve(A, rhs.transpose(0, 2, 1))  # (G, M, D)
    return prior + np.einsum("gmn,gnd->gdm", S_cols, x)


def relative(P: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """Second moments of (x_m - x_b)(x_n - x_b) from those of x, P (G, M, M) or (M, M); b
    one per group (or one)."""
    if P.ndim == 2:
        return relative(P[None], np.atleast_1d(b))[0]
    b = np.broadcast_to(np.asarray(b), P.shape[:1])
    g = np.arange(len(P))
    col, row, bb = P[g, :, b], P[g, b, :], P[g, b, b]
    return P - col[:, :, None] - row[:, None, :] + bb[:, None, None]


def item_covariances(Y: np.ndarray, rows_of: list[np.ndarray], Z: np.ndarray) -> np.ndarray:
    """(len(Z), M, M) per reference task, the covariance (divided by n, not n - 1) of y_m
    and y_n over its n items labelled for both (nan: fewer than two)."""
    out = np.empty((len(Z), Y.shape[1], Y.shape[1]))
    for i, z in enumerate(Z):
        y = Y[rows_of[z]]
        has = (~np.isnan(y)).astype(float)
        n = has.T @ has
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i] = np.where(n > 1, pairwise_cov(y) * (n - 1) / n, np.nan)
    return out


def error_moments(E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group, the sums (G, M, M) of the outer products of the row-centred errors E
    (G, D, M) (nan: not valid) and their counts; row-centred so that each row's own
    baseline (its BMA's error) drops out."""
    E = E - quiet_nanmean(E, 2)[..., None]
    has = ~np.isnan(E)
    E0, h = np.where(has, E, 0.0), has.astype(float)
    return np.einsum("gdm,gdn->gmn", E0, E0), np.einsum("gdm,gdn->gmn", h, h)


def mean_positive_diagonal(K: np.ndarray) -> np.ndarray:
    """Mean of the positive diagonal entries of K (..., M, M) (0 for models never seen)."""
    d = np.diagonal(K, axis1=-2, axis2=-1)
    return d.sum(-1) / np.maximum((d > 0).sum(-1), 1)


def fill_unknown(V: np.ndarray) -> np.ndarray:
    """V with unknown (nan) covariances 0 and unknown variances UNKNOWN_VARIANCE."""
    eye = np.eye(V.shape[-1], dtype=bool)
    return np.where(np.isnan(V), np.where(eye, UNKNOWN_VARIANCE, 0.0), V)


__all__ = ["UNKNOWN_VARIANCE", "error_moments", "fill_unknown", "item_covariances",
           "mean_positive_diagonal", "posterior_gains", "relative"]
