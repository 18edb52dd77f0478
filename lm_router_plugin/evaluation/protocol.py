"""Strict leave-one-task-out evaluation of the router (METHOD.md "Evaluation protocol").

    >>> result = evaluate(table, store=store, alphas=[0, 0.05], repeats=10)
    >>> result.rows["s3"]["acc"], result.rows["s3"]["gap_closed_half"], result.rows["s3"]["wins"]

For each held-out task d, the router is what ``Router.fit`` would learn from the table
without d: every other task z is calibrated from a pool without d and z, the priors, the
task accuracies and the best model on average (BMA) come from the tasks other than d, and
d is decided by the same decider objects as ``Router.recommend`` (deciders.py): every
registered decider is a row, without labels and at each label count.
Nothing is refitted: one :class:`~lm_router_plugin.router.neighbors.GroupedNeighbors` search keeps
each input's nearest neighbours per task, so any task can be left out exactly; predictors
without such a shortcut refit (``CorrectnessPredictor.predict_left_out``).
``tests/test_evaluation.py`` checks every per-task output against a loop that refits a
Router from scratch without each task.

Noise-aware figures: on small tasks the per-task Oracle is partly luck (the best of M models
on a few items). Each row is also scored split-half: the Oracle picks the best model on a
random half of the task and is scored on the other half; every row's choice is scored on
the same halves (``acc_half``). Rows report the share of the BMA -> Oracle gap they close
(full and split-half), a bootstrap confidence interval over tasks, and per-task wins, ties
and losses against BMA.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError, InvalidParameterError, LMRouterError, UnknownNameError
from ..registry import unknown_name_message
from ..router.calibration import Calibration, calibrate, measured_p
from ..router.deciders import DEFAULT_DECIDER, StackedSwitch, TaskView, checked_decision
from ..router.estimate import TaskEstimate, estimate
from ..router.neighbors import GroupedNeighbors
from ..router.pool import (
    ReferencePool,
    add_raw_means,
    build_pool,
    fit_route_margin,
    route_with_margin,
    rows_by_task,
)
from ..router.predictors import checked_g, value_bounds
from ..router.recommendation import route_choices
from ..router.router import Router, model_mask
from ..router.scores import argmax_with_ties, quiet_nanmean, thresholded_accuracy
from ..router.stacking import Switch, fit_switch
from ..router.task_level import TaskKernel
from ..store.store import Store

logger = logging.getLogger(__name__)

MAX_LABELS = 50  # the paper's cap on in-task labels: min(alpha n, 50)
N_SPLITS = 20  # split-half repetitions per task
N_BOOTSTRAP = 1000  # bootstrap resamples of the tasks
TIE_TOL = 1e-12
#: the uncertainty check: the expected gain of this many more random labels is compared
#: with what they realised; P(best) Monte Carlo draws (fewer than recommend's 4,000: only
#: means over tasks are reported)
GAIN_CHECK_LABELS = 10
HONESTY_DRAWS = 1000


@dataclass
class EvaluationResult:
    """Averages over held-out tasks (``rows``), one record per task (``per_task``)."""

    n_tasks: int
    n_models: int
    rows: dict[str, dict[str, Any]]
    per_task: list[dict[str, Any]]
    predictor_accuracy: float  # mean accuracy of 1[g > t] on held-out tasks
    p_mae: float  # mean |p_hat - true p|
    alpha_sweep: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    #: per label setting (0 labels first): how the stated uncertainty fared, predicted vs
    #: realised (see :func:`_summarise_honesty`)
    uncertainty: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"n_tasks": self.n_tasks, "n_models": self.n_models, "rows": self.rows,
                "per_task": self.per_task, "predictor_accuracy": self.predictor_accuracy,
                "p_mae": self.p_mae, "alpha_sweep": self.alpha_sweep,
                "uncertainty": self.uncertainty, "settings": self.settings}


def regroup_tasks(table: pd.DataFrame, tasks_by: str = "task",
                  side_table: pd.DataFrame | None = None,
                  side_path: str | Path = "--tasks-file") -> pd.DataFrame:
    """A copy of ``table`` whose ``task`` column is the grouping column ``tasks_by``, taken
    from the table itself (e.g. ``benchmark``) or from ``side_table`` (read from
    ``side_path``) joined on instance_id (and on task when the side table has that column
    too). Instance ids are unique within a task only (lm-eval's doc_id): where two tasks of
    one new group share one, it becomes ``<old task>/<instance_id>``.

    Raises:
        InvalidParameterError: a side table without ``tasks_by`` other than ``task``.
        InputError: a side table without instance_id, with conflicting or empty groups.
        LMRouterError: rows without a group."""
    if tasks_by == "task":
        if side_table is not None:
            raise InvalidParameterError("--tasks-file", "it holds the column to group tasks "
                                        "by, and --tasks-by is 'task' (the stored tasks): add "
                                        "--tasks-by COLUMN, or leave --tasks-file out")
        return table
    out = table.copy()
    if side_table is None:
        if tasks_by not in out.columns:
            raise UnknownNameError(unknown_name_message("grouping column", tasks_by,
                                                        sorted(out.columns))
                                   + " (give a side table with --tasks-file)")
        group = out[tasks_by].astype(str)
        empty = group == ""
        if empty.any():
            raise LMRouterError(f"--tasks-by {tasks_by}: {int(empty.sum())} rows have an empty "
                                f"'{tasks_by}'")
    else:
        if "instance_id" not in side_table.columns:
            raise InputError(side_path, "no 'instance_id' column (it has "
                             f"{', '.join(map(str, side_table.columns))})",
                             hint=f"a side table maps instance_id (and task) to {tasks_by}")
        if tasks_by not in side_table.columns:
            raise UnknownNameError(unknown_name_message("grouping column", tasks_by,
                                                        sorted(side_table.columns)))
        keys = ["instance_id"] + (["task"] if "task" in side_table.columns else [])
        side = side_table[keys + [tasks_by]].astype(str)
        conflicts = side.groupby(keys)[tasks_by].nunique()
        if (conflicts > 1).any():
            key = conflicts[conflicts > 1].index[0]
            raise InputError(side_path, f"{keys} = {key!r} has several values of {tasks_by} "
                             f"({int((conflicts > 1).sum())} such keys)",
                             hint="give each instance one group")
        side = side.drop_duplicates(keys)
        if (side[tasks_by] == "").any():
            key = side.loc[side[tasks_by] == "", keys].iloc[0].tolist()
            raise InputError(side_path, f"an empty {tasks_by} (e.g. for {key})",
                             hint="give every instance a group")
        # a stored column of the same name would get merge suffixes: the side table's wins
        out = out.drop(columns=[tasks_by], errors="ignore").merge(side, on=keys, how="left")
        missing = out[tasks_by].isna()
        if missing.any():
            example = out.loc[missing, "instance_id"].iloc[0]
            raise LMRouterError(f"--tasks-file has no '{tasks_by}' for {int(missing.sum())} "
                                f"rows (e.g. instance_id {example!r})")
        group = out.pop(tasks_by)
    old_task = out["task"].astype(str)
    out["task"] = group.to_numpy()
    # one instance id from two stored tasks of one group: two instances (also where no model
    # ran both, so that no key repeats)
    shared = pd.DataFrame({"task": out["task"], "instance_id": out["instance_id"],
                           "old": old_task}).drop_duplicates()
    if shared.duplicated(["task", "instance_id"]).any():
        out["instance_id"] = old_task + "/" + out["instance_id"].astype(str)
        logger.info("--tasks-by %s: instance ids repeat across the tasks of a group; they "
                    "are read as <task>/<instance_id>", tasks_by)
    return out


def read_side_table(path: str | Path) -> pd.DataFrame:
    """A side table of instance groupings (CSV, TSV, Parquet; .gz allowed), as strings."""
    path = Path(path)
    name = path.name.removesuffix(".gz")
    try:
        if name.endswith(".parquet"):
            return pd.read_parquet(path).astype(str)
        sep = "\t" if name.endswith((".tsv", ".tab")) else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises many types for unreadable files
        raise InputError(path, f"cannot read the side table: {exc}",
                         hint="give a CSV/TSV/Parquet file with instance_id and the column") from exc


#: names of the rows and record keys evaluate writes itself: a decider registered under one
#: would be overwritten by them (or overwrite them)
RESERVED_NAMES = frozenset({"bma", "oracle", "moe", "few_shot", "s3_true_p", "compare_to",
                            "task", "task_index", "n", "n_labels", "u", "uncertainty",
                            "scores", "predictor_accuracy", "p_mae", "draw", "label_draws"})


def usable_deciders(registry: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """({name: decider instance} of every registered decider evaluate can run, {name: why
    left out}): a plugin that fails to load, reuses another's name, or takes a name of
    evaluate's own rows is left out with a warning, not the whole evaluation (the others,
    built-in ones included, still run; ``recommend --score NAME`` still says why)."""
    from ..registry import PluginError

    usable: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in registry.names():
        if name in RESERVED_NAMES or "@" in name:
            skipped[name] = (f"the name '{name}' is one of evaluate's own rows or has '@' "
                             "(label rows): rename the plugin's entry point")
        else:
            try:
                usable[name] = registry.get(name)()
                usable[name].name = name
            except PluginError as exc:
                skipped[name] = str(exc)
            except Exception as exc:  # the plugin class's own __init__ failed
                skipped[name] = f"cannot create it: {type(exc).__name__}: {exc}"
        if name in skipped:
            logger.warning("decider %s left out of the evaluation: %s", name, skipped[name])
    return usable, skipped


def _correlations(score: np.ndarray, acc: np.ndarray) -> tuple[float, float]:
    """(Pearson, Spearman) across models; nan when either side is constant.

    Plain numpy (Spearman = Pearson of average ranks): scipy.stats' versions cost ~3 ms a
    call, which dominated the alpha sweep.
    """
    if len(score) < 2 or np.ptp(score) == 0 or np.ptp(acc) == 0:
        return math.nan, math.nan
    return _pearson(score, acc), _pearson(_average_ranks(score), _average_ranks(acc))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties averaged (scipy.stats.rankdata's 'average' method)."""
    x = np.asarray(x, dtype=float)
    sorter = np.argsort(x, kind="mergesort")
    inverse = np.empty_like(sorter)
    inverse[sorter] = np.arange(len(x))
    ordered = x[sorter]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    dense = first.cumsum()[inverse]
    bounds = np.r_[np.flatnonzero(first), len(x)]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=float) - np.mean(a)
    b = np.asarray(b, dtype=float) - np.mean(b)
    return float(np.dot(a, b) / math.sqrt(np.dot(a, a) * np.dot(b, b)))



