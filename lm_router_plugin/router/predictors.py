"""Correctness predictors g_m(x) = P(model m answers x correctly), for all M models at once.

The built-in :class:`KNNPredictor` (thesis §3.1.1) is registered under the entry-point group
``lm_router.predictors`` as ``knn``, like any third-party predictor::

    [project.entry-points."lm_router.predictors"]
    logistic = "my_pkg:LogisticPredictor"     # subclass CorrectnessPredictor

    >>> g = KNNPredictor(n_neighbors=5).fit(X_ref, Y_ref).predict_proba(X_new)   # (n_new, M)

A predictor needs only ``__init__`` (keyword parameters stored under their own names, as in
scikit-learn), ``fit`` and ``predict_proba``. Calibration and the leave-one-task-out
evaluation ask it for :meth:`~CorrectnessPredictor.predict_left_out`, which by default
refits a clone per left-out set; the kNN overrides it with one shared neighbour search.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import NotFittedError, PluginOutputError
from .neighbors import GroupedNeighbors, merge_topk, topk_cosine
from .neighbors import in_groups as _in_groups


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

    # parameters (scikit-learn convention) ---------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        """Keyword parameters of ``__init__``."""
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def get_params(self) -> dict[str, Any]:
        """{parameter: value} read from the attributes of the same names."""
        return {name: getattr(self, name) for name in self.param_names() if hasattr(self, name)}

    def clone(self) -> CorrectnessPredictor:
        """An unfitted copy with the same parameters."""
        return type(self)(**self.get_params())

    # leave-out predictions --------------------------------------------------------------------
    def predict_left_out(self, X: np.ndarray, Y: np.ndarray, groups: np.ndarray,
                         rows: np.ndarray, exclude: Sequence = (), extra: np.ndarray | None = None,
                         neighbors: GroupedNeighbors | None = None) -> np.ndarray:
        """g for reference rows, each from a fit that never saw its own group.

        Args:
            X, Y: (n, dim), (n, M) the reference pool.
            groups: (n,) group (task) of each row.
            rows: (r,) rows to predict.
            exclude: groups also left out of every fit (e.g. a held-out task).
            extra: rows added to every fit although their group is left out (in-task
                labels); must not overlap ``rows``.
            neighbors: a shared neighbour index over (X, groups), for predictors that use it.

        Returns:
            (r, M). The default refits a clone once per group of ``rows``; the training rows
            keep their original order, then ``extra`` (so ties resolve as in a plain fit).
        """
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), Y.shape[1]), dtype=float)
        bounds = value_bounds(Y)
        base = ~_in_groups(groups, exclude)
        extra = np.empty(0, dtype=np.int64) if extra is None else np.asarray(extra, np.int64)
        for group in np.unique(groups[rows]):
            train = np.flatnonzero(base & (groups != group))
            train = np.concatenate([np.setdiff1d(train, extra), extra])
            where = groups[rows] == group
            model = self.clone().fit(X[train], Y[train])
            out[where] = checked_g(model.predict_proba(X[rows[where]]), int(where.sum()),
                                   Y.shape[1], self, bounds)
        return out

    def use_index(self, index) -> None:
        """Search the fitted pool through ``index`` (a neighbors.NeighborIndex over the X
        given to ``fit``). Default: ignored (a predictor without neighbour search)."""

    def predict_searched(self, Q: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """g for queries whose nearest fitted reference rows ``idx`` (n_q, K), sorted, were
        already found (the router searches once for g and for u). Default: ignore them."""
        return self.predict_proba(Q)

    def predict_leave_group_out(self, groups: np.ndarray) -> np.ndarray:
        """(n_ref, M): g for every fitted reference row from a fit without its own group."""
        self._check_fitted()
        return self.predict_left_out(self.X_, self.Y_, np.asarray(groups),
                                     np.arange(len(self.Y_)))

    def _check_fitted(self) -> None:
        if not hasattr(self, "Y_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. "
                                 "Call 'fit' first.")


class KNNPredictor(CorrectnessPredictor):
    """g_m(x) = mean correctness of model m on the k nearest (cosine) reference inputs.

    One neighbour search serves all M models. Neighbours without a label for m are skipped;
    a model with no labelled neighbour at all gets its mean label over the fit's rows (its
    prior).

    Args:
        n_neighbors: k (METHOD.md: 5).
    """

    name = "knn"

    def __init__(self, n_neighbors: int = 5):
        # checked here, not only in fit: settings.validate_params builds the predictor to
        # report a bad config value before any embedding or fitting
        _check_n_neighbors(n_neighbors)
        self.n_neighbors = n_neighbors

    def fit(self, X: np.ndarray, Y: np.ndarray) -> KNNPredictor:
        _check_n_neighbors(self.n_neighbors)
        self.X_ = X
        self.Y_ = np.asarray(Y, dtype=np.float32)
        self.prior_ = label_mean(self.Y_)
        self.index_ = None
        return self

    def use_index(self, index) -> None:
        if index is not None and index.n_ref != len(self.Y_):
            raise ValueError(f"index over {index.n_ref} rows, predictor fitted on "
                             f"{len(self.Y_)}")
        self.index_ = index

    def predict_proba(self, Q: np.ndarray) -> np.ndarray:
        self._check_fitted()
        index = getattr(self, "index_", None)
        if index is not None:
            idx, _ = index.search(Q, self.n_neighbors)
        else:
            idx, _ = topk_cosine(Q, self.X_, self.n_neighbors)
        return self.from_neighbors(idx)

    def predict_searched(self, Q: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """g from an earlier search of the fitted pool (its first k columns), no new search."""
        self._check_fitted()
        if idx.shape[1] < min(self.n_neighbors, len(self.Y_)):
            return self.predict_proba(Q)
        return self.from_neighbors(idx[:, :self.n_neighbors])

    def predict_left_out(self, X, Y, groups, rows, exclude=(), extra=None, neighbors=None):
        """As the base class, exactly, from one shared neighbour index (no refit)."""
        k = _check_n_neighbors(self.n_neighbors)
        rows = np.asarray(rows, dtype=np.int64)
        groups = np.asarray(groups)
        Y = np.asarray(Y, dtype=np.float32)
        if neighbors is None or neighbors.K < min(k, len(X)):
            neighbors = GroupedNeighbors(X, groups, k, per_group=len(exclude) > 0)
        idx, sim = neighbors.query(rows, exclude)
        idx, sim = idx[:, :k], sim[:, :k]
        extra = np.empty(0, dtype=np.int64) if extra is None else np.asarray(extra, np.int64)
        Y_all = Y
        if len(extra):
            # extra rows rank after every pool row on ties, as when appended to a refit pool
            sim_extra = np.asarray(X[rows], np.float32) @ np.asarray(X[extra], np.float32).T
            ids = np.broadcast_to(len(Y) + np.arange(len(extra)), sim_extra.shape)
            idx, sim = merge_topk(idx, sim, ids, sim_extra, k)
            idx = np.where(np.isfinite(sim), idx, -1)
            Y_all = np.vstack([Y, Y[extra]])
        prior = _left_out_prior(Y, groups, rows, exclude, extra)
        return self.from_neighbors(idx, Y_all, prior)

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


def value_bounds(*Ys: np.ndarray) -> tuple[float, float]:
    """(lo, hi): [0, 1] widened to the finite values of the targets ``Ys`` (target "score":
    a held-out task or labels beyond the reference tasks' scale leave [0, 1])."""
    lo, hi = 0.0, 1.0
    for Y in Ys:
        Y = np.asarray(Y)
        if Y.size:
            with np.errstate(invalid="ignore"):
                lo, hi = min(lo, float(np.nanmin(Y))), max(hi, float(np.nanmax(Y)))
    return (lo if np.isfinite(lo) else 0.0), (hi if np.isfinite(hi) else 1.0)


def checked_g(g: Any, n: int, M: int, predictor: object,
              bounds: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """A predictor's g as an (n, M) float array, checked against the contract: values in
    [0, 1] or nan (no neighbour with a result), and not nan everywhere. ``bounds``: the
    range of the targets it was fitted on where they leave [0, 1] (value_bounds): g may
    then reach as far as they do.

    Raises:
        PluginOutputError: another shape or type, values outside [0, 1], or no prediction at
            all, naming the predictor (a wrong g would silently become a wrong choice)."""
    who = f"predictor '{getattr(predictor, 'name', '') or type(predictor).__name__}' " \
          f"({type(predictor).__module__}.{type(predictor).__qualname__})"
    try:
        out = np.asarray(g, dtype=float)
    except (TypeError, ValueError) as exc:
        raise PluginOutputError(f"{who} returned g that is not numeric ({exc})") from exc
    if out.shape != (n, M):
        raise PluginOutputError(f"{who} returned g of shape {out.shape}, expected ({n}, {M}): "
                                "one row per input, one column per model")
    finite = np.isfinite(out)
    lo, hi = bounds
    eps = 1e-6 * max(1.0, hi - lo)  # float32 targets, float64 averages
    if np.isinf(out).any() or (finite.any() and (out[finite].min() < lo - eps
                                                   or out[finite].max() > hi + eps)):
        raise PluginOutputError(f"{who} returned g outside [{lo:g}, {hi:g}] (from "
                                f"{np.nanmin(out):g} to {np.nanmax(out):g}): g is a "
                                "predicted P(correct) (or normalised value)")
    if out.size and not finite.any():
        raise PluginOutputError(f"{who} returned no prediction at all (g is nan everywhere)")
    return out


def build_predictor(cls: type[CorrectnessPredictor], params: dict[str, Any] | None, k: int
                    ) -> CorrectnessPredictor:
    """A new, unfitted ``cls`` with ``params``; the router's ``k`` as ``n_neighbors`` where
    the predictor takes one and ``params`` does not set it."""
    kwargs = dict(params or {})
    if "n_neighbors" in cls.param_names():
        kwargs.setdefault("n_neighbors", k)
    return cls(**kwargs)


def _check_n_neighbors(value: Any) -> int:
    """``value`` as an int; ValueError unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"n_neighbors must be an integer >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"n_neighbors must be >= 1, got {value}")
    return int(value)


def _left_out_prior(Y: np.ndarray, groups: np.ndarray, rows: np.ndarray, exclude: Sequence,
                    extra: np.ndarray) -> np.ndarray:
    """(r, M): each row's mean label over the rows its left-out fit sees (outside its own
    group and ``exclude``, plus ``extra``); 0 where a model has none (as ``label_mean``)."""
    codes, inverse = np.unique(groups, return_inverse=True)
    labelled = ~np.isnan(Y)
    values = np.where(labelled, Y, 0).astype(np.float64)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(codes)))
    group_sum = np.add.reduceat(values[order], starts, axis=0)
    group_n = np.add.reduceat(labelled[order].astype(np.float64), starts, axis=0)
    dropped = _in_groups(codes, exclude)
    base_sum = group_sum[~dropped].sum(0) + values[extra].sum(0)
    base_n = group_n[~dropped].sum(0) + labelled[extra].sum(0)
    own = inverse[rows]
    own_counted = ~dropped[own]  # own group not already dropped: subtract it
    row_sum = base_sum[None, :] - np.where(own_counted[:, None], group_sum[own], 0)
    row_n = base_n[None, :] - np.where(own_counted[:, None], group_n[own], 0)
    return np.divide(row_sum, row_n, out=np.zeros_like(row_sum), where=row_n > 0)


def label_mean(Y: np.ndarray, axis: int = 0) -> np.ndarray:
    """nanmean of labels along ``axis``, 0 where a column has no label (and no warning)."""
    labelled = ~np.isnan(Y)
    n = labelled.sum(axis=axis)
    total = np.where(labelled, Y, 0).sum(axis=axis, dtype=np.float64)
    return np.divide(total, n, out=np.zeros(total.shape), where=n > 0)
