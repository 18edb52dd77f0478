"""Correctness predictors g_m(x) = P(model m answers x correctly), for all M models at once.

The built-in :class:`KNNPredictor` (thesis §3.1.1) is registered under the entry-point group
``lm_router.predictors`` as ``knn``, like any third-party predictor::

    [project.entry-points."lm_router.predictors"]
    logistic = "my_pkg:LogisticPredictor"     # subclass CorrectnessPredictor

    >>> g = KNNPredictor(n_neighbors=5).fit(X_ref, Y_ref).predict_proba(X_new)   # (n_new, M)
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .errors import NotFittedError
from .neighbors import topk_cosine


class CorrectnessPredictor(ABC):
    """Contract: ``fit(X, Y)`` then ``predict_proba(Q)``.

    X: (n_ref, dim) unit-norm embeddings of the reference inputs.
    Y: (n_ref, M) correctness in {0, 1} with nan where a model has no result on an input.
    """

    name: str = ""

    @abstractmethod
    def fit(self, X: np.ndarray, Y: np.ndarray) -> CorrectnessPredictor:
        """Learn from the reference pool; returns self."""

    @abstractmethod
    def predict_proba(self, Q: np.ndarray) -> np.ndarray:
        """(n_q, dim) -> (n_q, M) predicted P(correct) in [0, 1]."""

    def predict_leave_group_out(self, groups: np.ndarray) -> np.ndarray:
        """(n_ref, M): g for every reference input from a fit without its own group (task).

        The default refits once per group; subclasses may share work across groups.
        """
        X, Y = self.X_, self.Y_
        out = np.empty(Y.shape, dtype=float)
        for group in np.unique(groups):
            inside = groups == group
            clone = type(self)(**self.get_params()).fit(X[~inside], Y[~inside])
            out[inside] = clone.predict_proba(X[inside])
        return out

    def get_params(self) -> dict:
        return {}

    def _check_fitted(self) -> None:
        if not hasattr(self, "Y_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. "
                                 "Call 'fit' first.")


class KNNPredictor(CorrectnessPredictor):
    """g_m(x) = mean correctness of model m on the k nearest (cosine) reference inputs.

    One neighbour search serves all M models. Neighbours without a label for m are skipped;
    a model with no labelled neighbour at all gets its mean reference accuracy (its prior).

    Args:
        n_neighbors: k (METHOD.md: 5).
    """

    name = "knn"

    def __init__(self, n_neighbors: int = 5):
        self.n_neighbors = n_neighbors

    def get_params(self) -> dict:
        return {"n_neighbors": self.n_neighbors}

    def fit(self, X: np.ndarray, Y: np.ndarray) -> KNNPredictor:
        if int(self.n_neighbors) < 1:
            raise ValueError(f"n_neighbors must be >= 1, got {self.n_neighbors}")
        self.X_ = X
        self.Y_ = np.asarray(Y, dtype=np.float32)
        self.prior_ = label_mean(self.Y_)
        return self

    def predict_proba(self, Q: np.ndarray) -> np.ndarray:
        self._check_fitted()
        idx, _ = topk_cosine(Q, self.X_, self.n_neighbors)
        return self.from_neighbors(idx)

    def predict_leave_group_out(self, groups: np.ndarray) -> np.ndarray:
        self._check_fitted()
        idx, _ = topk_cosine(self.X_, self.X_, self.n_neighbors, query_groups=groups,
                             ref_groups=groups)
        return self.from_neighbors(idx, prior=self.group_out_prior(groups))

    def group_out_prior(self, groups: np.ndarray) -> np.ndarray:
        """(n_ref, M): each model's mean label over the reference rows outside each row's own
        group, the prior of a leave-group-out prediction (no leak from the held-out group)."""
        labelled = ~np.isnan(self.Y_)
        values = np.where(labelled, self.Y_, 0).astype(np.float64)
        codes, inverse = np.unique(groups, return_inverse=True)
        per_group_sum = np.zeros((len(codes), self.Y_.shape[1]))
        per_group_n = np.zeros_like(per_group_sum)
        np.add.at(per_group_sum, inverse, values)
        np.add.at(per_group_n, inverse, labelled)
        out_sum = per_group_sum.sum(0) - per_group_sum
        out_n = per_group_n.sum(0) - per_group_n
        prior = np.divide(out_sum, out_n, out=np.zeros_like(out_sum), where=out_n > 0)
        return prior[inverse]

    def from_neighbors(self, idx: np.ndarray, Y: np.ndarray | None = None,
                       prior: np.ndarray | None = None) -> np.ndarray:
        """g from precomputed neighbour rows. idx (n, k) into Y (n_ref, M) -> (n, M).

        Entries of -1 in ``idx`` (no neighbour) count as unlabelled. ``prior`` ((M,) or
        (n, M); default the mean label of the fitted pool) is used where no neighbour has a
        label for a model.
        """
        Y = self.Y_ if Y is None else Y
        prior = self.prior_ if prior is None else prior
        labels = Y[np.maximum(idx, 0)]  # (n, k, M)
        labelled = ~np.isnan(labels) & (idx >= 0)[:, :, None]
        total = np.where(labelled, labels, 0).sum(axis=1, dtype=np.float64)
        count = labelled.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1),
                            np.broadcast_to(prior, count.shape))


def label_mean(Y: np.ndarray, axis: int = 0) -> np.ndarray:
    """nanmean of labels along ``axis``, 0 where a column has no label (and no warning)."""
    labelled = ~np.isnan(Y)
    n = labelled.sum(axis=axis)
    total = np.where(labelled, Y, 0).sum(axis=axis, dtype=np.float64)
    return np.divide(total, n, out=np.zeros(total.shape), where=n > 0)
