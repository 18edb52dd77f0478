"""Decisions as objects: every rule that picks a model for a task implements one interface.

    >>> from lm_router_plugin.registry import deciders
    >>> decider = deciders.get("stack")()      # s1, s2, s3 (the paper's), stack (default)
    >>> decision = decider.decide(view)        # view: the TaskView of one task
    >>> decision.choice, decision.fallback, decision.reason

``Router.recommend`` (a new task) and ``evaluate`` (each held-out task, with the calibration
of a fit without it) build a :class:`TaskView` and call the same ``decide``: no rule is
written twice. A decider from another package registers under the entry-point group
``lm_router.deciders`` and then runs through ``recommend --score NAME``, ``evaluate`` (a row
of its name, with and without labels) and the plots with no edit of this package.

A decider reads only its view: the calibration of the fit (reference tasks only), the
task's predicted correctness, its distance to the reference inputs and, with labels, the
labelled docs' correctness. In an evaluation nothing in the view comes from the held-out
task's labels except the labelled docs given to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..errors import InvalidParameterError, LMRouterError, PluginOutputError
from .calibration import Calibration, best_on_average, smoothed_p
from .scores import argmax_with_ties, prob_beats, quiet_nanmean, s1, s2, s3, task_distance
from .stacking import Switch, fit_switch, task_features

#: The default decision: the stacked switch (measured above S3 on average over the real
#: sets, docs/results.md); "s3" is the paper's.
DEFAULT_DECIDER = "stack"
#: Reference tasks the stacked switch needs: with fewer, its leave-one-task-out fit of the
#: weights and threshold has too few tasks and the paper's S3 rule decides instead. Measured
#: with bench/min_reference_tasks.py (docs/method.md): on RouterDC with 2-5 reference tasks
#: the switch lost 1.6-4.0 points to BMA and learned "never switch" in 30-57% of fits; from
#: 6 it was within a point of BMA or above, and never-switch fits became rare.
MIN_STACK_TASKS = 6


@dataclass
class DecisionSettings:
    """The constants that act at scoring time (changing them needs no refit)."""

    sigma: float = 0.09  # kernel bandwidth of the confidence p
    eta: float = 0.6  # S3 keeps its choice only if P(it beats BMA) > eta
    n_draws: int = 1000  # Monte Carlo draws of that test
    seed: int = 0
    t: float = 0.5  # threshold on g for S2/S3
    target: str = "correct"  # what g predicts: 0/1 correctness or a normalised metric value


def check_decider_target(decider: Decider, target: str) -> None:
    """S2 and S3 count inputs with g > t: for 0/1 correctness a predicted-correct input,
    for a normalised metric value (target "score") an arbitrary cut of its range, so they
    refuse that target (S1 and the stacked switch read expected values and work on both)."""
    if target == "score" and getattr(decider, "thresholds_g", False):
        raise InvalidParameterError(
            "--score", f"{decider.name} thresholds g at t, which has no meaning for metric "
            "values (--target score): use --score stack (the default) or s1")


@dataclass
class TaskScores:
    """The paper's per-model scores of one task, arrays of shape (M,); n inputs; u the
    task's distance to the reference inputs; n_pos the inputs predicted correct."""

    n: int
    u: float
    s1: np.ndarray
    s2: np.ndarray
    s3: np.ndarray
    p: np.ndarray
    n_pos: np.ndarray

    def get(self, name: str) -> np.ndarray:
        return getattr(self, name)


def score_task(g: np.ndarray, u: float, p: np.ndarray, t: float) -> TaskScores:
    """S1, S2, S3 (METHOD.md eq. 3.3-3.6) from g (n, M), the task distance u and p (M,)."""
    score2 = s2(g, t)
    return TaskScores(n=len(g), u=u, s1=s1(g), s2=score2, s3=s3(score2, p), p=p,
                      n_pos=(g > t).sum(axis=0))