def _posterior_honesty(est: TaskEstimate, acc: np.ndarray, allowed: np.ndarray,
                       tie: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """How the label posterior's stated uncertainty fared on one task, against the true
    accuracies ``acc`` (M,) on the items it is for: the share of candidates whose accuracy
    lies in its 90% interval, the P(best) of its most probable candidate and whether that
    one was the best (1/0), and the Brier score of P(best) (sum over candidates)."""
    ok = allowed & ~np.isnan(acc)
    interval = est.interval(0.9)
    inside = (acc >= interval[:, 0]) & (acc <= interval[:, 1])
    p_best = est.p_best(rng, HONESTY_DRAWS)
    best = argmax_with_ties(np.where(ok, acc, -np.inf), tie)
    top = argmax_with_ties(np.where(ok, p_best, -np.inf), tie)
    is_best = (np.arange(len(acc)) == best).astype(float)
    return {"coverage": float(np.mean(inside[ok])), "p_best_top": float(p_best[top]),
            "top_is_best": float(acc[top] >= acc[best] - TIE_TOL),
            "brier": float(np.sum((p_best[ok] - is_best[ok]) ** 2))}


@dataclass
class _MoreLabels:
    """A task after ``n_more`` more labels for the expected-gain checks: the labelled rows
    ``lab`` and the still unlabelled ``rest``, the true accuracies there ``acc`` (M,) and the
    candidates with results there ``allowed`` (M,)."""

    n_more: int
    lab: np.ndarray
    rest: np.ndarray
    acc: np.ndarray
    allowed: np.ndarray


def _more_labels(Y: np.ndarray, lab: np.ndarray, rest: np.ndarray, allowed: np.ndarray,
                 rng: np.random.Generator) -> _MoreLabels | None:
    """GAIN_CHECK_LABELS more rows drawn from ``rest`` (fewer on a small task; at least one
    row stays unlabelled) added to ``lab``; None when none can be drawn."""
    n_more = min(GAIN_CHECK_LABELS, len(rest) - 1)
    more = rng.choice(rest, size=max(n_more, 0), replace=False)
    if len(more) < 1:
        return None
    rest2 = np.setdiff1d(rest, more)
    acc2 = quiet_nanmean(Y[rest2])
    return _MoreLabels(len(more), np.union1d(lab, more), rest2, acc2,
                       allowed & ~np.isnan(acc2))


def _gain_check(ev: _HeldOut, cal: Calibration, est: TaskEstimate, more: _MoreLabels | None,
                rng: np.random.Generator) -> dict[str, float]:
    """The posterior's expected gain of ``more.n_more`` more random labels (``est``: the
    posterior before them) and what those labels realised: the accuracy on the still
    unlabelled rows of the new highest-mean candidate minus the old one's (the preposterior
    quantity; no fallback)."""
    if more is None:
        return {"gain_predicted": math.nan, "gain_realised": math.nan}
    zero, ok = ev.g_held, more.allowed
    est2 = estimate(cal, zero[more.rest], ok, lab_g=zero[more.lab], lab_y=ev.Y[more.lab])
    before = argmax_with_ties(np.where(ok, est.mean, -np.inf), cal.mean_accuracy)
    after = argmax_with_ties(np.where(ok, est2.mean, -np.inf), cal.mean_accuracy)
    predicted = est.expected_gain(more.n_more, rng, HONESTY_DRAWS)
    return {"gain_predicted": float(predicted),
            "gain_realised": float(more.acc[after] - more.acc[before])}


def _stack_honesty(best: int, bma: int, p: float, acc: np.ndarray) -> dict[str, float]:
    """The stacked switch's P(its best beats BMA) and whether it did (only where its best
    by predicted gain is not BMA)."""
    if best == bma or np.isnan(acc[best]) or np.isnan(acc[bma]):
        return {}
    return {"stack_p": float(p), "stack_won": float(acc[best] > acc[bma] + TIE_TOL)}


def _rank_of(acc: np.ndarray, chosen: int, allowed: np.ndarray) -> float:
    """1 + number of allowed models with strictly higher true accuracy."""
    return float(1 + np.sum(allowed & (acc > acc[chosen])))


class _HeldOut:
    """The strict leave-one-task-out state: one neighbour index, one predictor, and the
    calibration of the fit without each task (computed once per task, cached)."""

    def __init__(self, router: Router, X: np.ndarray, Y: np.ndarray, task_of: np.ndarray,
                 n_tasks: int, allowed: np.ndarray | None = None,
                 searched: _HeldOut | None = None):
        self.router, self.X, self.Y, self.task_of, self.D = router, X, Y, task_of, n_tasks
        # the candidates (M,) bool: route's margin is fitted among them (Router.route_margin)
        self.allowed = (np.ones(Y.shape[1], bool) if allowed is None
                        else np.asarray(allowed, bool))
        self.settings = router.decision_settings()
        # ``searched``: a state over the same X whose neighbour lists are reused (they
        # depend on the embeddings only; a target "score" task's own scale changes Y)
        self.neighbors = (searched.neighbors if searched is not None
                          else GroupedNeighbors(X, task_of, max(router.k, router.kappa)))
        self.predictor = router.make_predictor()
        self.bounds = value_bounds(Y)  # (target "score": a held-out task's scale may exceed)
        self.rows_of = rows_by_task(task_of, n_tasks)
        # g of every input from a fit without its own task = the held-out task's g.
        self.g_held = checked_g(self.predictor.predict_left_out(
            X, Y, task_of, np.arange(len(X)), neighbors=self.neighbors), len(X), Y.shape[1],
            self.predictor, self.bounds)
        self._calibrations: dict[int, Calibration] = {}
        self.margins: dict[int, float] = {}  # target "score": route's margin without task d
        # the stacked switch's task-level S1 (task_k > 0): one search, every task's value
        # without itself and without the held-out task exactly (leave-two-tasks-out)
        task_k = getattr(router, "task_k", 0)
        lists = (None if searched is None or searched.task_kernel is None
                 else (searched.task_kernel.deep_idx, searched.task_kernel.deep_sim))
        self.task_kernel = (TaskKernel(X, Y, task_of, k=task_k, n_tasks=n_tasks,
                                       neighbours=lists) if task_k > 0 else None)

    def calibration_without(self, d: int) -> Calibration:
        """What ``Router.fit`` computes from the table without task d."""
        if d not in self._calibrations:
            r = self.router
            rows = np.flatnonzero(self.task_of != d)
            g = np.full(self.Y.shape, np.nan)
            sim = np.full((len(self.X), r.kappa), -np.inf, dtype=np.float32)
            g[rows] = checked_g(self.predictor.predict_left_out(
                self.X, self.Y, self.task_of, rows, exclude=[d], neighbors=self.neighbors),
                len(rows), self.Y.shape[1], self.predictor, self.bounds)
            found = self.neighbors.query(rows, [d])[1][:, :r.kappa]
            sim[rows, :found.shape[1]] = found  # a pool smaller than kappa: -inf padded
            self._calibrations[d] = calibrate(self.task_of, self.Y, g, sim, r.t, self.D,
                                              held_out=d)
            if self.task_kernel is not None:  # what Router.fit without d computes
                self._calibrations[d].task_s1 = self.task_kernel.task_s1(d)
                self._calibrations[d].task_bandwidths = np.array(self.task_kernel.bandwidths)
            if getattr(r, "target", "correct") == "score":  # route's margin, fitted without d
                cal = self._calibrations[d]
                self.margins[d] = fit_route_margin(g, self.Y, self.task_of, cal.accuracy,
                                                   cal.included, self.allowed)[0]
        return self._calibrations[d]

    def kappa_sim(self, rows: np.ndarray) -> np.ndarray:
        """(r, kappa) similarities of held-out rows to the reference tasks (u)."""
        return self.neighbors.sim[rows, :self.router.kappa]

    def task_s1(self, rows: np.ndarray) -> np.ndarray | None:
        """(H, M) task-level kernel S1 of held-out rows (all of one task) from the other
        tasks (Router.task_level_s1 of the fit without it); None when task_k is 0."""
        return None if self.task_kernel is None else self.task_kernel.rows_s1(rows)

    def task_s1_reader(self, rows: np.ndarray) -> Callable[[int], np.ndarray] | None:
        """TaskView.task_s1 of held-out rows (Router.task_s1_reader of the fit without
        their task): j -> (M,); None when task_k is 0."""
        values = self.task_s1(rows)
        return None if values is None else values.__getitem__


class _TaskScorer:
    """Records of one held-out task: every registered decider's choice (deciders.py, the
    objects ``recommend`` uses), the baselines, and their accuracies."""

    def __init__(self, ev: _HeldOut, allowed: np.ndarray, params: np.ndarray,
                 models: list[str], compare_to: int | None, n_splits: int,
                 instance_ids: Sequence[str] = ()):
        from ..registry import deciders

        self.ev, self.allowed, self.params, self.models = ev, allowed, params, models
        self.instance_ids = np.asarray(instance_ids, dtype=object)
        self.compare_to, self.n_splits = compare_to, n_splits
        self._switches: dict[tuple[int, int, bytes], Switch] = {}
        self.deciders, self.skipped = usable_deciders(deciders)
        if getattr(getattr(ev, "settings", None), "target", "correct") == "score":
            # S2/S3 threshold g at t: no rows for metric values
            self.deciders = {name: d for name, d in self.deciders.items()
                             if not getattr(d, "thresholds_g", False)}

    def row_names(self) -> list[str]:
        """The zero-label rows: every decider, and the paper's S3 with the true p."""
        names = []
        for name in self.deciders:
            names += [name, "s3_true_p"] if name == "s3" else [name]
        return names

    def switch(self, d: int, n_lab: int, allowed: np.ndarray) -> Switch:
        """The stacked switch for n_lab labels fitted without task d (cached: its simulated
        reference draws are seeded by the label count, so every repeat fits the same one)."""
        key = (d, n_lab, allowed.tobytes())
        if key not in self._switches:
            ev, r = self.ev, self.ev.router
            self._switches[key] = fit_switch(ev.calibration_without(d), allowed, sigma=r.sigma,
                                             n_labels=n_lab, Y=ev.Y, rows_of=ev.rows_of,
                                             seed=r.seed)
        return self._switches[key]

    def view(self, d: int, rows: np.ndarray, allowed: np.ndarray,
             lab: np.ndarray | None = None, g_labelled: np.ndarray | None = None,
             p: np.ndarray | None = None) -> TaskView:
        """What a decider sees of held-out task d: its unlabelled ``rows`` (zero-label g
        from the fit without d), the calibration without d, and the labelled rows ``lab``
        (their correctness; ``g_labelled``: g with them in the pool)."""
        ev = self.ev
        return TaskView(cal=ev.calibration_without(d), models=self.models, allowed=allowed,
                        g=ev.g_held[rows], kappa_sim=ev.kappa_sim(rows), settings=ev.settings,
                        lab_y=None if lab is None else ev.Y[lab], g_labelled=g_labelled, p=p,
                        switches=lambda n: self.switch(d, n, allowed),
                        task_s1=ev.task_s1_reader(rows))

    def stack_gain_check(self, d: int, n_lab: int, choice: int, more: _MoreLabels | None
                         ) -> dict[str, float]:
        """The stacked switch's expected gain of ``more.n_more`` more labels (the difference
        of the leave-one-task-out gains of its fits for n_lab + n_more and n_lab labels,
        both without d) and what those labels realised: the accuracy on the still
        unlabelled rows of its choice with them minus that of ``choice``, its choice with
        the n_lab labels."""
        if more is None:
            return {}
        n2 = n_lab + more.n_more
        after = StackedSwitch().decide(self.view(d, more.rest, more.allowed, more.lab)).choice
        predicted = (self.switch(d, n2, more.allowed).expected_gain
                     - self.switch(d, n_lab, more.allowed).expected_gain)
        return {"stack_gain_predicted": float(predicted),
                "stack_gain_realised": float(more.acc[after] - more.acc[choice])}

    def _record(self, chosen: int, acc: np.ndarray, allowed: np.ndarray, bma: int,
                score: np.ndarray | None, half: np.ndarray | None) -> dict[str, Any]:
        best = np.nanmax(np.where(allowed, acc, np.nan))
        pearson = spearman = math.nan
        if score is not None:
            pearson, spearman = _correlations(score[allowed], acc[allowed])
        return {"model": self.models[chosen], "acc": float(acc[chosen]),
                "acc_half": float(half[chosen]) if half is not None else math.nan,
                "ratio_to_best": float(acc[chosen] / best) if best > 0 else math.nan,
                "pearson": pearson, "spearman": spearman, "bma": float(chosen == bma),
                "params": float(self.params[chosen]), "rank": _rank_of(acc, chosen, allowed)}

    def split_halves(self, y: np.ndarray, allowed: np.ndarray, tie: np.ndarray, d: int
                     ) -> tuple[np.ndarray, np.ndarray, float]:
        """Over seeded random halves (A, B) of the task: (halves (S, n) bool marking B,
        mean accuracy on B per model (M,), the split-half Oracle's mean accuracy on B)."""
        n = len(y)
        rng = np.random.default_rng([self.ev.router.seed, 104729, d])
        halves = np.zeros((self.n_splits, n), dtype=bool)
        on_b, oracle = [], []
        for s in range(self.n_splits):
            perm = rng.permutation(n)
            halves[s, perm[n // 2:]] = True
            acc_a, acc_b = quiet_nanmean(y[~halves[s]]), quiet_nanmean(y[halves[s]])
            ok = allowed & ~np.isnan(acc_a) & ~np.isnan(acc_b)
            if not ok.any():
                continue
            pick = argmax_with_ties(np.where(ok, acc_a, -np.inf), tie)
            oracle.append(acc_b[pick])
            on_b.append(acc_b)
        if not on_b:
            return halves, np.full(len(allowed), np.nan), math.nan
        return halves, quiet_nanmean(np.array(on_b)), float(np.mean(oracle))

    def task(self, d: int) -> dict[str, Any]:
        """Every decider's zero-label choice for held-out task d and the baselines."""
        ev, r = self.ev, self.ev.router
        rows = ev.rows_of[d]
        y = ev.Y[rows]
        acc = quiet_nanmean(y)
        allowed = self.allowed & ~np.isnan(acc)
        cal = ev.calibration_without(d)
        g = ev.g_held[rows]
        tie = cal.mean_accuracy
        view = self.view(d, rows, allowed)
        bma = view.bma
        halves, half_acc, oracle_half = self.split_halves(y, allowed, tie, d)
        p_true = measured_p(g, y, r.t)
        out: dict[str, Any] = {"task": None, "n": int(len(rows))}
        decisions = {}
        for name, decider in self.deciders.items():
            decisions[name] = dec = checked_decision(name, decider, view)
            out[name] = self._record(dec.choice, acc, allowed, bma, dec.scores, half_acc)
            out[name]["fallback"] = bool(dec.fallback)
            if name == "s3":  # the paper's S3 with the true p: how much a perfect p adds
                dec = decider.decide(self.view(d, rows, allowed, p=p_true))
                out["s3_true_p"] = self._record(dec.choice, acc, allowed, bma, dec.scores,
                                                half_acc)
                out["s3_true_p"]["fallback"] = bool(dec.fallback)
        est = view.scores
        out["u"] = float(est.u)
        # how honest the stated uncertainty is: the label posterior (recommend's report)
        # and the stacked switch's P and expected gain, against what happened
        posterior = estimate(cal, g, allowed)
        rng = np.random.default_rng([r.seed, 271828, d])
        honesty = _posterior_honesty(posterior, acc, allowed, tie, rng)
        more = _more_labels(ev.Y, rows[:0], rows, allowed, rng)
        stack_dec = decisions.get("stack") or StackedSwitch().decide(view)
        out["uncertainty"] = {
            **honesty, **_gain_check(ev, cal, posterior, more, rng),
            **_stack_honesty(stack_dec.best_by_score, bma, stack_dec.p_beats_bma, acc),
            **self.stack_gain_check(d, 0, stack_dec.choice, more)}
        # MoE: a per-input choice, scored per input.
        per_input = route_choices(g, cal, allowed)
        if d in ev.margins:  # target "score": route's rule (pool.route_with_margin)
            per_input = route_with_margin(g, bma, ev.margins[d], allowed, tie)
        picked = y[np.arange(len(rows)), per_input].astype(float)  # float64 sums like acc's
        moe = self._record(int(np.bincount(per_input).argmax()), acc, allowed, bma, None, None)
        moe["acc"] = float(np.nanmean(picked)) if (~np.isnan(picked)).any() else math.nan
        moe["acc_half"] = float(np.nanmean([quiet_nanmean(picked[h]) for h in halves]))
        best = np.nanmax(np.where(allowed, acc, np.nan))
        moe["ratio_to_best"] = float(moe["acc"] / best) if best > 0 else math.nan
        chosen_params = self.params[per_input]
        moe["params"] = (float(np.nanmean(chosen_params)) if (~np.isnan(chosen_params)).any()
                         else math.nan)
        moe["rank"] = math.nan
        moe["bma"] = float(np.mean(per_input == bma))
        out["moe"] = moe
        out["bma"] = self._record(bma, acc, allowed, bma, None, half_acc)
        oracle = argmax_with_ties(np.where(allowed, acc, -np.inf), tie)
        out["oracle"] = self._record(oracle, acc, allowed, bma, None, half_acc)
        out["oracle"]["acc_half"] = oracle_half  # chosen on one half, scored on the other
        if self.compare_to is not None and not np.isnan(acc[self.compare_to]):
            out["compare_to"] = self._record(self.compare_to, acc, np.ones_like(allowed), bma,
                                             None, half_acc)
        # (target "score": g > t against y == 1 means nothing for metric values: not given)
        has = allowed & ~np.isnan(thresholded_accuracy(g, y, r.t)) & (r.target != "score")
        out["predictor_accuracy"] = float(np.mean(p_true[has])) if has.any() else math.nan
        out["p_mae"] = float(np.mean(np.abs(est.p - p_true)[has])) if has.any() else math.nan
        out["scores"] = {m: {"s1": float(est.s1[i]), "s2": float(est.s2[i]),
                             "s3": float(est.s3[i]), "p": float(est.p[i]),
                             "true_p": float(p_true[i]), "acc": float(acc[i])}
                         for i, m in enumerate(self.models)}
        return out

    def labelled(self, d: int, n_lab: int, rng: np.random.Generator,
                 check_rng: np.random.Generator) -> dict[str, Any] | None:
        """One repeat of the in-task-label protocol on task d: ``n_lab`` random labelled
        inputs join the predictor's pool (not u, not the calibration) and feed every
        decider; everything is scored on the other inputs of d. ``check_rng`` draws the
        uncertainty check's own labels and P(best)."""
        ev, r = self.ev, self.ev.router
        rows = ev.rows_of[d]
        n_lab = min(n_lab, len(rows) - 1)
        if n_lab < 1:
            return None
        lab = np.sort(rng.choice(rows, size=n_lab, replace=False))
        rest = np.setdiff1d(rows, lab)
        cal = ev.calibration_without(d)
        g = checked_g(ev.predictor.predict_left_out(ev.X, ev.Y, ev.task_of, rest, extra=lab,
                                                    neighbors=ev.neighbors),
                      len(rest), ev.Y.shape[1], ev.predictor, ev.bounds)
        y_rest = ev.Y[rest]
        acc = quiet_nanmean(y_rest)
        acc_lab = quiet_nanmean(ev.Y[lab])  # nan for a model without labels here
        allowed = self.allowed & ~np.isnan(acc)
        if not allowed.any():  # the candidates' results all fell among the labelled items
            return None
        view = self.view(d, rest, allowed, lab, g_labelled=g)
        bma = view.bma
        out: dict[str, Any] = {"n_labels": int(n_lab), "task_index": int(d)}
        # every row's choice is also scored on seeded half-splits of the unlabelled items,
        # against the Oracle chosen on the other half (the noise-free ceiling)
        _, half, oracle_half = self.split_halves(y_rest, allowed, cal.mean_accuracy, d)
        decisions = {}
        for name, decider in self.deciders.items():
            decisions[name] = dec = checked_decision(name, decider, view)
            out[name] = self._record(dec.choice, acc, allowed, bma, dec.scores, half)
        known = allowed & ~np.isnan(acc_lab)
        few = argmax_with_ties(np.where(known, acc_lab, -np.inf), cal.mean_accuracy) \
            if known.any() else bma
        out["few_shot"] = self._record(few, acc, allowed, bma, acc_lab, half)
        out["bma"] = self._record(bma, acc, allowed, bma, None, half)
        oracle = argmax_with_ties(np.where(allowed, acc, -np.inf), cal.mean_accuracy)
        out["oracle"] = self._record(oracle, acc, allowed, bma, None, None)
        out["oracle"]["acc_half"] = oracle_half
        out["predictor_accuracy"] = math.nan if r.target == "score" else float(np.nanmean(
            thresholded_accuracy(g, y_rest, r.t)[allowed]))
        # how honest the stated uncertainty is with these labels (the label posterior of
        # recommend's report, the stacked switch's P and expected gain)
        zero = ev.g_held
        post = estimate(cal, zero[rest], allowed, lab_g=zero[lab], lab_y=ev.Y[lab])
        honesty = _posterior_honesty(post, acc, allowed, cal.mean_accuracy, check_rng)
        more = _more_labels(ev.Y, lab, rest, allowed, check_rng)
        stack_dec = decisions.get("stack") or StackedSwitch().decide(view)
        out["uncertainty"] = {
            **honesty, **_gain_check(ev, cal, post, more, check_rng),
            **_stack_honesty(stack_dec.best_by_score, bma, stack_dec.p_beats_bma, acc),
            **self.stack_gain_check(d, n_lab, stack_dec.choice, more)}
        # which items were labelled, so that any implementation can redo this repeat on the
        # same items (the JSON's per_task[...]["label_draws"])
        out["draw"] = {"labelled": self.instance_ids[lab].tolist()}
        return out


def _draw_record(kind: str, value: float, repeat: int, rec: dict[str, Any],
                 names: Sequence[str]) -> dict[str, Any]:
    """One repeat of one label setting on one task, as ``per_task[d]["label_draws"]`` keeps
    it: the labelled instance ids, every row's chosen model and its accuracy on the
    unlabelled items."""
    names = list(names) + ["bma", "oracle"]
    return {kind: value, "repeat": repeat, "n_labels": rec["n_labels"], **rec["draw"],
            "choice": {name: rec[name]["model"] for name in names},
            "acc": {name: rec[name]["acc"] for name in names},
            # target "score": the chosen model's mean raw value (None: a mixed task)
            **({"acc_raw": {name: rec[name].get("acc_raw") for name in names}}
               if "acc_raw" in rec[names[0]] else {})}


# -- summaries ---------------------------------------------------------------------------
def _mean(values: Sequence[float]) -> float:
    arr = np.array([v for v in values if v is not None], dtype=float)
    return float(np.nanmean(arr)) if arr.size and (~np.isnan(arr)).any() else math.nan


_COLUMNS = ("acc", "acc_half", "ratio_to_best", "pearson", "spearman", "bma", "params", "rank")


def _gap_share(row: np.ndarray, bma: np.ndarray, oracle: np.ndarray) -> float:
    """Share of the BMA -> Oracle gap closed, over tasks: sum(row - bma) / sum(oracle - bma)."""
    ok = ~(np.isnan(row) | np.isnan(bma) | np.isnan(oracle))
    gap = float(np.sum(oracle[ok] - bma[ok]))
    return float(np.sum(row[ok] - bma[ok]) / gap) if gap > TIE_TOL else math.nan


def _summarise(records: list[dict[str, Any]], bma: list[dict[str, Any]],
               oracle: list[dict[str, Any]], rng: np.random.Generator,
               n_bootstrap: int) -> dict[str, Any]:
    """Means over tasks, gap shares, bootstrap intervals and wins/ties/losses vs BMA."""
    out = {col: _mean([r[col] for r in records]) for col in _COLUMNS}
    out["pct_bma"] = out.pop("bma")
    acc = np.array([r["acc"] for r in records], dtype=float)
    acc_bma = np.array([b["acc"] for b in bma], dtype=float)
    acc_oracle = np.array([o["acc"] for o in oracle], dtype=float)
    half = np.array([r["acc_half"] for r in records], dtype=float)
    half_bma = np.array([b["acc_half"] for b in bma], dtype=float)
    half_oracle = np.array([o["acc_half"] for o in oracle], dtype=float)
    diff = acc - acc_bma
    out["gain_over_bma"] = _mean(diff)
    out["wins"] = int(np.sum(diff > TIE_TOL))
    out["ties"] = int(np.sum(np.abs(diff) <= TIE_TOL))
    out["losses"] = int(np.sum(diff < -TIE_TOL))
    out["gap_closed"] = _gap_share(acc, acc_bma, acc_oracle)
    out["gap_closed_half"] = _gap_share(half, half_bma, half_oracle)
    n = len(records)
    if n_bootstrap > 0 and n > 1:
        draws = rng.integers(0, n, size=(n_bootstrap, n))
        boot = {"acc": [np.nanmean(acc[i]) for i in draws],
                "gain_over_bma": [np.nanmean(diff[i]) for i in draws],
                "gap_closed": [_gap_share(acc[i], acc_bma[i], acc_oracle[i]) for i in draws],
                "gap_closed_half": [_gap_share(half[i], half_bma[i], half_oracle[i])
                                    for i in draws]}
        for key, values in boot.items():
            values = np.array(values, dtype=float)
            values = values[~np.isnan(values)]
            out[f"{key}_ci"] = ([float(np.percentile(values, 2.5)),
                                 float(np.percentile(values, 97.5))] if values.size else None)
    return out


def _task_bootstrap(per_task: list[float], rng: np.random.Generator, n_bootstrap: int
                    ) -> list[float] | None:
    """95% bootstrap interval over tasks of the mean of ``per_task`` (one value per task, e.g.
    its accuracy or gain over BMA averaged over the repeats); None without resamples or with
    fewer than two tasks."""
    values = np.array([v for v in per_task if v == v], dtype=float)
    if n_bootstrap <= 0 or len(values) < 2:
        return None
    means = values[rng.integers(0, len(values), size=(n_bootstrap, len(values)))].mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def _summarise_honesty(records: list[dict[str, float]]) -> dict[str, Any]:
    """Means over (task, repeat) records of :func:`_posterior_honesty`, :func:`_gain_check`
    and :func:`_stack_honesty`: what the uncertainty said (coverage 0.9, P(best) of the top
    candidate, the expected gain, the stack's P) next to what happened."""
    keys = ("coverage", "p_best_top", "top_is_best", "brier", "gain_predicted",
            "gain_realised", "stack_gain_predicted", "stack_gain_realised")
    out: dict[str, Any] = {k: _mean([r.get(k) for r in records]) for k in keys}
    out["n"] = len(records)
    switched = [r for r in records if "stack_p" in r]
    out["stack_p"] = _mean([r["stack_p"] for r in switched])
    out["stack_won"] = _mean([r["stack_won"] for r in switched])
    out["stack_n"] = len(switched)
    return out


def evaluate(table: pd.DataFrame, *, store: Store | None = None,
             embeddings: np.ndarray | None = None, router: Router | None = None,
             alphas: Sequence[float] = (0.0,), repeats: int = 10,
             label_counts: Sequence[int] = (),
             candidates: Sequence[str] | None = None, max_params: int | None = None,
             compare_to: str | None = None, model_info: dict[str, dict] | None = None,
             n_splits: int = N_SPLITS,
             n_bootstrap: int = N_BOOTSTRAP) -> EvaluationResult:
    """Strict leave-one-task-out evaluation of S1, S2, S3, S3 with true p, MoE, BMA, Oracle.

    Args:
        table: correctness table, already regrouped (see :func:`regroup_tasks`).
        store: embedding cache. embeddings: (n_ref, dim) in ``build_pool`` order instead.
        router: unfitted Router carrying the constants and the predictor (default METHOD.md's).
        alphas: in-task label fractions (min(alpha n, 50) labels); 0 is the plain protocol.
        label_counts: in-task label counts (N labels per task), alongside ``alphas``.
        repeats: seeded repetitions per alpha / label count.
        candidates, max_params: route among a subset (thesis §4.3); ``compare_to`` names a
            model (e.g. the large one) reported beside it.
        n_splits: split-half repetitions per task; n_bootstrap: resamples of the tasks.
    """
    router = router or Router()
    router.validate_params()
    pool = build_pool(table, target=router.target)
    D = len(pool.task_names)
    if D < 3:
        raise LMRouterError(f"leave-one-task-out needs at least 3 tasks (2 to calibrate on), "
                            f"got {D}")
    info = model_info or {}
    allowed = model_mask(pool.models, candidates, max_params, info)  # before embedding
    compare_index = None
    if compare_to is not None:
        if compare_to not in pool.models:
            raise UnknownNameError(unknown_name_message("model", compare_to, pool.models))
        compare_index = pool.models.index(compare_to)
    X, embedder_id = router.reference_embeddings(pool, store, embeddings)
    params = np.array([np.nan if (info.get(m) or {}).get("params") is None
                       else float(info[m]["params"]) for m in pool.models])
    ev = _HeldOut(router, X, pool.Y, pool.task_of, D, allowed)
    scorer = _TaskScorer(ev, allowed, params, pool.models, compare_index, n_splits,
                         pool.instance_ids)
    # a task on which no candidate has a result cannot be scored (a --candidates or
    # --max-params subset that did not run it): it is left out, and the log says so
    scored = [d for d in range(D)
              if (allowed & ~np.isnan(quiet_nanmean(pool.Y[ev.rows_of[d]]))).any()]
    unscored = [pool.task_names[d] for d in range(D) if d not in scored]
    if unscored:
        logger.warning("%d of %d tasks have no result for any candidate and are not scored "
                       "(they stay reference tasks): %s", len(unscored), D,
                       ", ".join(unscored[:10]) + (" ..." if len(unscored) > 10 else ""))
    # target "score": a task that holds a metric's smallest or largest value is scored by
    # a state whose scales come from the other tasks (what a fit without it sees)
    scorer_of = {d: scorer for d in range(D)}
    task_scales: dict[str, dict[str, Any]] = {}
    for d in _tasks_setting_a_scale(table, pool) if pool.target == "score" else []:
        name = pool.task_names[d]
        pool_d = build_pool(table, target=router.target, scale_without=name)
        ev_d = _HeldOut(router, X, pool_d.Y, pool.task_of, D, allowed, searched=ev)
        scorer_of[d] = _TaskScorer(ev_d, allowed, params, pool.models, compare_index,
                                   n_splits, pool.instance_ids)
        task_scales[name] = pool_d.scales
    per_task = []
    for d in scored:
        record = scorer_of[d].task(d)
        record["task"] = pool.task_names[d]
        per_task.append(record)
    record_of = {d: per_task[i] for i, d in enumerate(scored)}
    names = (scorer.row_names() + ["moe", "bma", "oracle"]
             + (["compare_to"] if compare_index is not None else []))
    rows = {}
    for name in names:
        kept = [t for t in per_task if name in t]
        rows[name] = _summarise([t[name] for t in kept], [t["bma"] for t in kept],
                                [t["oracle"] for t in kept], _boot_rng(router.seed),
                                n_bootstrap)
    for name in ("moe", "bma", "oracle", "compare_to"):
        if name in rows:
            rows[name]["pearson"] = rows[name]["spearman"] = None
    if pool.target == "score":  # each row's mean also in the metric's own units
        add_raw_means(rows, per_task, pool, task_scales)
    rows["moe"]["rank"] = None
    if compare_index is not None:
        rows["compare_to"]["model"] = compare_to
    settings_n = [("alpha", a, lambda n, a=a: min(max(1, int(a * n)), MAX_LABELS))
                  for a in alphas if a > 0]
    settings_n += [("labels", c, lambda n, c=c: int(c)) for c in label_counts if c > 0]
    sweep = []
    uncertainty = [{"labels": 0, **_summarise_honesty([t["uncertainty"] for t in per_task])}]
    label_rows = list(scorer.deciders) + ["few_shot"]
    for kind, value, count in settings_n:
        per_repeat: dict[str, list[dict[str, Any]]] = {name: [] for name in label_rows}
        honesty: list[dict[str, float]] = []
        # per row and task, the accuracy and the gain over BMA of each repeat (CIs over tasks)
        task_accs: dict[str, dict[int, list[float]]] = {name: {} for name in label_rows}
        task_gains: dict[str, dict[int, list[float]]] = {name: {} for name in label_rows}
        pred_acc, n_labels = [], []
        for rep in range(repeats):
            tag = int(round(value * 1e6)) if kind == "alpha" else 10**9 + int(value)
            rng = np.random.default_rng([router.seed, rep, tag])
            check_rng = np.random.default_rng([router.seed, rep, tag, 2])
            recs = [scorer_of[d].labelled(d, count(len(ev.rows_of[d])), rng, check_rng)
                    for d in scored]
            recs = [x for x in recs if x is not None]
            raw_means: dict[str, dict[str, Any]] = {name: {} for name in
                                                    label_rows + ["bma", "oracle"]}
            if pool.target == "score":  # this repeat's means also in the metric's units
                add_raw_means(raw_means, [{**x, "task": pool.task_names[x["task_index"]]}
                                          for x in recs], pool, task_scales)
            honesty.extend(x["uncertainty"] for x in recs)
            for x in recs:
                record_of[x["task_index"]].setdefault("label_draws", []).append(
                    _draw_record(kind, value, rep, x, label_rows))
            for name in label_rows:
                for x in recs:
                    task_accs[name].setdefault(x["task_index"], []).append(x[name]["acc"])
                    task_gains[name].setdefault(x["task_index"], []).append(
                        x[name]["acc"] - x["bma"]["acc"])
                per_repeat[name].append({**_summarise(
                    [x[name] for x in recs], [x["bma"] for x in recs],
                    [x["oracle"] for x in recs], None, 0), **raw_means[name]})
            pred_acc.append(_mean([x["predictor_accuracy"] for x in recs]))
            n_labels.append(_mean([x["n_labels"] for x in recs]))
        entry: dict[str, Any] = {kind: value, "alpha": value if kind == "alpha" else None,
                                 "mean_labels": _mean(n_labels),
                                 "predictor_accuracy": _mean(pred_acc)}
        suffix = f"@{value:g}" if kind == "alpha" else f"@{int(value)}labels"
        for name, reps in per_repeat.items():
            summary = {col: _mean([rep[col] for rep in reps]) for col in
                       ("acc", "acc_half", "ratio_to_best", "pearson", "spearman", "pct_bma",
                        "params", "rank", "gain_over_bma", "gap_closed", "gap_closed_half")}
            for key, per_task_values in (("acc_ci", task_accs[name]),
                                         ("gain_over_bma_ci", task_gains[name])):
                summary[key] = _task_bootstrap([_mean(v) for v in per_task_values.values()],
                                               _boot_rng(router.seed), n_bootstrap)
            summary["acc_std"] = float(np.nanstd([rep["acc"] for rep in reps]))
            summary["wins"] = _mean([rep["wins"] for rep in reps])
            summary["ties"] = _mean([rep["ties"] for rep in reps])
            summary["losses"] = _mean([rep["losses"] for rep in reps])
            if pool.target == "score":  # the raw means over the repeats, as for acc
                by_metric = [rep["acc_raw_by_metric"] for rep in reps]
                summary["acc_raw_by_metric"] = {
                    m: _mean([b.get(m) for b in by_metric])
                    for m in sorted({m for b in by_metric for m in b})}
                raw = [rep["acc_raw"] for rep in reps]
                summary["acc_raw"] = (None if not raw or any(v is None for v in raw)
                                      else _mean(raw))
            rows[f"{name}{suffix}"] = summary
            entry[name] = summary
        sweep.append(entry)
        uncertainty.append({kind: value, **_summarise_honesty(honesty)})
    return EvaluationResult(
        n_tasks=len(per_task), n_models=int(allowed.sum()), rows=rows, per_task=per_task,
        predictor_accuracy=_mean([t["predictor_accuracy"] for t in per_task]),
        p_mae=_mean([t["p_mae"] for t in per_task]), alpha_sweep=sweep,
        uncertainty=uncertainty,
        settings={**router.get_params(), "alphas": list(alphas),
                  "label_counts": list(label_counts), "repeats": repeats,
                  "candidates": list(candidates) if candidates else None,
                  "max_params": max_params, "compare_to": compare_to,
                  "embedder": embedder_id, "deciders": list(scorer.deciders),
                  "deciders_left_out": scorer.skipped,
                  "default": DEFAULT_DECIDER,
                  "n_splits": n_splits, "n_bootstrap": n_bootstrap, "protocol": "strict",
                  "tasks_without_candidates": unscored,
                  "scales": {m: sc.to_dict() for m, sc in pool.scales.items()},
                  "held_out_scales": {t: {m: sc.to_dict() for m, sc in scales.items()}
                                      for t, scales in task_scales.items()}})


def _tasks_setting_a_scale(table: pd.DataFrame, pool: ReferencePool) -> list[int]:
    """Task indices (into pool.task_names) without which some metric's smallest or largest
    value would change (target "score": the normalisation a fit without them uses)."""
    values = pd.to_numeric(table["score"], errors="coerce")
    ranges = values.groupby([table["metric"].astype(str), table["task"].astype(str)],
                            observed=True).agg(["min", "max"])
    index = {name: d for d, name in enumerate(pool.task_names)}
    out = set()
    for _, per_task in ranges.groupby(level=0):
        if len(per_task) < 2:
            continue  # a metric of one task: a fit without it does not scale it
        for col in ("min", "max"):
            top = per_task[col] == (per_task[col].min() if col == "min" else
                                    per_task[col].max())
            if top.sum() == 1:  # held by one task only: the range changes without it
                out.add(index[per_task.index[int(np.flatnonzero(top)[0])][1]])
    return sorted(out)


def _boot_rng(seed: int) -> np.random.Generator:
    """The bootstrap's generator: the same for every row, so each row's interval is drawn
    on the same resampled tasks (paired) and adding a decider changes no other row."""
    return np.random.default_rng([seed, 7919])


__all__ = ["EvaluationResult", "evaluate", "read_side_table", "regroup_tasks"]
