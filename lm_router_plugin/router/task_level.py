"""The task-level S1: each model's accuracy on a task from many similar reference inputs.

S1 averages g, the kNN predictor's per-input correctness with k = 5 (the paper's item-level
constant). For the choice of one model for a whole task, the stacked switch reads

    S1_task(m) = mean over the task's docs x of  sum_j w_j y_jm / sum_j w_j,
    w_j = exp((sim(x, r_j) - 1) / h)   over the K most similar reference inputs r_j

(h = inf: the plain mean of the K), with h from BANDWIDTHS chosen by an inner
leave-one-task-out for the argmax choice (:func:`inner_choice_accuracy`, stacking.py).
:class:`TaskKernel` searches a reference pool once and gives every task's S1_task from the
other tasks, also with one more task left out (the strict evaluation's held-out task).

    >>> kernel = TaskKernel(X, Y, task_of, k=200)   # X (n, dim) unit norm, Y (n, M)
    >>> kernel.task_s1()                             # (H, D, M) each task from the others
    >>> kernel.task_s1(e)                            # ... and without task e
    >>> kernel.rows_s1(rows)                         # (H, M) a task of those rows
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .neighbors import topk_cosine
from .scores import argmax_with_ties

#: Reference inputs averaged per doc (the top-K most similar).
DEFAULT_K = 200
#: The bandwidth grid of the inner leave-one-task-out (cosine-similarity units; inf: the
#: uniform mean of the K neighbours).
BANDWIDTHS = (0.01, 0.02, 0.05, 0.1, 0.2, math.inf)
#: Extra neighbours kept per row beyond K, so that leaving one more task out is mostly
#: answered from the kept list (rows that lose too many are searched again, exactly).
SLACK = 200
#: Rows per block of the kernel estimates, and the most floats a block's products may hold
#: (2**24 float64: 128 MiB; many models mean fewer rows per block).
ROW_BLOCK = 2048
GATHER_FLOATS = 2**24
#: Label patterns (the rows where a model has a result) whose task sums come from summed
#: weights; models of rarer patterns (many models with scattered nan) get per-row estimates.
MAX_PATTERNS = 32
#: With keep_rows, every model's per-row kernel sums are kept where their numerators take at
#: most this many floats (H n M; 2**24 float64: 128 MiB, the normalisers H n (1 + models with
#: a missing result) more): leaving a second task out then costs only the entries it
#: changes (the strict evaluation does it once per held-out task).
KEEP_FLOATS = 2**24


def kernel_weights(sim: np.ndarray, h: float) -> np.ndarray:
    """(r, K) weights exp((sim - 1) / h) of neighbours with similarities ``sim`` (-inf: no
    neighbour, weight 0); h = inf gives 1 for every neighbour."""
    sim = np.asarray(sim, dtype=np.float64)
    valid = np.isfinite(sim)
    if math.isinf(h):
        return valid.astype(np.float64)
    # shifted by each row's best similarity (cancels in the normalised average) so that a
    # narrow kernel never underflows to all zeros
    top = row_tops(sim)[:, None]
    return np.where(valid, np.exp((np.where(valid, sim, 0.0) - top) / h), 0.0)


def _bandwidth_weights(sim: np.ndarray, bandwidths: Sequence[float]) -> np.ndarray:
    """(H, r, K) :func:`kernel_weights` of ``sim`` (r, K) at every bandwidth, the validity
    and the shift by the row's best similarity computed once (the same values)."""
    sim = np.asarray(sim, dtype=np.float64)
    valid = np.isfinite(sim)
    shifted = np.where(valid, sim - row_tops(sim)[:, None], -np.inf)  # no neighbour: exp(-inf) = 0
    out = np.empty((len(bandwidths),) + sim.shape)
    for j, h in enumerate(bandwidths):
        if math.isinf(h):
            out[j] = valid
        else:
            np.exp(np.divide(shifted, h, out=out[j]), out=out[j])
    return out