@dataclass
class TaskView:
    """Everything a decider may read about one task.

    cal: the calibration of the fit (its reference tasks only). models (M,) names. allowed
    (M,) bool candidates. g (n, M): zero-label predicted correctness of the n docs the
    choice is for (the unlabelled ones). kappa_sim (n, kappa): their similarities to the
    nearest reference inputs (the task distance u). lab_y (L, M): correctness of the task's
    L labelled docs (nan: a model without a label there; L = 0 without labels). g_labelled
    (n, M): g with the labelled docs added to the predictor's pool (the paper's way of using
    labels; None: g). p (M,): a p to use instead of the kernel-smoothed one (the
    evaluation's true-p row). switches(n_labels): the stacked switch fitted on the
    reference tasks for ``allowed`` and that many labels (cached by the caller).
    task_s1(j): (M,) the task-level kernel S1 of those docs at bandwidth
    ``cal.task_bandwidths[j]`` (from the reference pool only, computed when first asked;
    None: the router's task_k is 0).
    """

    cal: Calibration
    models: list[str]
    allowed: np.ndarray
    g: np.ndarray
    kappa_sim: np.ndarray
    settings: DecisionSettings
    lab_y: np.ndarray | None = None
    g_labelled: np.ndarray | None = None
    p: np.ndarray | None = None
    switches: Callable[[int], Switch] | None = None
    task_s1: Callable[[int], np.ndarray] | None = None

    @property
    def n_labels(self) -> int:
        return 0 if self.lab_y is None else len(self.lab_y)

    @property
    def label_accuracy(self) -> np.ndarray:
        """(M,) accuracy on the labelled docs (nan: no label; all nan without labels)."""
        if not self.n_labels:
            return np.full(len(self.models), np.nan)
        return quiet_nanmean(np.asarray(self.lab_y, dtype=float))

    @property
    def n_reference_tasks(self) -> int:
        return int(np.sum(self.cal.included))

    @cached_property
    def bma(self) -> int:
        """The best model on average over the reference tasks, among ``allowed``."""
        return best_on_average(self.cal, self.allowed)

    @cached_property
    def u(self) -> float:
        return task_distance(self.kappa_sim)

    @cached_property
    def scores(self) -> TaskScores:
        """The paper's scores from g with the labels in the pool (shared by S1/S2/S3)."""
        g = self.g if self.g_labelled is None else self.g_labelled
        p = smoothed_p(self.cal, self.u, self.settings.sigma) if self.p is None else self.p
        return score_task(g, self.u, p, self.settings.t)

    def switch(self, n_labels: int = 0) -> Switch:
        if self.switches is not None:
            return self.switches(n_labels)
        if n_labels:
            raise ValueError("a TaskView with labels needs `switches` (the reference "
                             "correctness is not in the view)")
        return fit_switch(self.cal, self.allowed, sigma=self.settings.sigma,
                          seed=self.settings.seed)


@dataclass
class Decision:
    """What a decider chose. choice, best_by_score, bma: model indices (best_by_score: the
    argmax of the decider's score before any fallback). scores (M,): the values it ranked
    by (-inf or nan for models not allowed; shown in recommend's table). p_beats_bma: its
    probability that best_by_score beats BMA (0.5 when they are the same model). reason:
    one sentence for users. decided_by: the rule that actually decided (a decider may hand
    over, e.g. the stacked switch to S3 with too few reference tasks)."""

    choice: int
    best_by_score: int
    bma: int
    fallback: bool
    p_beats_bma: float
    scores: np.ndarray
    reason: str = ""
    decided_by: str = ""
    details: dict = field(default_factory=dict)


class Decider:
    """One decision rule. Subclasses set ``name`` (the registered name), ``title`` (for
    tables and plots), and implement
    :meth:`decide`. Deciders hold no fitted state: everything comes from the view."""

    name = ""
    title = ""

    def decide(self, view: TaskView) -> Decision:  # pragma: no cover - interface
        raise NotImplementedError


