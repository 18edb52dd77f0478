"""S1 with a similarity kernel over many neighbours: a task-level accuracy estimate.

S1 averages g, the kNN predictor's per-input correctness with k = 5 (the paper's item-level
constant). For the choice of one model for a whole task, averaging the reference
correctness over far more neighbours, weighted by similarity, estimates the task's accuracy
with less noise. Here each model's predicted accuracy on a task is

    S1k(m) = mean over the task's docs x of  sum_j w_j y_jm / sum_j w_j,
    w_j = exp((sim(x, r_j) - 1) / h)   over the K most similar reference inputs r_j

(the same weights as exp(sim / h) once normalised; h = inf is the plain mean of K
neighbours). The bandwidth h is chosen from a small grid by an inner leave-one-task-out on
the reference tasks, for the task-level decision: each reference task z is predicted from
the other reference tasks, and the h whose argmax choices had the highest mean accuracy
wins. The choice is the argmax of S1k among the allowed models (ties: the higher mean
reference accuracy). By default it is kept only when its S1k beats that of the best model on
average (BMA) by more than a margin tau, chosen with h by the same inner leave-one-task-out
(measured above the plain argmax on average, bench/task_kernel_results.py).

    >>> ref = KernelReference(X, Y, task_of)               # the reference pool
    >>> table = ref.leave_out()                             # inner LOTO estimates, cached
    >>> h, _ = choose_bandwidth(table, allowed)             # for a fit on all tasks
    >>> kernel_accuracy(Q, X, Y, k=200, h=h)                # (M,) for the new task's docs

Not registered as a decider (an experiment of issue 19, kept with its bench): over seven
sets (RouterDC, MMLU-Pro's 14 categories and 91 sources, each with all models, <= 13B and
without gemini-1.5-pro) it was within noise of the stacked switch (mean accuracy 0.5954 vs
0.5939; -0.51 [-1.52, 0] points on the 91 sources, +0.84 [-0.05, +1.75] on their <= 13B
models), so it does not become a row every evaluation pays for.
The class :class:`KernelS1` reads the reference pool from the view's
optional attributes ``reference`` (a :class:`KernelReference`; its ``exclude`` names the
tasks outside the fit, the held-out one in an evaluation) and ``embeddings`` (Q, (n, dim),
the embeddings of the docs of ``view.g``, in that order). A view without them (neither
``Router.task_view`` nor the evaluation sets them yet) is decided by the paper's S1 rule,
and the decision says so. Measured in bench/task_kernel_results.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .deciders import Decider, Decision, S1, TaskView
from .neighbors import topk_cosine
from .pool import rows_by_task
from .scores import argmax_with_ties, quiet_nanmean

#: Reference inputs averaged per doc (the top-K most similar).
DEFAULT_K = 200
#: The bandwidth grid of the inner leave-one-task-out (cosine-similarity units; inf: the
#: uniform mean of the K neighbours).
BANDWIDTHS = (0.01, 0.02, 0.05, 0.1, 0.2, math.inf)
#: Extra neighbours kept per row beyond K, so that leaving one more task out is mostly
#: answered from the kept list (rows that lose too many are searched again, exactly).
SLACK = 200
#: Margins tau of the switch to BMA: S1k's best model is kept only when its S1k beats
#: BMA's by more than tau; (h, tau) chosen together by the inner leave-one-task-out.
MARGINS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1)
#: Rows per block when the (rows, K, M) neighbour labels are gathered.
ROW_BLOCK = 2048


def kernel_weights(sim: np.ndarray, h: float) -> np.ndarray:
    """(r, K) weights exp((sim - 1) / h) of neighbours with similarities ``sim`` (-inf: no
    neighbour, weight 0); h = inf gives 1 for every neighbour."""
    sim = np.asarray(sim, dtype=np.float64)
    valid = np.isfinite(sim)
    if math.isinf(h):
        return valid.astype(np.float64)
    # shifted by each row's best similarity (cancels in the normalised average) so that a
    # narrow kernel never underflows to all zeros
    top = np.max(np.where(valid, sim, -np.inf), axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.where(valid, np.exp((np.where(valid, sim, 0.0) - top) / h), 0.0)


def kernel_estimates(idx: np.ndarray, sim: np.ndarray, Y: np.ndarray,
                     bandwidths: Sequence[float]) -> np.ndarray:
    """(H, r, M) kernel-weighted mean correctness of each row's neighbours ``idx`` (r, K)
    (-1: none) with similarities ``sim``, per bandwidth; nan where a model has no labelled
    neighbour."""
    Y = np.asarray(Y, dtype=np.float64)
    has = ~np.isnan(Y)
    any_missing = not has.all()
    Y0 = np.where(has, Y, 0.0).astype(np.float32)
    H, (r, _), M = len(bandwidths), idx.shape, Y.shape[1]
    out = np.full((H, r, M), np.nan)
    for r0 in range(0, r, ROW_BLOCK):
        i = idx[r0:r0 + ROW_BLOCK]
        safe = np.maximum(i, 0)
        labels = Y0[safe]  # (b, K, M)
        known = has[safe].astype(np.float32) if any_missing else None
        for j, h in enumerate(bandwidths):
            w = kernel_weights(sim[r0:r0 + ROW_BLOCK], h).astype(np.float32)  # (b, K)
            num = np.einsum("bk,bkm->bm", w, labels)
            den = (np.einsum("bk,bkm->bm", w, known) if known is not None
                   else np.repeat(w.sum(axis=1, keepdims=True), M, axis=1))
            out[j, r0:r0 + len(i)] = np.divide(num, den, out=np.full(num.shape, np.nan),
                                               where=den > 0)
    return out


def kernel_accuracy(Q: np.ndarray, X: np.ndarray, Y: np.ndarray, *, k: int = DEFAULT_K,
                    h: float | Sequence[float] = math.inf,
                    ref_rows: np.ndarray | None = None) -> np.ndarray:
    """Each model's predicted accuracy on a task: the mean over its docs (query embeddings
    Q (n, dim), unit norm) of the kernel-weighted correctness of their ``k`` most similar
    reference inputs (X (n_ref, dim), Y (n_ref, M)); ``ref_rows`` restricts the references
    (e.g. the rows outside a held-out task). (M,) for one h, (H, M) for a sequence."""
    X = np.asarray(X, dtype=np.float32)
    Y = np.asarray(Y, dtype=np.float64)
    if ref_rows is not None:
        ref_rows = np.asarray(ref_rows)
        if ref_rows.dtype == bool:
            ref_rows = np.flatnonzero(ref_rows)
        X, Y = X[ref_rows], Y[ref_rows]
    single = np.ndim(h) == 0
    hs = [float(h)] if single else [float(x) for x in h]
    idx, sim = topk_cosine(np.asarray(Q, dtype=np.float32), X, k)
    est = quiet_nanmean(kernel_estimates(idx, sim, Y, hs), axis=1)  # (H, M)
    return est[0] if single else est


@dataclass
class LeaveOutKernel:
    """Kernel S1 of every reference task from fits without it and one more task.

    s1k (H, D, D + 1, M): task z's kernel S1 per bandwidth, its docs' neighbours taken
    outside z and outside task e (e = D: no other task left out); nan for z = e.
    accuracy (D, M): the tasks' true accuracies. bandwidths (H,), k.
    """

    s1k: np.ndarray
    accuracy: np.ndarray
    bandwidths: tuple[float, ...]
    k: int

    @property
    def n_tasks(self) -> int:
        return self.accuracy.shape[0]


def leave_out_kernel(X: np.ndarray, Y: np.ndarray, task_of: np.ndarray, *,
                     k: int = DEFAULT_K, bandwidths: Sequence[float] = BANDWIDTHS,
                     n_tasks: int | None = None, slack: int = SLACK) -> LeaveOutKernel:
    """The :class:`LeaveOutKernel` of a reference pool (X (n, dim) unit norm, Y (n, M),
    task_of (n,) in 0..D-1): one search keeps each row's k + slack nearest rows outside its
    own task; leaving task e out too drops e's rows from that list (rows left with fewer
    than k are searched again without e), so every entry is what a pool without z and e
    gives."""
    X = np.asarray(X, dtype=np.float32)
    Y = np.asarray(Y, dtype=np.float64)
    task_of = np.asarray(task_of, dtype=np.int64)
    D = int(task_of.max()) + 1 if n_tasks is None else int(n_tasks)
    hs = tuple(float(h) for h in bandwidths)
    H, M = len(hs), Y.shape[1]
    rows_of = rows_by_task(task_of, D)
    accuracy = np.full((D, M), np.nan)
    for z, rows in enumerate(rows_of):
        if len(rows):
            accuracy[z] = quiet_nanmean(Y[rows])
    deep_idx, deep_sim = topk_cosine(X, X, k + slack, query_groups=task_of,
                                     ref_groups=task_of)
    deep_task = np.where(deep_idx >= 0, task_of[np.maximum(deep_idx, 0)], -1)
    kk = min(k, deep_idx.shape[1])
    base = kernel_estimates(deep_idx[:, :kk], deep_sim[:, :kk], Y, hs)  # (H, n, M)
    sums, counts = _task_sums(base, task_of, D)
    s1k = np.full((H, D, D + 1, M), np.nan)
    s1k[:, :, D] = _ratio(sums, counts)
    for e in range(D):
        hit = np.flatnonzero((task_of != e) & (deep_task[:, :kk] == e).any(axis=1))
        new_sums, new_counts = sums.copy(), counts.copy()
        if len(hit):
            idx, sim = _without_task(X, task_of, hit, e, deep_idx, deep_sim, deep_task, kk)
            est = kernel_estimates(idx, sim, Y, hs)
            add_s, add_c = _task_sums(est, task_of[hit], D)
            sub_s, sub_c = _task_sums(base[:, hit], task_of[hit], D)
            new_sums += add_s - sub_s
            new_counts += add_c - sub_c
        s1k[:, :, e] = _ratio(new_sums, new_counts)
        s1k[:, e, e] = np.nan
    return LeaveOutKernel(s1k=s1k, accuracy=accuracy, bandwidths=hs, k=k)


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
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    idx = np.take_along_axis(d_idx, order, 1)
    sim = np.take_along_axis(d_sim, order, 1)
    kept = np.take_along_axis(keep, order, 1)
    idx, sim = np.where(kept, idx, -1), np.where(kept, sim, -np.inf).astype(np.float32)
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


def inner_loto_accuracy(table: LeaveOutKernel, allowed: np.ndarray,
                        held_out: int | None = None) -> np.ndarray:
    """(H,) per bandwidth, the mean accuracy over the reference tasks (all tasks but
    ``held_out``) of the argmax choice of S1k, each task predicted from the other reference
    tasks (ties: higher mean accuracy over the tasks other than it and ``held_out``)."""
    D = table.n_tasks
    e = D if held_out is None else int(held_out)
    A = table.accuracy
    allowed = np.asarray(allowed, dtype=bool)
    refs = [z for z in range(D) if z != held_out and not np.isnan(A[z]).all()]
    out = np.full(len(table.bandwidths), np.nan)
    per_h = [[] for _ in table.bandwidths]
    for z in refs:
        others = [y for y in refs if y != z]
        tie = np.nan_to_num(quiet_nanmean(A[others])) if others else np.zeros(A.shape[1])
        for j in range(len(table.bandwidths)):
            per_h[j].append(choice_accuracy(table.s1k[j, z, e], A[z], allowed, tie))
    for j, values in enumerate(per_h):
        values = [v for v in values if not math.isnan(v)]
        out[j] = float(np.mean(values)) if values else math.nan
    return out


def choose_bandwidth(table: LeaveOutKernel, allowed: np.ndarray,
                     held_out: int | None = None) -> tuple[float, np.ndarray]:
    """(h, per-bandwidth inner accuracies): the bandwidth of highest inner leave-one-task-out
    accuracy (:func:`inner_loto_accuracy`); ties go to the wider bandwidth."""
    scores = inner_loto_accuracy(table, allowed, held_out)
    if np.isnan(scores).all():
        return table.bandwidths[-1], scores
    best = np.nanmax(scores)
    j = max(i for i, s in enumerate(scores) if s >= best - 1e-12)
    return table.bandwidths[j], scores


def switch_choice(scores: np.ndarray, allowed: np.ndarray, tie: np.ndarray,
                  tau: float) -> tuple[int, int, int]:
    """(choice, best, bma): the allowed model of highest ``scores`` (ties: higher ``tie``,
    the mean reference accuracy) if its score beats BMA's (highest ``tie``) by more than
    ``tau``, else BMA."""
    allowed = np.asarray(allowed, dtype=bool)
    s = np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf)
    best = argmax_with_ties(np.where(allowed, s, -np.inf), tie)
    bma = argmax_with_ties(np.where(allowed, tie, -np.inf), tie)
    return (best if s[best] - s[bma] > tau + 1e-12 else bma), best, bma


def choose_switch(table: LeaveOutKernel, allowed: np.ndarray, held_out: int | None = None,
                  margins: Sequence[float] = MARGINS) -> tuple[float, float, float]:
    """(h, tau, inner accuracy): the bandwidth and margin of the switch to BMA
    (:func:`switch_choice`) of highest mean accuracy over the reference tasks (all but
    ``held_out``), each decided from the other reference tasks (BMA and ties from their
    mean accuracies). Ties go to the first in grid order of h, then the smaller tau."""
    D = table.n_tasks
    e = D if held_out is None else int(held_out)
    A = table.accuracy
    allowed = np.asarray(allowed, dtype=bool)
    refs = [z for z in range(D) if z != held_out and not np.isnan(A[z]).all()]
    ties = {}
    for z in refs:
        others = [y for y in refs if y != z]
        ties[z] = np.nan_to_num(quiet_nanmean(A[others])) if others else np.zeros(A.shape[1])
    best, pick = -np.inf, (table.bandwidths[-1], math.inf)
    for j, h in enumerate(table.bandwidths):
        for tau in margins:
            accs = [A[z, switch_choice(table.s1k[j, z, e], allowed & ~np.isnan(A[z]),
                                       ties[z], tau)[0]] for z in refs]
            score = float(np.mean(accs)) if accs else -np.inf
            if score > best + 1e-12:
                best, pick = score, (h, tau)
    return pick[0], pick[1], best


@dataclass
class KernelReference:
    """The reference pool a :class:`KernelS1` decision needs: X (n, dim) unit-norm
    embeddings, Y (n, M) correctness (nan: no result), task_of (n,) task index, exclude the
    tasks outside the fit (at most one: the evaluation's held-out task). Leave-out tables
    are cached in ``cache``, which ``dataclasses.replace(ref, exclude=(d,))`` shares."""

    X: np.ndarray
    Y: np.ndarray
    task_of: np.ndarray
    exclude: tuple[int, ...] = ()
    cache: dict = field(default_factory=dict, repr=False)

    @property
    def n_tasks(self) -> int:
        return int(np.max(self.task_of)) + 1

    @property
    def held_out(self) -> int | None:
        if len(self.exclude) > 1:
            raise ValueError("KernelReference: at most one task can be left out")
        return int(self.exclude[0]) if self.exclude else None

    def rows(self) -> np.ndarray:
        """Rows of the fit (outside ``exclude``)."""
        return np.flatnonzero(~np.isin(self.task_of, list(self.exclude)))

    def leave_out(self, k: int = DEFAULT_K, bandwidths: Sequence[float] = BANDWIDTHS
                  ) -> LeaveOutKernel:
        key = (int(k), tuple(float(h) for h in bandwidths))
        if key not in self.cache:
            self.cache[key] = leave_out_kernel(self.X, self.Y, self.task_of, k=k,
                                               bandwidths=bandwidths, n_tasks=self.n_tasks)
        return self.cache[key]


class KernelS1(Decider):
    """S1 over the K most similar reference inputs with a similarity kernel (module
    docstring): the allowed model of highest S1k (ties: higher mean reference accuracy),
    kept only when its S1k beats BMA's by more than a margin tau, else BMA; the bandwidth h
    and tau are chosen together by an inner leave-one-task-out on the reference tasks
    (``margins = None``: no switch, h alone chosen, the argmax decides). Needs the view's
    ``reference`` and ``embeddings``; without them the paper's S1 rule decides."""

    name = "s1_kernel"
    title = "S1 kernel (task-level)"
    k = DEFAULT_K
    bandwidths = BANDWIDTHS
    margins: tuple[float, ...] | None = MARGINS

    def decide(self, view: TaskView) -> Decision:
        ref = getattr(view, "reference", None)
        Q = getattr(view, "embeddings", None)
        if ref is None or Q is None:
            dec = S1().decide(view)
            dec.reason = ("no reference pool in the view (reference, embeddings): decided "
                          f"with the paper's S1 rule instead; {dec.reason}")
            return dec
        if len(Q) != len(view.g):
            raise ValueError(f"view.embeddings has {len(Q)} rows for {len(view.g)} docs")
        table = ref.leave_out(self.k, self.bandwidths)
        if self.margins is None:
            h, inner = choose_bandwidth(table, view.allowed, ref.held_out)
            tau, inner_acc = -math.inf, float(np.nanmax(inner))
        else:
            h, tau, inner_acc = choose_switch(table, view.allowed, ref.held_out, self.margins)
        score = kernel_accuracy(Q, ref.X, ref.Y, k=self.k, h=h, ref_rows=ref.rows())
        values = np.where(view.allowed, np.nan_to_num(score, nan=-np.inf), -np.inf)
        tie = view.cal.mean_accuracy
        choice, best, _ = switch_choice(values, view.allowed, tie, tau)
        bma = view.bma
        fallback = choice != best
        return Decision(choice=choice, best_by_score=best, bma=bma, fallback=fallback,
                        p_beats_bma=0.5 if best == bma else math.nan, scores=values,
                        reason=self._reason(view, h, tau, values, best, bma, fallback),
                        decided_by=self.name,
                        details={"h": h, "tau": tau, "inner_accuracy": inner_acc,
                                 "k": self.k})

    def _reason(self, view: TaskView, h: float, tau: float, values: np.ndarray, best: int,
                bma: int, fallback: bool) -> str:
        top, avg = view.models[best], view.models[bma]
        width = "uniform" if math.isinf(h) else f"h = {h:g}"
        text = (f"{top} has the highest kernel S1 ({self.k} nearest reference inputs, "
                f"{width}")
        text += ")" if math.isinf(-tau) else f", margin {tau:g} over the best on average)"
        if best == bma:
            return text + " and is also the best model on average"
        lead = float(values[best] - values[bma])
        if fallback:
            return text + (f", but its lead over {avg} ({lead:+.3f}) is not above the "
                           "margin: kept the best model on average")
        return text + f", {lead:+.3f} above the best model on average, {avg}"


__all__ = ["BANDWIDTHS", "DEFAULT_K", "MARGINS", "KernelReference", "KernelS1",
           "LeaveOutKernel", "choice_accuracy", "choose_bandwidth", "choose_switch",
           "inner_loto_accuracy", "kernel_accuracy", "kernel_estimates", "kernel_weights",
           "leave_out_kernel", "switch_choice"]
