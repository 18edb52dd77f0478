"""S1 with a similarity kernel over many neighbours as a decider of its own: an experiment of
issue 19 kept with its benches (bench/task_kernel_results.py, bench/stack_task_features.py),
not part of the package. The shipped task-level S1 is router/task_level.py.

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

Not a decider of the package (moved here from lm_router_plugin/router/task_kernel.py): over seven
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

from lm_router_plugin.router.deciders import Decider, Decision, S1, TaskView
from lm_router_plugin.router.neighbors import topk_cosine
from lm_router_plugin.router.pool import rows_by_task
from lm_router_plugin.router.scores import argmax_with_ties, quiet_nanmean
from lm_router_plugin.router.task_level import (
    BANDWIDTHS,
    DEFAULT_K,
    SLACK,
    TaskKernel,
    choice_accuracy,
    inner_choice_accuracy,
    kernel_estimates,
    kernel_weights,
    widest_best,
)

#: Margins tau of the switch to BMA: S1k's best model is kept only when its S1k beats
#: BMA's by more than tau; (h, tau) chosen together by the inner leave-one-task-out.
MARGINS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1)


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
    task_of (n,) in 0..D-1), from one :class:`TaskKernel`: every entry is what a pool
    without z and e gives."""
    kernel = TaskKernel(X, Y, task_of, k=k, bandwidths=bandwidths, n_tasks=n_tasks,
                        slack=slack)
    D, M = kernel.D, kernel.Y.shape[1]
    accuracy = np.full((D, M), np.nan)
    for z, rows in enumerate(rows_by_task(kernel.task_of, D)):
        if len(rows):
            accuracy[z] = quiet_nanmean(kernel.Y[rows])
    s1k = np.full((len(kernel.bandwidths), D, D + 1, M), np.nan)
    s1k[:, :, D] = kernel.task_s1()
    for e in range(D):
        s1k[:, :, e] = kernel.task_s1(e)
    return LeaveOutKernel(s1k=s1k, accuracy=accuracy, bandwidths=kernel.bandwidths, k=k)


def inner_loto_accuracy(table: LeaveOutKernel, allowed: np.ndarray,
                        held_out: int | None = None) -> np.ndarray:
    """(H,) per bandwidth, the mean accuracy over the reference tasks (all tasks but
    ``held_out``) of the argmax choice of S1k, each task predicted from the other reference
    tasks (ties: higher mean accuracy over the tasks other than it and ``held_out``)."""
    D = table.n_tasks
    e = D if held_out is None else int(held_out)
    refs = [z for z in range(D) if z != held_out]
    return inner_choice_accuracy(table.s1k[:, :, e], table.accuracy, allowed, refs)


def choose_bandwidth(table: LeaveOutKernel, allowed: np.ndarray,
                     held_out: int | None = None) -> tuple[float, np.ndarray]:
    """(h, per-bandwidth inner accuracies): the bandwidth of highest inner leave-one-task-out
    accuracy (:func:`inner_loto_accuracy`); ties go to the wider bandwidth."""
    scores = inner_loto_accuracy(table, allowed, held_out)
    return table.bandwidths[widest_best(scores)], scores


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
           "LeaveOutKernel", "TaskKernel", "choice_accuracy", "choose_bandwidth",
           "choose_switch", "inner_choice_accuracy", "inner_loto_accuracy", "kernel_accuracy",
           "kernel_estimates", "kernel_weights", "leave_out_kernel", "switch_choice",
           "widest_best"]