class PaperScore(Decider):
    """The paper's rule for one of S1, S2, S3: the allowed model of highest score (ties:
    higher mean reference accuracy); for S3 kept only if P(its true accuracy > BMA's) >
    eta (eq. 3.8, a seeded Monte Carlo), else BMA. With labels, g comes from a predictor
    whose pool holds the labelled docs (the paper's few-shot variant)."""

    score = "s3"

    def decide(self, view: TaskView) -> Decision:
        scores, bma, settings = view.scores, view.bma, view.settings
        values = np.where(view.allowed, scores.get(self.score), -np.inf)
        best = argmax_with_ties(values, view.cal.mean_accuracy)
        if best == bma:
            p_beats = 0.5
        else:
            rng = np.random.default_rng(settings.seed)
            p_beats = prob_beats(scores.n, int(scores.n_pos[best]), float(scores.p[best]),
                                 int(scores.n_pos[bma]), float(scores.p[bma]),
                                 n_draws=settings.n_draws, rng=rng)
        fallback = self.score == "s3" and best != bma and not p_beats > settings.eta
        return Decision(choice=bma if fallback else best, best_by_score=best, bma=bma,
                        fallback=fallback, p_beats_bma=p_beats, scores=values,
                        reason=self._reason(view, best, bma, fallback, p_beats),
                        decided_by=self.score)

    def _reason(self, view: TaskView, best: int, bma: int, fallback: bool, p: float) -> str:
        name, top, avg = self.score.upper(), view.models[best], view.models[bma]
        eta = view.settings.eta
        if best == bma:
            return f"{top} has the highest {name} and is also the best model on average"
        if fallback:
            return (f"{top} has the highest S3, but P(it beats {avg}) = {p:.2f} is not above "
                    f"eta = {eta}: fell back to the best model on average")
        if self.score == "s3":
            return (f"{top} has the highest S3 and P(it beats the best model on average, "
                    f"{avg}) = {p:.2f} > eta = {eta}")
        return f"{top} has the highest {name} (no fallback test for {name})"


class S1(PaperScore):
    name = score = "s1"
    title = "S1 (paper)"


class S2(PaperScore):
    name = score = "s2"
    title = "S2 (paper)"
    thresholds_g = True  # refused under target "score" (check_decider_target)


class S3(PaperScore):
    name = score = "s3"
    title = "S3 (paper)"
    thresholds_g = True


class StackedSwitch(Decider):
    """The stacked switch (stacking.py; ours): a linear rule fitted leave-one-task-out on
    the reference tasks predicts each model's accuracy gain over BMA from its S1 (the
    task-level S1 of the view's ``task_s1`` at the switch's bandwidth; the kNN's with
    task_k = 0), S3 and mean accuracy differences; the best model is chosen when its
    predicted gain clears a threshold learned there, else BMA. With labels, the switch
    fitted for that many labels updates every candidate's prediction at once by the paired
    label differences (label_update.py).
    With fewer than MIN_STACK_TASKS reference tasks the paper's S3 rule decides instead."""

    name = "stack"
    title = "stacked switch"

    def decide(self, view: TaskView) -> Decision:
        if view.n_reference_tasks < MIN_STACK_TASKS and view.settings.target == "score":
            # the S3 test below counts g > t; for metric values nothing credible is left
            bma = view.bma  # the table is ordered by the predicted value (S1)
            return Decision(choice=bma, best_by_score=bma, bma=bma, fallback=False,
                            p_beats_bma=0.5,
                            scores=np.where(view.allowed, view.scores.s1, -np.inf),
                            decided_by="bma", reason=(
                                f"only {view.n_reference_tasks} reference tasks, the stacked "
                                f"switch needs {MIN_STACK_TASKS} to learn when a predicted "
                                "gain in metric value is credible: kept the best model on "
                                f"average, {view.models[bma]}"))
        if view.n_reference_tasks < MIN_STACK_TASKS:
            dec = S3().decide(view)  # its scores (S3) order recommend's table
            dec.reason = (f"only {view.n_reference_tasks} reference tasks, the stacked switch "
                          f"needs {MIN_STACK_TASKS} to learn its rule: decided with the "
                          f"paper's S3 rule instead; {dec.reason}")
            return dec
        switch = view.switch(view.n_labels)
        labels = view.label_accuracy if switch.n_labels else None
        s = view.settings
        task_s1 = None
        if switch.task_h_index is not None:
            if view.task_s1 is None:
                raise ValueError("the stacked switch was fitted on the task-level kernel S1 "
                                 "(calibration task_s1) but the view carries no task_s1")
            task_s1 = view.task_s1(switch.task_h_index)
        features, bma = task_features(view.cal, view.g, view.kappa_sim, view.allowed, s.t,
                                      s.sigma, labels, task_s1)
        choice, best, gain, p = switch.decide(features, view.allowed, bma,
                                              view.cal.mean_accuracy, n_rest=len(view.g))
        fallback = choice != best
        return Decision(choice=choice, best_by_score=best, bma=bma, fallback=fallback,
                        p_beats_bma=p, scores=gain, decided_by=self.name,
                        reason=self._reason(view, switch, gain, best, bma, fallback, p),
                        details={"switch": switch})

    @staticmethod
    def _reason(view: TaskView, switch: Switch, gain: np.ndarray, best: int, bma: int,
                fallback: bool, p: float) -> str:
        top, avg = view.models[best], view.models[bma]
        if best == bma:
            what = ("value" if getattr(view.settings, "target", "correct") == "score"
                    else "accuracy")
            text = (f"{avg}, the best model on average, has the highest predicted {what} "
                    f"(stacked switch: {switch.describe()})")
        else:
            verb = ("above the threshold: switched to it" if not fallback else
                    "not above the threshold: kept the best model on average")
            if not fallback and p <= 0.5:  # two estimates of one switch that disagree
                verb += (" (the threshold was learned on the reference tasks' realised gains; "
                         "P, from the spread of its errors there, is not above 0.5: with few "
                         "reference tasks the two disagree, so the choice is uncertain)")
            # (target "score": the gain on the normalised scale, the switch's own; the
            # table shows it in the metric's units where the store holds one metric)
            unit = (" (normalised 0-1 value)"
                    if getattr(view.settings, "target", "correct") == "score" else "")
            text = (f"{top} is predicted {float(gain[best]):+.3f}{unit} above {avg} (P(it is "
                    f"better) = {p:.2f}), {verb} (stacked switch: {switch.describe()})")
        if view.n_labels and switch.n_labels:
            text += f"; with {view.n_labels} labelled docs"
        elif view.n_labels:
            text += (f"; the {view.n_labels} labelled docs were not used: on the reference "
                     "tasks, as many labels did not improve the choice")
        return text


