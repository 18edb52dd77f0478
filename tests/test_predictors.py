"""Correctness predictors g_m (METHOD.md §3.1.1): kNN with missing labels and prior fallback."""

from __future__ import annotations

import numpy as np
import pytest

from lm_router_plugin.errors import NotFittedError
from lm_router_plugin.router.predictors import CorrectnessPredictor, KNNPredictor

NAN = np.nan


def _at(degrees: float) -> list[float]:
    return [np.cos(np.radians(degrees)), np.sin(np.radians(degrees))]


# Reference inputs on the unit circle at these angles (rows 0..6). Seen from the query at
# 0 degrees the 5 nearest are the rows at 0, 10, 20, 30, 40 degrees: rows 2, 6, 4, 0, 5.
# Seen from the query at 90 degrees: 90, 50, 40, 30, 20 degrees: rows 1, 3, 5, 0, 4.
ANGLES = [30, 90, 0, 50, 20, 40, 10]
X_REF = np.array([_at(a) for a in ANGLES], dtype=np.float32)
#                 row:  0    1    2    3    4    5    6
Y_REF = np.array([[1,   1,   0,   1,   1,   0,   1],      # model A
                  [NAN, 0,   1,   1,   NAN, 0,   NAN],    # model B: some labels missing
                  [NAN, 1,   NAN, 1,   NAN, NAN, NAN],    # model C: labels only far away
                  [NAN] * 7]).T                             # model D: no labels at all
Q = np.array([_at(0), _at(90)], dtype=np.float32)


def test_knn_k5_hand_case_with_missing_labels_and_prior():
    g = KNNPredictor(n_neighbors=5).fit(X_REF, Y_REF).predict_proba(Q)
    expected = np.array([
        # rows 2,6,4,0,5:  A 0,1,1,1,0 -> 3/5;  B 1,.,.,.,0 -> 1/2;
        # C no labelled neighbour -> prior mean(1, 1) = 1;  D no label anywhere -> 0
        [0.6, 0.5, 1.0, 0.0],
        # rows 1,3,5,0,4:  A 1,1,0,1,1 -> 4/5;  B 0,1,0,.,. -> 1/3;  C 1,1 -> 1
        [0.8, 1 / 3, 1.0, 0.0],
    ])
    np.testing.assert_allclose(g, expected, rtol=1e-6)
    assert g.shape == (2, 4)


def test_knn_k1_and_default_k_is_5():
    g1 = KNNPredictor(n_neighbors=1).fit(X_REF, Y_REF).predict_proba(Q)
    # nearest rows 2 and 1: A 0 / 1;  B 1 / 0;  C prior 1 / label 1;  D 0
    np.testing.assert_allclose(g1, [[0, 1, 1, 0], [1, 0, 1, 0]])
    assert KNNPredictor().n_neighbors == 5
    np.testing.assert_allclose(KNNPredictor().fit(X_REF, Y_REF).predict_proba(Q)[0],
                               [0.6, 0.5, 1.0, 0.0], rtol=1e-6)


def test_knn_prior_is_mean_reference_accuracy():
    p = KNNPredictor().fit(X_REF, Y_REF).prior_
    # A: 5 of 7; B: 2 of 4 labelled; C: 2 of 2; D: none -> 0
    np.testing.assert_allclose(p, [5 / 7, 0.5, 1.0, 0.0], rtol=1e-6)


def test_from_neighbors_treats_minus_one_as_unlabelled():
    knn = KNNPredictor(n_neighbors=3).fit(X_REF, Y_REF)
    idx = np.array([[2, 6, -1], [-1, -1, -1]])
    g = knn.from_neighbors(idx)
    # row 0: A (0 + 1) / 2;  B 1 (row 6 unlabelled);  C prior 1;  D 0.  row 1: all priors
    np.testing.assert_allclose(g, [[0.5, 1.0, 1.0, 0.0], [5 / 7, 0.5, 1.0, 0.0]], rtol=1e-6)


def _brute_force_loo(X, Y, groups, k):
    """g of each row from the k nearest rows of other groups (plain argsort), nan skipped;
    a model without labelled neighbour gets its mean over all rows (the fitted prior)."""
    prior = np.nan_to_num(np.nanmean(Y, axis=0))
    out = np.zeros(Y.shape)
    for i in range(len(X)):
        others = np.flatnonzero(groups != groups[i])
        sims = X[others] @ X[i]
        near = others[np.argsort(-sims, kind="stable")[:k]]
        for m in range(Y.shape[1]):
            labels = Y[near, m][~np.isnan(Y[near, m])]
            out[i, m] = labels.mean() if len(labels) else prior[m]
    return out


def test_knn_leave_group_out_matches_brute_force():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 6))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    Y = rng.integers(0, 2, size=(30, 3)).astype(float)
    Y[rng.random((30, 3)) < 0.3] = np.nan
    groups = np.repeat([0, 1, 2], 10)
    knn = KNNPredictor(n_neighbors=5).fit(X, Y)
    np.testing.assert_allclose(knn.predict_leave_group_out(groups),
                               _brute_force_loo(X, Y, groups, 5), rtol=1e-6)


class MeanPredictor(CorrectnessPredictor):
    """g_m(x) = mean label of m over the pool (ignores x): exercises the default LOO."""

    name = "mean"

    def fit(self, X, Y):
        self.X_, self.Y_ = X, np.asarray(Y, dtype=float)
        return self

    def predict_proba(self, Q):
        self._check_fitted()
        return np.tile(np.nanmean(self.Y_, axis=0), (len(Q), 1))


def test_default_leave_group_out_refits_without_the_group():
    X = np.eye(4)
    Y = np.array([[1, 0], [0, 0], [1, 1], [1, NAN]], dtype=float)
    groups = np.array([0, 0, 1, 2])
    got = MeanPredictor().fit(X, Y).predict_leave_group_out(groups)
    # group 0 rows see rows 2, 3: A (1 + 1) / 2 = 1, B 1 / 1;  group 1 sees rows 0, 1, 3:
    # A 2/3, B 0/2 = 0;  group 2 sees rows 0, 1, 2: A 2/3, B 1/3
    np.testing.assert_allclose(got, [[1, 1], [1, 1], [2 / 3, 0], [2 / 3, 1 / 3]])


def test_not_fitted_and_bad_k():
    with pytest.raises(NotFittedError, match="KNNPredictor instance is not fitted yet"):
        KNNPredictor().predict_proba(Q)
    with pytest.raises(NotFittedError):
        KNNPredictor().predict_leave_group_out(np.zeros(3))
    with pytest.raises(ValueError, match="n_neighbors must be >= 1, got 0"):
        KNNPredictor(n_neighbors=0).fit(X_REF, Y_REF)
    assert issubclass(NotFittedError, (ValueError, AttributeError))


def test_get_params_round_trip():
    knn = KNNPredictor(n_neighbors=3)
    assert knn.get_params() == {"n_neighbors": 3}
    assert KNNPredictor(**knn.get_params()).n_neighbors == 3
