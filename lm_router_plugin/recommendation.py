"""Scoring a task and deciding (METHOD.md eq. 3.3-3.8), with the explanation shown to users.

:func:`score_and_decide` is the one scoring path: ``Router.recommend`` calls it for a new
task, and the leave-one-task-out evaluation calls it for each held-out task with the
calibration of a fit without that task.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .calibration import Calibration, best_on_average, smoothed_p
from .scores import argmax_with_ties, prob_beats, s1, s2, s3, task_distance
from .stacking import Switch, fit_switch, task_features

SCORES = ("s1", "s2", "s3", "stack")
#: The default decision: the stacked switch (measured above S3 on average over the real
#: sets, README "Results on real data"); "s3" is the paper's.
DEFAULT_SCORE = "stack"
ROUTE_TIE_WEIGHT = 0.01  # the authors' per-input rule: argmax g + 0.01 x mean accuracy


@dataclass
class TaskScores:
    """Per-model scores of one task: arrays of shape (M,); n inputs; u its distance."""

    n: int
    u: float
    s1: np.ndarray
    s2: np.ndarray
    s3: np.ndarray
    p: np.ndarray
    n_pos: np.ndarray  # inputs predicted correct, 1[g > t] summed
    stack: np.ndarray | None = None  # stacking.py: predicted accuracy gain over BMA
    switch: Switch | None = None

    def get(self, name: str) -> np.ndarray:
        return getattr(self, name)


def score_task(g: np.ndarray, u: float, p: np.ndarray, t: float) -> TaskScores:
    """S1, S2, S3 from g (n, M), the task distance u and the confidence p (M,)."""
    score2 = s2(g, t)
    return TaskScores(n=len(g), u=u, s1=s1(g), s2=score2, s3=s3(score2, p), p=p,
                      n_pos=(g > t).sum(axis=0))


@dataclass
class Decision:
    choice: int  # index of the chosen model
    best_by_score: int  # argmax of the score before any fallback
    bma: int
    fallback: bool
    p_beats_bma: float


def decide(scores: TaskScores, score: str, bma: int, tie_break: np.ndarray, allowed: np.ndarray,
           *, eta: float, n_draws: int, seed: int) -> Decision:
    """Choose a model: argmax of ``score`` among ``allowed`` (M,) bool (ties: higher
    ``tie_break``); for S3 keep it only if P(its true accuracy > BMA's) > eta (eq. 3.8),
    estimated with a seeded Monte Carlo."""
    values = np.where(allowed, scores.get(score), -np.inf)
    best = argmax_with_ties(values, tie_break)
    if best == bma:
        p_beats = 0.5
    else:
        rng = np.random.default_rng(seed)
        p_beats = prob_beats(scores.n, int(scores.n_pos[best]), float(scores.p[best]),
                             int(scores.n_pos[bma]), float(scores.p[bma]), n_draws=n_draws,
                             rng=rng)
    fallback = score == "s3" and best != bma and not p_beats > eta
    return Decision(choice=bma if fallback else best, best_by_score=best, bma=bma,
                    fallback=fallback, p_beats_bma=p_beats)


@dataclass
class DecisionSettings:
    """The settings that act only at scoring time (changing them needs no refit)."""

    sigma: float = 0.09
    eta: float = 0.6
    n_draws: int = 1000
    seed: int = 0
    t: float = 0.5


def score_and_decide(cal: Calibration, g: np.ndarray, kappa_sim: np.ndarray, allowed: np.ndarray,
                     score: str, settings: DecisionSettings, *, p: np.ndarray | None = None,
                     switch: Switch | None = None, g_stack: np.ndarray | None = None
                     ) -> tuple[TaskScores, Decision]:
    """Score a task's inputs and choose.

    Args:
        cal: calibration of the fit (its reference tasks only).
        g: (n, M) predicted correctness of the task's inputs.
        kappa_sim: (n, kappa) similarities of the inputs to their nearest reference inputs
            (the task distance u).
        allowed: (M,) bool candidates.
        score: "s1", "s2", "s3" or "stack" (stacking.py; zero labels).
        p: (M,) use this p instead of the kernel-smoothed one (evaluation's true p).
        switch: the stacked switch fitted on ``cal`` (fitted here when None and needed).
        g_stack: (n, M) zero-label g for the stacked switch (default ``g``); given, the
            switch's predicted gains are computed whatever ``score`` (``scores.stack``).
    """
    u = task_distance(kappa_sim)
    p = smoothed_p(cal, u, settings.sigma) if p is None else p
    scores = score_task(g, u, p, settings.t)
    bma = best_on_average(cal, allowed)
    stacked = None
    if score == "stack" or g_stack is not None:
        if switch is None:
            switch = fit_switch(cal, allowed, sigma=settings.sigma)
        features, _ = task_features(cal, g if g_stack is None else g_stack, kappa_sim, allowed,
                                    settings.t, settings.sigma)
        choice, best, gain, p_beats = switch.decide(features, allowed, bma, cal.mean_accuracy)
        scores.stack, scores.switch = gain, switch
        stacked = Decision(choice=choice, best_by_score=best, bma=bma, fallback=choice != best,
                           p_beats_bma=p_beats)
    if score == "stack":
        return scores, stacked
    return scores, decide(scores, score, bma, cal.mean_accuracy, allowed, eta=settings.eta,
                          n_draws=settings.n_draws, seed=settings.seed)


def route_choices(g: np.ndarray, cal: Calibration, allowed: np.ndarray) -> np.ndarray:
    """(n,) per-input model index: argmax_m g_m(x) + 0.01 x mean accuracy among allowed."""
    adjusted = np.where(allowed[None, :], g + ROUTE_TIE_WEIGHT * cal.mean_accuracy[None, :],
                        -np.inf)
    return adjusted.argmax(axis=1)


# -- what users see ----------------------------------------------------------------------
@dataclass
class ModelScore:
    model: str
    s1: float
    s2: float
    s3: float
    p: float
    params: int | None
    stack: float | None = None  # predicted accuracy gain over BMA (--score stack)


@dataclass
class Recommendation:
    """What ``recommend`` returns; ``to_dict()`` gives the documented JSON keys."""

    task: str
    n_inputs: int
    u: float
    choice: str
    bma: str
    fallback: bool
    p_choice_beats_bma: float
    score: str
    models: list[ModelScore]  # sorted by the chosen score, best first
    reason: str
    nearest_tasks: list[dict[str, Any]] = field(default_factory=list)
    u_reference_range: tuple[float, float] = (0.0, 0.0)
    u_note: str = ""  # set when u is far outside the calibrated range
    # Beyond the paper (estimate.py, labels.py): the posterior of each candidate's accuracy
    # from the zero-label prediction and the labelled docs, best first: {model, acc, low,
    # high (90% interval), p_best, n_labels}; the expected gain in accuracy of N more labels
    # per candidate {"10": x, "30": y} of the decision made (expected_gain_by: "stack", the
    # stacked switch's gain measured leave-one-task-out on the reference tasks with that
    # many more labels, or "posterior", estimate.py's preposterior analysis); and the
    # one-line verdict on more labels.
    estimates: list[dict[str, Any]] = field(default_factory=list)
    expected_gain: dict[str, float] = field(default_factory=dict)
    expected_gain_by: str = "posterior"
    n_labelled_docs: int = 0
    labels_verdict: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["u_reference_range"] = list(self.u_reference_range)
        return out


@dataclass
class RouteDecision:
    index: int
    model: str
    g: dict[str, float]


def explain(dec: Decision, score: str, models: list[str], eta: float,
            switch: Switch | None = None, gain: np.ndarray | None = None) -> str:
    """One sentence saying why the choice was made."""
    best, bma = models[dec.best_by_score], models[dec.bma]
    if score == "stack" and switch is not None and gain is not None:
        if dec.best_by_score == dec.bma:
            return (f"{bma}, the best model on average, has the highest predicted accuracy "
                    f"(stacked switch: {switch.describe()})")
        lead = float(gain[dec.best_by_score])
        verb = ("above the threshold: switched to it" if not dec.fallback else
                "not above the threshold: kept the best model on average")
        return (f"{best} is predicted {lead:+.3f} above {bma} (P(it is better) = "
                f"{dec.p_beats_bma:.2f}), {verb} (stacked switch: {switch.describe()})")
    if dec.best_by_score == dec.bma:
        return f"{best} has the highest {score.upper()} and is also the best model on average"
    if dec.fallback:
        return (f"{best} has the highest S3, but P(it beats {bma}) = {dec.p_beats_bma:.2f} "
                f"is not above eta = {eta}: fell back to the best model on average")
    if score == "s3":
        return (f"{best} has the highest S3 and P(it beats the best model on average, "
                f"{bma}) = {dec.p_beats_bma:.2f} > eta = {eta}")
    return f"{best} has the highest {score.upper()} (no fallback test for {score.upper()})"


def u_note(u: float, cal: Calibration, sigma: float) -> str:
    """A warning when u lies more than 2 sigma outside the reference tasks' u: there the
    kernel smoother has no nearby calibration pair and p is extrapolated. (Within 2 sigma
    the nearest pairs carry >= 13% of the kernel's peak weight, so p is still informed.)"""
    low, high = cal.u_range()
    gap = max(low - u, u - high, 0.0)
    if gap <= 2 * sigma:
        return ""
    return (f"u = {u:.3f} is {gap:.3f} outside the reference tasks' range [{low:.3f}, "
            f"{high:.3f}] (more than 2 sigma = {2 * sigma:.2f}): no reference task is as "
            "near/far from the rest, so p (and S3) are extrapolated and less reliable")


def nearest_tasks(neighbour_rows: np.ndarray, task_of: np.ndarray, task_names: list[str],
                  cal: Calibration, top: int = 3) -> list[dict[str, Any]]:
    """Reference tasks holding most of the new inputs' kappa nearest neighbours."""
    rows = neighbour_rows[neighbour_rows >= 0]
    if rows.size == 0:
        return []
    counts = np.bincount(task_of[rows], minlength=len(task_names))
    order = np.argsort(-counts, kind="stable")[:top]
    return [{"task": task_names[d], "share": float(counts[d] / rows.size),
             "u": float(cal.u[d])} for d in order if counts[d] > 0]