def _where(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def is_builtin(obj: object) -> bool:
    """The object's class is this package's own (its errors are bugs, shown whole)."""
    return type(obj).__module__.split(".")[0] == "lm_router_plugin"


def checked_decision(name: str, decider: Decider, view: TaskView) -> Decision:
    """``decider.decide(view)``, checked against the Decision contract: choice and
    best_by_score are indices of allowed models, scores is (M,), p_beats_bma a probability.

    Raises:
        PluginOutputError: a plugin decider raised or returned a malformed Decision (names
            the decider and what was wrong), so a bad choice never reaches a table."""
    try:
        dec = decider.decide(view)
    except LMRouterError:
        raise
    except Exception as exc:
        if is_builtin(decider):
            raise
        raise PluginOutputError(f"decider '{name}' ({_where(decider)}) failed: "
                                f"{type(exc).__name__}: {exc}") from exc
    problem = _decision_problem(dec, view)
    if problem:
        raise PluginOutputError(f"decider '{name}' ({_where(decider)}) returned {problem}; "
                                "a Decision's choice and best_by_score are indices of allowed "
                                "models, scores has one value per model, p_beats_bma is in "
                                "[0, 1] (router/deciders.py)")
    return dec


def _decision_problem(dec: object, view: TaskView) -> str:
    if not isinstance(dec, Decision):
        return f"{type(dec).__name__}, not a Decision"
    M = len(view.models)
    for field_name in ("choice", "best_by_score", "bma"):
        value = getattr(dec, field_name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            return f"{field_name} = {value!r}, not an integer index"
        if not 0 <= value < M:
            return f"{field_name} = {value}, outside 0..{M - 1}"
        if field_name != "bma" and not view.allowed[value]:
            return f"{field_name} = {value} ({view.models[value]}), a model not allowed"
    scores = np.asarray(dec.scores)
    if scores.shape != (M,):
        return f"scores of shape {scores.shape}, expected ({M},)"
    p = dec.p_beats_bma
    if not isinstance(p, (int, float, np.number)) or not 0 <= float(p) <= 1:
        return f"p_beats_bma = {p!r}, not a probability"
    return ""


__all__ = ["DEFAULT_DECIDER", "Decider", "Decision", "DecisionSettings", "MIN_STACK_TASKS",
           "check_decider_target", "checked_decision", "is_builtin",
           "PaperScore", "S1", "S2", "S3", "StackedSwitch", "TaskScores",
           "TaskView", "score_task"]
