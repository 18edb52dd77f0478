"""What ``recommend`` and ``route`` return, and the helpers that describe a task to users.

The decision itself is made by a decider (deciders.py); this module holds the result
types (:class:`Recommendation`, :class:`ModelScore`, :class:`RouteDecision`), the per-input
routing rule, and the notes shown beside a recommendation (nearest reference tasks, a task
far outside the calibrated range).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .calibration import Calibration

ROUTE_TIE_WEIGHT = 0.01  # the authors' per-input rule: argmax g + 0.01 x mean accuracy


def route_choices(g: np.ndarray, cal: Calibration, allowed: np.ndarray) -> np.ndarray:
    """(n,) per-input model index: argmax_m g_m(x) + 0.01 x mean accuracy among allowed."""
    adjusted = np.where(allowed[None, :], g + ROUTE_TIE_WEIGHT * cal.mean_accuracy[None, :],
                        -np.inf)
    return adjusted.argmax(axis=1)


# -- what users see ----------------------------------------------------------------------
@dataclass
class ModelScore:
    """One candidate's row of recommend's table: the paper's scores, p, its parameter
    count, the stacked switch's predicted accuracy gain over BMA (None where it did not
    decide) and the deciding score (the chosen decider's ``Decision.scores``).

    Target "score": s1, stack and score are on the normalised 0-1 scale of each metric
    (pool.ScoreScale; what the decision compared); s2, s3 and p are None (they count inputs
    with g > t, an arbitrary cut of a metric's range); with one metric in the store,
    ``s1_raw`` is S1 in the metric's units and ``stack_raw`` the predicted gain over BMA in
    them (positive: better, i.e. lower for a lower-is-better metric)."""

    model: str
    s1: float
    s2: float | None
    s3: float | None
    p: float | None
    params: int | None
    stack: float | None = None
    score: float | None = None
    s1_raw: float | None = None  # target "score" only (to_dict leaves them out otherwise)
    stack_raw: float | None = None


@dataclass
class Recommendation:
    """What ``recommend`` returns; ``to_dict()`` gives the documented JSON keys."""

    task: str
    n_inputs: int
    u: float
    choice: str
    bma: str
    fallback: bool
    p_choice_beats_bma: float  # 0.5 when the choice is BMA
    score: str  # the decider asked for
    models: list[ModelScore]  # the choice first, then by the deciding score
    reason: str
    decided_by: str = ""  # the rule that decided (the stacked switch hands over to s3 with
    #                       too few reference tasks)
    n_reference_tasks: int = 0
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
    plan_note: str = ""  # with a plan: how far the labels cover its docs
    # the model of highest deciding score (before any fallback to BMA) and the decider's
    # probability that it beats BMA (0.5 when it is BMA): on a fallback, why it was not taken
    best_by_score: str = ""
    p_best_beats_bma: float = 0.5
    # What the scores are in. target "correct": units "accuracy" (S1 = mean P(correct)).
    # target "score": units = the store's one metric (s1_raw, stack_raw, the estimates'
    # acc_raw/low_raw/high_raw and expected_gain_raw are in its units) or UNITS_MIXED;
    # metrics: the store's metric names; scales: {metric: ScoreScale.to_dict()}, the maps
    # that put each metric on the normalised 0-1 scale of s1, stack, acc and expected_gain.
    target: str = "correct"
    units: str = "accuracy"
    metrics: list[str] = field(default_factory=list)
    scales: dict[str, dict[str, Any]] = field(default_factory=dict)
    expected_gain_raw: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``recommend --json``. Target "correct": the keys it always had, plus
        ``target`` and ``units``; the fields of target "score" are left out."""
        out = asdict(self)
        out["u_reference_range"] = list(self.u_reference_range)
        if self.target == "correct":
            for key in SCORE_ONLY:
                out.pop(key)
            for row in out["models"]:
                row.pop("s1_raw")
                row.pop("stack_raw")
        return out


#: Recommendation fields that only target "score" fills (left out of the JSON otherwise).
SCORE_ONLY = ("metrics", "scales", "expected_gain_raw")
#: ``Recommendation.units`` under target "score" when the store holds several metrics.
UNITS_MIXED = "normalised 0-1 per metric"


def in_metric_units(rec: Recommendation, scales: dict[str, Any]) -> Recommendation:
    """Mark ``rec`` as a target-"score" recommendation, in place, and return it.

    ``scales``: the router's {metric: pool.ScoreScale}. The paper's S2, S3 and p become
    None (g > t is an arbitrary cut of a metric's range). With one metric, its units: S1
    and the estimates (acc, its 90% interval) through the affine inverse map (so a mean of
    normalised values maps to the mean raw value; the interval's ends swap for a
    lower-is-better metric), gains (stack, expected_gain) times the metric's span hi - lo
    (a difference: the offset cancels; positive stays better). With several metrics there
    is no common unit: ``units`` says the values are normalised 0-1 per metric.
    """
    rec.target = "score"
    rec.metrics = sorted(scales)
    rec.scales = {m: scales[m].to_dict() for m in rec.metrics}
    one = scales[rec.metrics[0]] if len(scales) == 1 else None
    rec.units = one.metric if one is not None else UNITS_MIXED
    span = (one.hi - one.lo) if one is not None else None
    for row in rec.models:
        row.s2 = row.s3 = row.p = None
        if one is not None:
            row.s1_raw = float(one.raw(row.s1))
            row.stack_raw = None if row.stack is None else float(row.stack * span)
    if one is not None:
        for entry in rec.estimates:
            ends = sorted(float(one.raw(entry[k])) for k in ("low", "high"))
            entry.update(acc_raw=float(one.raw(entry["acc"])), low_raw=ends[0],
                         high_raw=ends[1])
        rec.expected_gain_raw = {n: None if v is None else float(v * span)
                                 for n, v in rec.expected_gain.items()}
    return rec


@dataclass
class RouteDecision:
    index: int
    model: str
    g: dict[str, float]


def u_note(u: float, cal: Calibration, sigma: float, target: str = "correct") -> str:
    """A warning when u lies more than 2 sigma outside the reference tasks' u: there the
    kernel smoother has no nearby calibration pair and p is extrapolated. (Within 2 sigma
    the nearest pairs carry >= 13% of the kernel's peak weight, so p is still informed.)
    Under target "score" (no p, no S3) it says the predictions are extrapolated."""
    low, high = cal.u_range()
    gap = max(low - u, u - high, 0.0)
    if gap <= 2 * sigma:
        return ""
    return (f"u = {u:.3f} is {gap:.3f} outside the reference tasks' range [{low:.3f}, "
            f"{high:.3f}] (more than 2 sigma = {2 * sigma:.2f}): no reference task is as "
            "near/far from the rest, so " + (
                "the predictions are extrapolated and less reliable" if target == "score"
                else "p (and S3) are extrapolated and less reliable"))


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