def kernel_estimates(idx: np.ndarray, sim: np.ndarray, Y: np.ndarray,
                     bandwidths: Sequence[float]) -> np.ndarray:
    """(H, r, M) kernel-weighted mean correctness of each row's neighbours ``idx`` (r, K)
    (-1: none) with similarities ``sim``, per bandwidth; nan where a model has no labelled
    neighbour."""
    num, den, den_col = kernel_parts(idx, sim, Y, bandwidths)
    return _parts_ratio(num, den, den_col)


def kernel_parts(idx: np.ndarray, sim: np.ndarray, Y: np.ndarray, bandwidths: Sequence[float]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The numerators and normalisers of :func:`kernel_estimates`: num (H, r, M) the
    weighted sums of the neighbours' labels, den (H, r, C) the weights' sums (column 0) and,
    for each model with a missing result, the sum over its labelled neighbours (columns
    1..C-1), den_col (M,) each model's column. Weights are shifted by each row's best
    similarity (``row_tops``); estimate = num / den[..., den_col]."""
    from scipy import sparse

    Y = np.asarray(Y, dtype=np.float64)
    has = ~np.isnan(Y)
    Y0 = np.where(has, Y, 0.0)  # float64: sums over tasks add and drop rows exactly
    # the normaliser over labelled neighbours differs from the weights' sum only for the
    # models with a missing result: one product for those columns alone
    missing = np.flatnonzero(~has.all(axis=0))
    known = np.ascontiguousarray(has[:, missing], dtype=np.float64)
    den_col = np.zeros(Y.shape[1], dtype=np.int64)
    den_col[missing] = np.arange(1, len(missing) + 1)
    H, (r, K), M = len(bandwidths), idx.shape, Y.shape[1]
    num, den = np.empty((H, r, M)), np.empty((H, r, 1 + len(missing)))
    # rows per block: the block's (b H, M) products stay under GATHER_FLOATS floats
    block = max(1, min(ROW_BLOCK, GATHER_FLOATS // max(1, H * max(K, M))))
    for r0 in range(0, r, block):
        i = idx[r0:r0 + block]
        b = len(i)
        # one sparse (b H, n) matrix of weights, row (row, h) holding w_h at the row's
        # neighbours: a sparse-dense product sums their labels without gathering them
        w = np.stack([kernel_weights(sim[r0:r0 + block], h) for h in bandwidths], axis=1)
        cols = np.broadcast_to(np.maximum(i, 0)[:, None, :], w.shape)
        weights = sparse.csr_matrix((w.ravel(), cols.ravel(), np.arange(0, b * H * K + 1, K)),
                                    shape=(b * H, len(Y)))
        num[:, r0:r0 + b] = (weights @ Y0).reshape(b, H, M).transpose(1, 0, 2)
        parts = [w.reshape(b * H, K).sum(axis=1, keepdims=True)]
        if len(missing):
            parts.append(weights @ known)
        den[:, r0:r0 + b] = np.hstack(parts).reshape(b, H, -1).transpose(1, 0, 2)
    return num, den, den_col


def row_tops(sim: np.ndarray) -> np.ndarray:
    """(r,) the shift of :func:`kernel_weights`: each row's best finite similarity (0: none)."""
    sim = np.asarray(sim, dtype=np.float64)
    top = np.max(np.where(np.isfinite(sim), sim, -np.inf), axis=1)
    return np.where(np.isfinite(top), top, 0.0)


def _parts_ratio(num: np.ndarray, den: np.ndarray, den_col: np.ndarray) -> np.ndarray:
    """(H, r, M) num / den[..., den_col]; nan where the normaliser is 0."""
    d = den[..., den_col]
    return np.divide(num, d, out=np.full(num.shape, np.nan), where=d > 0)


class TaskKernel:
    """Task-level kernel S1 of a reference pool, searched once.

    X (n, dim) unit norm, Y (n, M) correctness or normalised values (nan: no result),
    task_of (n,) in 0..D-1. Each row keeps its k + slack nearest rows outside its own task;
    ``rows_s1`` and ``task_s1()`` read them, ``task_s1(e)`` (leaving task e out too: the
    strict evaluation's fit without its held-out task e) drops e's rows from those lists
    and searches again, exactly, the rows left with fewer than k (slack 0: every row that
    had a neighbour in e). For the models with kept per-row sums it only subtracts e's
    entries and adds those that move up into the first k (``_rest_rows_without``).
    ``neighbours`` = (idx, sim) (n, >= k + slack): lists already searched the same way
    (each row's nearest outside its own task, -1 / -inf padded).

    Only sums over rows are needed, so models are grouped by the rows where they have a
    result (their label pattern; one group when Y has no nan): within a group each row's
    estimate is linear in Y (its weights divided by their sum over the group's labelled
    neighbours), so a task's sum is its rows' normalised weights added per reference row,
    times Y once, O(n k H + H D n M), not every row's estimate, O(n k H M). Models of the
    patterns beyond the MAX_PATTERNS most common get per-row estimates (kernel_estimates),
    and so do all models where that is cheaper (more tasks than k, many patterns).
    Memory: n (k + slack) 12 bytes for the lists, n k 4 for their entries sorted by task
    (on the first ``task_s1(e)``) and, with ``keep_rows`` (what ``task_s1(e)`` reads), H n 8
    bytes per model of a rare pattern and per normaliser for its per-row sums.
    """

    def __init__(self, X: np.ndarray, Y: np.ndarray, task_of: np.ndarray, *,
                 k: int = DEFAULT_K, bandwidths: Sequence[float] = BANDWIDTHS,
                 n_tasks: int | None = None, slack: int = SLACK, keep_rows: bool = True,
                 neighbours: tuple[np.ndarray, np.ndarray] | None = None):
        self.X = np.asarray(X, dtype=np.float32)
        self.Y = np.asarray(Y, dtype=np.float64)
        self.task_of = np.asarray(task_of, dtype=np.int64)
        self.D = int(self.task_of.max()) + 1 if n_tasks is None else int(n_tasks)
        self.bandwidths = tuple(float(h) for h in bandwidths)
        if neighbours is not None:  # the fit's own search (same lists, >= k + slack wide)
            self.deep_idx = neighbours[0][:, :k + slack]
            self.deep_sim = neighbours[1][:, :k + slack]
        else:
            self.deep_idx, self.deep_sim = topk_cosine(self.X, self.X, k + slack,
                                                       query_groups=self.task_of,
                                                       ref_groups=self.task_of)
        self.deep_task = np.where(self.deep_idx >= 0,
                                  self.task_of[np.maximum(self.deep_idx, 0)], -1)
        self.k = min(k, self.deep_idx.shape[1])
        self.keep_rows = keep_rows
        has = ~np.isnan(self.Y)
        # at most MAX_PATTERNS groups, fewer with many rows (a (groups, H, n) float array)
        most = min(MAX_PATTERNS, max(1, 2 * GATHER_FLOATS // (len(self.bandwidths) * len(has))))
        self.groups, self.known, self.rest = _label_patterns(has, most)
        # the per-task sums cost about D (patterns + their models) per reference row and
        # bandwidth, the per-row estimates k models per row: with many tasks (D > k) or
        # many label patterns the per-row path is the cheaper one (same results)
        grouped = sum(len(g) for g in self.groups)
        # with keep_rows, every model's per-row kernel sums where they fit in KEEP_FLOATS:
        # task_s1(e) then updates them by the entries a left-out task changes instead of
        # summing k per row again (the strict evaluation's leave-two-tasks-out, once per
        # held-out task)
        kept_fits = keep_rows and len(self.bandwidths) * self.Y.size <= KEEP_FLOATS
        if self.groups and (kept_fits or self.D * (len(self.groups) + grouped)
                            > self.k * self.Y.shape[1]):
            self.groups, self.known = [], np.zeros((len(has), 0))
            self.rest = np.arange(self.Y.shape[1])
        # each group's labels (nan: 0, weighed by the row's normaliser over labelled ones)
        Y0 = self.Y if has.all() else np.where(has, self.Y, 0.0)
        self.group_Y = [Y0 if len(g) == Y0.shape[1] else np.ascontiguousarray(Y0[:, g])
                        for g in self.groups]
        # each row's estimate from its k nearest rows outside its own task, summed per task;
        # the rest models' per-row numerators and normalisers (kernel_parts, (H, n, .))
        # kept for task_s1(e), with each row's weight shift
        idx, sim = self.deep_idx[:, :self.k], self.deep_sim[:, :self.k]
        self.sums, self.counts = self._group_sums(idx, sim, self.task_of, self.D)
        self.rest_parts = None
        if len(self.rest):
            add_s, add_c, self.rest_parts = self._rest_sums(idx, sim, self.task_of, self.D,
                                                            keep=keep_rows)
            self.sums[:, :, self.rest] += add_s
            self.counts[:, :, self.rest] += add_c
        # each row's weight shift, which the kept sums carry (what task_s1(e) adds to them)
        self.tops = row_tops(sim) if self.rest_parts is not None else None
        self._entries_by_task = None  # (order, bounds): the top-k entries sorted by task

    def rows_s1(self, rows: np.ndarray) -> np.ndarray:
        """(H, M) the kernel S1 of a task made of ``rows`` (all of one task), from
        references outside that task: the mean of their rows' estimates."""
        rows = np.asarray(rows)
        if len(rows) and np.array_equal(np.sort(rows),
                                        np.flatnonzero(self.task_of == self.task_of[rows[0]])):
            return _ratio(self.sums, self.counts)[:, self.task_of[rows[0]]]  # the whole task
        idx, sim = self.deep_idx[rows, :self.k], self.deep_sim[rows, :self.k]
        one = np.zeros(len(rows), dtype=np.int64)
        sums, counts = self._group_sums(idx, sim, one, 1)
        if len(self.rest):
            add_s, add_c = (_task_sums(self._kept_rest_rows(rows), one, 1)
                            if self.rest_parts is not None
                            else self._rest_sums(idx, sim, one, 1)[:2])
            sums[:, :, self.rest] += add_s
            counts[:, :, self.rest] += add_c
        return _ratio(sums, counts)[:, 0]

    def task_s1(self, exclude: int | None = None) -> np.ndarray:
        """(H, D, M) each task's kernel S1 from references outside it and outside task
        ``exclude`` (None: only itself); nan for the excluded task."""
        if exclude is None:
            return _ratio(self.sums, self.counts)
        if not self.keep_rows:
            raise ValueError("TaskKernel(keep_rows=False) cannot leave a second task out")
        e = int(exclude)
        kk = self.k
        hit, removed = self._entries_in(e)
        sums, counts = self.sums.copy(), self.counts.copy()
        tasks = self.task_of[hit]
        if len(hit) and self.groups:
            idx, sim = _without_task(self.X, self.task_of, hit, e, self.deep_idx,
                                     self.deep_sim, self.deep_task, kk)
            grouped = np.ones(self.Y.shape[1], dtype=bool)
            grouped[self.rest] = False
            if 2 * len(hit) > len(self.X):  # most rows changed: sum every row again
                all_idx, all_sim = self.deep_idx[:, :kk].copy(), self.deep_sim[:, :kk].copy()
                all_idx[hit], all_sim[hit] = idx, sim
                new_s, new_c = self._group_sums(all_idx, all_sim, self.task_of, self.D)
                sums[:, :, grouped] = new_s[:, :, grouped]
                counts[:, :, grouped] = new_c[:, :, grouped]
            else:  # the changed rows' sums with their new lists minus with their old ones
                add_s, add_c = self._group_sums(idx, sim, tasks, self.D)
                sub_s, sub_c = self._group_sums(self.deep_idx[hit, :kk],
                                                self.deep_sim[hit, :kk], tasks, self.D)
                sums += add_s - sub_s
                counts += add_c - sub_c
        if len(hit) and len(self.rest):
            # the rows' new and old estimates summed per task in one pass
            R = len(self.rest)
            both_s, both_c = _task_sums(np.concatenate(
                [self._rest_rows_without(e, hit, removed), self._kept_rest_rows(hit)], axis=2),
                tasks, self.D)
            sums[:, :, self.rest] += both_s[..., :R] - both_s[..., R:]
            counts[:, :, self.rest] += both_c[..., :R] - both_c[..., R:]
        out = _ratio(sums, counts)
        out[:, e] = np.nan
        return out

    def _entries_in(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        """(hit, removed): the rows (sorted) with a top-k neighbour in task e, and for each
        of those entries (row, position) as flat indices into the (n, k) lists."""
        kk = self.k
        if self._entries_by_task is None:  # one sort, then each task's entries by a slice
            flat = self.deep_task[:, :kk].ravel()
            order = np.argsort(flat, kind="stable")
            order = order.astype(np.int32) if flat.size < 2**31 else order  # half the memory
            self._entries_by_task = order, np.searchsorted(flat[order], np.arange(self.D + 1))
        order, bounds = self._entries_by_task
        removed = order[bounds[e]:bounds[e + 1]]  # row-major: rows ascending
        return np.unique(removed // kk), removed

    def _kept_rest_rows(self, rows: np.ndarray) -> np.ndarray:
        """(H, len(rows), len(rest)) the kept per-row estimates of the rest models."""
        num, den, den_col = self.rest_parts
        return _parts_ratio(num[:, rows], den[:, rows], den_col)

    def _rest_rows_without(self, e: int, hit: np.ndarray, removed: np.ndarray) -> np.ndarray:
        """(H, len(hit), len(rest)) the rest models' per-row estimates of the rows ``hit``
        with task e left out of their lists: the kept numerators and normalisers minus the
        weights of e's entries (``removed``), plus those of the entries that move up into
        the first k (from the slack). Rows whose slack runs out, and rows that lose nearly
        all of their weight (the sum of what is left would carry the subtraction's rounding),
        are searched and summed again, exactly."""
        from scipy import sparse

        kk, n = self.k, len(self.X)
        num, den, den_col = self.rest_parts
        out_row, out_pos = np.divmod(removed, kk)
        local = np.searchsorted(hit, out_row)
        n_out = np.bincount(local, minlength=len(hit))
        # the entries that move up: each row's first n_out non-e entries beyond the k
        s_idx, s_task = self.deep_idx[hit, kk:], self.deep_task[hit, kk:]
        ok = (s_idx >= 0) & (s_task != e)
        rank = np.cumsum(ok, axis=1)
        up_r, up_c = np.nonzero(ok & (rank <= n_out[:, None]))
        full = self.deep_idx[hit, -1] >= 0  # else the lists already hold every eligible row
        short = full & ((rank[:, -1] if rank.shape[1] else 0) < n_out)
        rows_of = np.concatenate([local, up_r])
        refs = np.concatenate([self.deep_idx[out_row, out_pos], s_idx[up_r, up_c]])
        sims = np.concatenate([self.deep_sim[out_row, out_pos],
                               self.deep_sim[hit[up_r], kk + up_c]])
        sign = np.concatenate([-np.ones(len(removed)), np.ones(len(up_r))])
        H, E = len(self.bandwidths), len(refs)
        shifted = sims.astype(np.float64) - self.tops[hit][rows_of]
        w = np.stack([sign if math.isinf(h) else sign * np.exp(shifted / h)
                      for h in self.bandwidths], axis=1)  # (E, H), in each row's kept shift
        # one sparse (hit H, n) matrix of the signed weights, row (row, h)
        at = (np.repeat(rows_of * H, H) + np.tile(np.arange(H), E), np.repeat(refs, H))
        delta = sparse.csr_matrix((w.ravel(), at), shape=(len(hit) * H, n))
        Yr = self.Y[:, self.rest]
        has = ~np.isnan(Yr)
        d_num = (delta @ np.where(has, Yr, 0.0)).reshape(len(hit), H, -1).transpose(1, 0, 2)
        missing = np.flatnonzero(den_col > 0)
        d_den = [np.asarray(delta.sum(axis=1))]
        if len(missing):
            d_den.append(delta @ has[:, missing].astype(np.float64))
        d_den = np.hstack(d_den).reshape(len(hit), H, -1).transpose(1, 0, 2)
        new_num, old_den = num[:, hit] + d_num, den[:, hit]
        new_den = old_den + d_den
        # more than 1 - 1e-6 of a normaliser gone: recompute (errors stay under ~1e-10)
        lost = (new_den < 1e-6 * old_den).any(axis=(0, 2))
        new_den[np.abs(new_den) < 1e-300] = 0.0
        out = _parts_ratio(new_num, new_den, den_col)
        again = np.flatnonzero(short | lost)
        if len(again):
            idx, sim = _without_task(self.X, self.task_of, hit[again], e, self.deep_idx,
                                     self.deep_sim, self.deep_task, kk)
            out[:, again] = kernel_estimates(idx, sim, Yr, self.bandwidths)
        return out

    def _group_sums(self, idx: np.ndarray, sim: np.ndarray, tasks: np.ndarray, D: int
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(sums, counts), each (H, D, M) (0 for the rest models): per task of ``tasks``
        (r,), the sum of its rows' estimates from their neighbours ``idx``, ``sim`` (r, k)
        and their number (rows with a labelled neighbour), for the grouped models."""
        H, n, M = len(self.bandwidths), len(self.Y), self.Y.shape[1]
        P, K = len(self.groups), idx.shape[1]
        sums, counts = np.zeros((H, D, M)), np.zeros((H, D, M))
        if not P or not len(idx):
            return sums, counts
        # per task a dense pass over the n reference rows, against k neighbours per row: a
        # few rows of many tasks (a held-out task's rows, those a left-out task touched)
        # are summed from their per-row estimates instead (same values)
        if len(np.unique(tasks)) * n > len(idx) * K:
            grouped = np.concatenate(self.groups)
            add_s, add_c, _ = self._rest_sums(idx, sim, tasks, D, models=grouped)
            sums[:, :, grouped], counts[:, :, grouped] = add_s, add_c
            return sums, counts
        from scipy import sparse

        # rows per block: a few (H, b, K) arrays under GATHER_FLOATS floats; tasks per
        # product: the (P, tasks, H, n) weights on the reference rows too
        block = max(1, GATHER_FLOATS // (4 * H * max(1, K)))
        per_product = max(1, GATHER_FLOATS // (P * H * n))
        order = np.argsort(tasks, kind="stable")
        bounds = np.searchsorted(tasks[order], np.arange(D + 1))
        for t0 in range(0, D, per_product):
            chunk = range(t0, min(D, t0 + per_product))
            agg = np.zeros((P, len(chunk), H, n))  # normalised weights per reference row
            hits = np.zeros((len(chunk), H, P))  # rows with a labelled neighbour
            for c, t in enumerate(chunk):
                rows_t = order[bounds[t]:bounds[t + 1]]
                for r0 in range(0, len(rows_t), block):
                    rows = rows_t[r0:r0 + block]
                    b = len(rows)
                    i = np.maximum(idx[rows], 0).ravel()  # -1 (none): weight 0
                    w = _bandwidth_weights(sim[rows], self.bandwidths)  # (H, b, K)
                    for j in range(H):
                        # (b, n) weights; each row's normaliser over the neighbours that
                        # each group has labels of, and the normalised weights per
                        # reference row: W.T @ (1 / den), every group in one product
                        W = sparse.csr_matrix((w[j].ravel(), i, np.arange(0, b * K + 1, K)),
                                              shape=(b, n))
                        den = W @ self.known  # (b, P)
                        ok = den > 0
                        inv = np.divide(1.0, den, out=np.zeros_like(den), where=ok)
                        agg[:, c, j] += (W.T @ inv).T
                        hits[c, j] += ok.sum(axis=0)
            for p, models in enumerate(self.groups):
                # written (Y.T @ weights.T).T: threaded OpenBLAS on a busy 2-core machine
                # took up to 7x longer for weights @ Y at 1,000 models
                prod = (self.group_Y[p].T @ agg[p].reshape(len(chunk) * H, n).T).T
                prod = prod.reshape(len(chunk), H, len(models)).transpose(1, 0, 2)
                sums[:, chunk.start:chunk.stop, models] = prod
                counts[:, chunk.start:chunk.stop, models] = hits[:, :, p].T[:, :, None]
        return sums, counts

    def _rest_sums(self, idx: np.ndarray, sim: np.ndarray, tasks: np.ndarray, D: int,
                   keep: bool = False, models: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, tuple | None]:
        """(sums, counts) (H, D, len(models)) as in _group_sums for ``models`` (None: those
        of rare label patterns), from their per-row estimates; if keep, also their
        kernel_parts (num, den, den_col) over all rows."""
        models = self.rest if models is None else models
        H, R = len(self.bandwidths), len(models)
        Yr = self.Y[:, models]
        sums, counts = np.zeros((H, D, R)), np.zeros((H, D, R))
        C = 1 + int(np.isnan(Yr).any(axis=0).sum())  # normaliser columns (kernel_parts)
        kept = (np.empty((H, len(idx), R)), np.empty((H, len(idx), C))) if keep else None
        den_col = np.zeros(R, dtype=np.int64)
        for r0 in range(0, len(idx), ROW_BLOCK):
            rows = slice(r0, r0 + ROW_BLOCK)
            num, den, den_col = kernel_parts(idx[rows], sim[rows], Yr, self.bandwidths)
            add_s, add_c = _task_sums(_parts_ratio(num, den, den_col), tasks[rows], D)
            sums += add_s
            counts += add_c
            if keep:
                kept[0][:, rows], kept[1][:, rows] = num, den
        return sums, counts, (kept + (den_col,) if keep else None)


def _label_patterns(has: np.ndarray, most: int
                    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Models grouped by the rows where they have a result (``has`` (n, M)): the ``most``
    largest groups (model indices), their labelled rows (n, groups) (1.0: a result), and
    the other models (per-row estimates)."""
    n, M = has.shape
    if M == 0:
        return [], np.zeros((n, 0)), np.zeros(0, dtype=np.int64)
    packed = np.ascontiguousarray(np.packbits(has, axis=0).T)  # (M, ceil(n / 8)) per model
    keys = packed.view(np.dtype((np.void, max(1, packed.shape[1]))))[:, 0]
    _, first, inverse, count = np.unique(keys, return_index=True, return_inverse=True,
                                         return_counts=True)
    inverse = inverse.ravel()
    top = np.argsort(-count, kind="stable")[:most]
    groups = [np.flatnonzero(inverse == g) for g in top]
    known = has[:, first[top]].astype(np.float64)
    rest = np.flatnonzero(~np.isin(inverse, top))
    return groups, known, rest


def _task_sums(values: np.ndarray, tasks: np.ndarray, D: int) -> tuple[np.ndarray, np.ndarray]:
    """(sums, counts), each (H, D, M): per task, the sum of the non-nan ``values`` (H, r, M)
    of its rows (``tasks`` (r,)) and their number."""
    onehot = np.zeros((D, len(tasks)))
    onehot[tasks, np.arange(len(tasks))] = 1.0
    has = ~np.isnan(values)
    sums = np.stack([onehot @ np.where(has[j], values[j], 0.0) for j in range(len(values))])
    counts = np.stack([onehot @ has[j].astype(float) for j in range(len(values))])
    return sums, counts


def _ratio(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return np.divide(sums, counts, out=np.full(sums.shape, np.nan), where=counts > 0.5)


def _without_task(X: np.ndarray, task_of: np.ndarray, rows: np.ndarray, e: int,
                  deep_idx: np.ndarray, deep_sim: np.ndarray, deep_task: np.ndarray,
                  k: int) -> tuple[np.ndarray, np.ndarray]:
    """(idx, sim) (len(rows), k): each row's k nearest rows outside its own task and e."""
    d_idx, d_sim, d_task = deep_idx[rows], deep_sim[rows], deep_task[rows]
    keep = (d_idx >= 0) & (d_task != e)
    # the kept list is exact when it has k entries, or when the deep list held every
    # eligible row (it is not full)
    complete = keep.sum(axis=1) >= k
    complete |= (d_idx < 0).any(axis=1)
    # the first k kept entries of each row, in order (a stable partition without a sort)
    pos = np.cumsum(keep, axis=1) - 1
    r, c = np.nonzero(keep & (pos < k))
    idx = np.full((len(rows), k), -1, dtype=d_idx.dtype)
    sim = np.full((len(rows), k), -np.inf, dtype=np.float32)
    idx[r, pos[r, c]], sim[r, pos[r, c]] = d_idx[r, c], d_sim[r, c]
    short = np.flatnonzero(~complete)
    if len(short):
        cols = np.flatnonzero(task_of != e)
        i2, s2 = topk_cosine(X[rows[short]], X[cols], k, query_groups=task_of[rows[short]],
                             ref_groups=task_of[cols])
        idx[short] = np.where(i2 >= 0, cols[np.maximum(i2, 0)], -1)
        sim[short] = s2
    return idx, sim


def choice_accuracy(scores: np.ndarray, accuracy: np.ndarray, allowed: np.ndarray,
                    tie: np.ndarray) -> float:
    """True accuracy of the argmax of ``scores`` (M,) among ``allowed`` models with a
    result (ties: higher ``tie``); nan when none."""
    ok = allowed & ~np.isnan(accuracy)
    if not ok.any():
        return math.nan
    pick = argmax_with_ties(np.where(ok, np.nan_to_num(scores, nan=-np.inf), -np.inf), tie)
    return float(accuracy[pick])


def inner_choice_accuracy(task_s1: np.ndarray, accuracy: np.ndarray, allowed: np.ndarray,
                          refs: Sequence[int]) -> np.ndarray:
    """(H,) per bandwidth, the mean over the tasks ``refs`` (those with a result) of the
    true accuracy (``accuracy`` (D, M)) of the argmax of ``task_s1`` (H, D, M) among the
    ``allowed`` (M,) models; ties go to the higher mean accuracy over the other ``refs``
    (to 12 decimals), then to the lower model index (:func:`choice_accuracy` for every task
    at once)."""
    A = accuracy[[z for z in refs if not np.isnan(accuracy[z]).all()]]  # (R, M)
    if len(A) == 0:
        return np.full(len(task_s1), np.nan)
    refs = [z for z in refs if not np.isnan(accuracy[z]).all()]
    has = ~np.isnan(A)
    total, count = np.where(has, A, 0.0).sum(0), has.sum(0)
    # each task's tie-break: the mean accuracy over the other reference tasks (0: none)
    rest = count[None, :] - has
    tie = np.where(rest > 0, (total[None, :] - np.where(has, A, 0.0)) / np.maximum(rest, 1),
                   0.0).round(12)  # equal means tie whatever the summation order
    ok = np.asarray(allowed, dtype=bool)[None, :] & has
    out = np.full(len(task_s1), np.nan)
    for j in range(len(task_s1)):
        scores = np.where(ok, np.nan_to_num(task_s1[j][refs], nan=-np.inf), -np.inf)
        top = scores == scores.max(axis=1, keepdims=True)
        tied = np.where(top, tie, -np.inf)
        pick = np.argmax(top & (tied == tied.max(axis=1, keepdims=True)), axis=1)
        picked = A[np.arange(len(A)), pick]
        valid = ok.any(axis=1) & ~np.isnan(picked)
        if valid.any():
            out[j] = float(picked[valid].mean())
    return out


def widest_best(scores: np.ndarray) -> int:
    """Index of the highest of ``scores`` (H,) (nan: never), ties to the later (wider)
    bandwidth; the last one when all are nan."""
    if np.isnan(scores).all():
        return len(scores) - 1
    best = np.nanmax(scores)
    return max(i for i, s in enumerate(scores) if s >= best - 1e-12)


__all__ = ["BANDWIDTHS", "DEFAULT_K", "SLACK", "TaskKernel", "choice_accuracy",
           "inner_choice_accuracy", "kernel_estimates", "kernel_parts", "kernel_weights",
           "row_tops", "widest_best"]
