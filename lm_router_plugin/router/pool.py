"""The reference pool: the results table pivoted to one row per instance, one column per
model (what the predictors and the calibration work on).

    >>> pool = build_pool(store.read_table())
    >>> pool.Y.shape          # (n instances, M models), values 0, 1 or nan (no result)
    >>> pool = build_pool(store.read_table(), target="score")
    >>> pool.Y                # raw metric values mapped to [0, 1] per metric (nan: none)
    >>> pool.scales["rouge_l"].raw(pool.Y)   # back to the metric's own units

Two targets (``--target``): ``correct`` learns the 0/1 correctness ingest derived with the
thresholds eta; ``score`` learns the raw metric values, each metric mapped affinely onto
[0, 1] by :class:`ScoreScale` (min-max over the table's values of that metric, flipped for
lower-is-better metrics, so 1 is always the best value seen). One map per metric, shared by
every task: a store holding one metric gives predictions in that metric's units exactly
(the map is affine, so a mean of normalised values maps back to the mean of raw values),
and a store mixing metrics of different scales (BLEU 0-100, F1 0-1, a judge's 1-10) gives
each the same [0, 1] range (docs/raw-metrics.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InvalidParameterError, LMRouterError, SchemaError
from ..store.schema import CORRECT, INPUT_TEXT, KEY, METRIC, SCORE, THRESHOLD

logger = logging.getLogger(__name__)

#: What the router learns: 0/1 correctness (ingest's thresholds) or the raw metric values.
TARGETS = ("correct", "score")


def check_target(target: Any, name: str = "--target") -> str:
    """``target`` if it is one of TARGETS; else InvalidParameterError naming the choices and
    ``name`` (the option, or the config key ``predictor.target`` when settings check it)."""
    if target not in TARGETS:
        raise InvalidParameterError(name, f"must be one of {', '.join(TARGETS)}, got "
                                    f"{target!r} (correct: the 0/1 correctness of the "
                                    "thresholds; score: the raw metric values)")
    return str(target)


@dataclass(frozen=True)
class ScoreScale:
    """The affine map of one metric's raw values onto [0, 1]: ``lo``/``hi`` the smallest
    and largest value in the table; higher is better: (raw - lo) / (hi - lo), lower is
    better: (hi - raw) / (hi - lo). A metric with one value throughout maps to 0.5."""

    metric: str
    lo: float
    hi: float
    higher_is_better: bool = True

    def normalise(self, raw: Any) -> Any:
        """Raw values (any shape) -> [0, 1] (1: the best value seen)."""
        raw = np.asarray(raw, dtype=float)
        if self.hi == self.lo:
            return np.where(np.isnan(raw), np.nan, 0.5)
        span = self.hi - self.lo
        return (raw - self.lo) / span if self.higher_is_better else (self.hi - raw) / span

    def raw(self, normalised: Any) -> Any:
        """The inverse map: normalised values (any shape) -> the metric's units."""
        x = np.asarray(normalised, dtype=float)
        span = self.hi - self.lo
        return self.lo + x * span if self.higher_is_better else self.hi - x * span

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReferencePool:
    """Unique reference inputs with each model's target value.

    texts (n,), instance_ids (n,), task_of (n,) index into task_names (D,), models (M,),
    Y (n, M): correctness in {0, 1, nan} (target "correct") or normalised metric values in
    [0, 1] (target "score"; nan: no result). Rows are sorted by (task, instance_id).
    target "score" only: scales {metric: ScoreScale}; task_metrics (D,) the metric of each
    task ("a/b" when a task holds several).
    """

    texts: list[str]
    instance_ids: list[str]
    task_of: np.ndarray
    task_names: list[str]
    models: list[str]
    Y: np.ndarray
    target: str = "correct"
    scales: dict[str, ScoreScale] = field(default_factory=dict)
    task_metrics: list[str] = field(default_factory=list)


def _codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes (n,) int32, sorted distinct values): codes follow the values' sort order
    (-1: missing). A categorical column is coded from its categories (no string per row)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        cats = np.asarray(column.cat.categories.astype(object).astype(str), dtype=object)
        order = np.argsort(cats, kind="stable")
        rank = np.empty(len(cats) + 1, np.int32)
        rank[order] = np.arange(len(cats), dtype=np.int32)
        rank[-1] = -1  # code -1: a missing value
        return rank[column.cat.codes.to_numpy()], cats[order]
    codes, uniques = pd.factorize(column.astype(str), sort=True)
    return codes.astype(np.int32), np.asarray(uniques, dtype=object)


def _packed_keys(table: pd.DataFrame) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """(n,) int64 key per row, ordered like (task, instance_id, model) strings; the codes."""
    coded = [_codes(table[name]) for name in KEY]
    sizes = [max(len(values), 1) for _, values in coded]
    key = (coded[0][0].astype(np.int64) * sizes[1] + coded[1][0]) * sizes[2] + coded[2][0]
    return key, coded


def rows_by_task(task_of: np.ndarray, n_tasks: int) -> list[np.ndarray]:
    """Per task index 0..n_tasks-1, the increasing row numbers of its rows in ``task_of`` (n,)."""
    order = np.argsort(task_of, kind="stable")  # stable: rows stay increasing within a task
    bounds = np.searchsorted(task_of[order], np.arange(n_tasks + 1))
    return [order[bounds[d]:bounds[d + 1]] for d in range(n_tasks)]


def _check_unique(table: pd.DataFrame, key: np.ndarray) -> None:
    order = np.argsort(key, kind="stable")
    same = np.flatnonzero(key[order][1:] == key[order][:-1])
    if len(same):
        i = int(order[same[0]])
        row = {k: str(table[k].iloc[i]) for k in KEY}
        raise SchemaError(f"the correctness table repeats the key {row}: each (task, "
                          "instance_id, model) must appear once")


def build_pool(table: pd.DataFrame, models: Sequence[str] | None = None, *,
               target: str = "correct", thresholds: Any = None,
               scale_without: str | None = None) -> ReferencePool:
    """Pivot a results table into one row per (task, instance_id), one column per model.

    ``target`` "correct" pivots the 0/1 ``correct`` column (refusing rows whose correctness
    was guessed for a metric with no threshold, see ``thresholds.undeclared_raw_rows``);
    "score" pivots the raw ``score`` mapped per metric onto [0, 1] (:class:`ScoreScale`;
    the direction from ``thresholds.metric_directions``, ``thresholds`` a Thresholds or None
    for the shipped table).

    The input text of an instance is the first non-empty one in model order (models may
    have seen different prompts; the first is kept, deterministically). Works on integer
    codes of the key columns without sorting the rows (categorical columns, as
    ``Store.read_table(categorical=True)`` gives, are never expanded to a string per row):
    10M rows take a few int32/int64 arrays of the table's length besides Y.
    """
    target = check_target(target)
    if table.empty:
        raise LMRouterError("the correctness table is empty: ingest results first")
    needed = KEY + ([CORRECT] if target == "correct" else [SCORE, METRIC])
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise SchemaError(f"the {'correctness' if target == 'correct' else 'results'} table "
                          f"lacks column(s) {missing}" + (" (the raw metric values and their "
                          "metric names)" if target == "score" else ""))
    scales: dict[str, ScoreScale] = {}
    if target == "score":
        correct, scales, metric_code, metric_names = _score_values(table, thresholds,
                                                                   scale_without)
    else:
        correct = _correct_values(table, thresholds)
    (task_code, task_values), (inst_code, inst_values), (model_code, model_values) = (
        _codes(table[name]) for name in KEY)
    n_inst_values, n_model_values = max(len(inst_values), 1), max(len(model_values), 1)
    # instance = (task, instance_id), numbered in (task, instance_id) string order
    inst_key = task_code.astype(np.int64) * n_inst_values + inst_code
    del inst_code
    instance, inst_keys = _dense_rank(inst_key)
    del inst_key
    # each (instance, model) once: count rows per cell (uint8 saturates at 255, enough)
    cell = instance.astype(np.int64) * n_model_values + model_code
    counts = np.zeros(len(inst_keys) * n_model_values, np.uint8)
    np.add.at(counts, cell, 1)
    if (counts > 1).any():
        i = int(np.flatnonzero(counts[cell] > 1)[0])
        row = {k: str(table[k].iloc[i]) for k in KEY}
        raise SchemaError(f"the correctness table repeats the key {row}: each (task, "
                          "instance_id, model) must appear once")
    del counts, cell
    present = np.zeros(n_model_values, bool)
    present[model_code] = True
    if models is None:
        models = model_values[present].tolist()
        col_of = (np.cumsum(present) - 1).astype(np.int32)  # model code -> column
    else:
        models = list(models)
        position = {m: j for j, m in enumerate(models)}
        col_of = np.array([position.get(m, -1) for m in model_values], dtype=np.int32)
    column = col_of[model_code]
    del model_code
    if (column < 0).any():  # rows of models not asked for: drop them and renumber
        keep = np.flatnonzero(column >= 0)
        if len(keep) == 0:
            return ReferencePool(texts=[], instance_ids=[], task_of=np.zeros(0, np.int64),
                                 task_names=[], models=models,
                                 Y=np.zeros((0, len(models)), np.float32), target=target,
                                 scales=scales)
        column, correct = column[keep], correct[keep]
        if target == "score":
            metric_code = metric_code[keep]
        instance, inst_keys = _dense_rank(inst_keys[instance[keep]])
    else:
        keep = None
    n_models = len(models)
    Y = np.full((len(inst_keys), n_models), np.nan, dtype=np.float32)
    Y[instance, column] = correct
    # the text of each instance: the non-empty text of the first model (in ``models``
    # order) that has one, else the first model's: min over rows of (empty, column, text)
    if INPUT_TEXT in table.columns:
        text_code, text_values = _codes(table[INPUT_TEXT])
        if keep is not None:
            text_code = text_code[keep]
        n_text = len(text_values) + 1
        is_empty = (text_code < 0) | (np.asarray(text_values == "", bool)[text_code]
                                      if len(text_values) else True)
        text_code = np.where(text_code < 0, n_text - 1, text_code)
        rank = ((is_empty.astype(np.int64) * n_models + column) * n_text + text_code)
        best = np.full(len(inst_keys), np.iinfo(np.int64).max, np.int64)
        np.minimum.at(best, instance, rank)
        picked = best % n_text
        texts_all = np.append(text_values.astype(object), "")
        texts = [str(t) for t in texts_all[picked]]
    else:
        texts = [""] * len(inst_keys)
    tasks = inst_keys // n_inst_values
    used = np.unique(tasks)
    task_of = np.searchsorted(used, tasks).astype(np.int64)
    task_metrics: list[str] = []
    if target == "score":  # the metric(s) of each task, from its rows
        pairs = np.unique(task_of[instance] * len(metric_names) + metric_code)
        per_task: list[list[str]] = [[] for _ in used]
        for pair in pairs:
            per_task[pair // len(metric_names)].append(metric_names[pair % len(metric_names)])
        task_metrics = ["/".join(sorted(m)) for m in per_task]
    return ReferencePool(texts=texts,
                         instance_ids=[str(v) for v in inst_values[inst_keys % n_inst_values]],
                         task_of=task_of,
                         task_names=[str(v) for v in task_values[used]], models=models, Y=Y,
                         target=target, scales=scales, task_metrics=task_metrics)


def _row_name(table: pd.DataFrame, i: int) -> str:
    row = table.iloc[[i]][KEY].iloc[0]
    return ", ".join(f"{k}={row[k]!s}" for k in KEY)


def _correct_values(table: pd.DataFrame, thresholds: Any) -> np.ndarray:
    """(n,) float32 0/1 of ``correct``; SchemaError for another value or for correctness
    guessed without a threshold (a raw metric declared nowhere)."""
    from ..store.thresholds import undeclared_raw_rows

    correct = pd.to_numeric(table[CORRECT], errors="coerce").to_numpy(dtype=np.float32)
    bad = ~np.isin(correct, (0, 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        row = table.iloc[[i]][KEY + [CORRECT]].iloc[0].to_dict()  # Python scalars
        raise SchemaError(f"the correctness table has correct={row[CORRECT]!r} for "
                          f"{ {k: row[k] for k in KEY} }: 'correct' must be 0 or 1")
    guessed = undeclared_raw_rows(table, thresholds)
    if len(guessed):
        first = guessed.iloc[0]
        groups = guessed.drop_duplicates(["task", "metric"])
        raise SchemaError(
            f"--target correct: metric '{first['metric']}' of task '{first['task']}' has raw "
            f"values (e.g. {first['score']:g} for instance_id={first['instance_id']} "
            f"model={first['model']}) and no threshold, so its 'correct' is only a guess "
            f"(value > 0.5); {len(guessed)} rows in {len(groups)} (task, metric) pair(s). "
            "Route on the raw values with --target score, or declare the metric's eta "
            f"('metrics: {{{first['metric']}: {{threshold: X, higher_is_better: true}}}}' in "
            "a thresholds file) and re-ingest with --thresholds FILE --replace")
    return correct


def _score_values(table: pd.DataFrame, thresholds: Any, scale_without: str | None = None
                  ) -> tuple[np.ndarray, dict[str, ScoreScale], np.ndarray, list[str]]:
    """((n,) float32 normalised score, {metric: ScoreScale}, (n,) metric code per row,
    metric names). SchemaError naming the row for a missing column, a text, nan or
    infinite score. ``scale_without``: a task whose values do not set the scales (what a fit
    without it sees; a metric only that task has keeps its own range)."""
    from ..store.thresholds import metric_codes, metric_directions

    column = table[SCORE]
    raw = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(raw)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = column.iloc[i]
        kind = ("is not a number" if isinstance(value, str) and not _is_number(value)
                else "is not finite")
        shown = (repr(value) if isinstance(value, str) else "null" if value is None
                 else str(float(value)))
        raise SchemaError(
            f"--target score: the score of {_row_name(table, i)} {kind} ({shown}); "
            f"{int(bad.sum())} such row(s). Every row needs a finite metric value: fix the "
            "source and re-ingest with --replace, drop those rows, or use --target correct")
    metric_code, names = metric_codes(table)  # categorical: no string per row
    if len(metric_code) and metric_code.min() < 0:
        i = int(np.flatnonzero(metric_code < 0)[0])
        raise SchemaError(f"--target score: the row {_row_name(table, i)} has no metric name")
    # without a threshold or correct column (a plain results table) no row says its
    # direction: the thresholds table's then
    check = table.assign(**{c: np.nan for c in (THRESHOLD, CORRECT) if c not in table.columns})
    direction = metric_directions(check, thresholds)
    lo, hi = _metric_range(metric_code, raw, len(names))
    present = np.bincount(metric_code, minlength=len(names)) > 0  # (unused categories)
    if scale_without is not None:
        others = (table["task"] != scale_without).to_numpy()
        lo_o, hi_o = _metric_range(metric_code[others], raw[others], len(names))
        # a metric the other tasks hold with one value only gives no scale to place the
        # task's values on (all would map to 0.5, every model alike): then the whole range
        # (the task's own values set it: the one case they do; docs/raw-metrics.md)
        seen = np.isfinite(lo_o) & (hi_o > lo_o)
        for j in np.flatnonzero(np.isfinite(lo_o) & (hi_o == lo_o) & (hi > lo)):
            logger.info("--target score: the tasks other than %s hold metric %s with one "
                        "value only (%g); its range is taken with that task's values",
                        scale_without, names[j], lo_o[j])
        lo, hi = np.where(seen, lo_o, lo), np.where(seen, hi_o, hi)
    scales = {m: ScoreScale(m, float(lo[j]), float(hi[j]), direction[m])
              for j, m in enumerate(names) if present[j]}
    out = np.empty(len(raw), np.float32)
    for j, m in enumerate(names):
        if present[j]:
            rows = metric_code == j
            out[rows] = scales[m].normalise(raw[rows])
    return out, scales, metric_code, names


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _dense_rank(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank of each key among the distinct keys (n,) int64, the sorted distinct keys)."""
    if len(keys) and keys.max() < 1 << 27:  # a direct lookup table: no sort of n keys
        seen = np.zeros(int(keys.max()) + 1, bool)
        seen[keys] = True
        rank = np.cumsum(seen) - 1
        return rank[keys], np.flatnonzero(seen)
    distinct, inverse = np.unique(keys, return_inverse=True)
    return inverse.astype(np.int64), distinct


def _metric_range(metric_code: np.ndarray, raw: np.ndarray, n_metrics: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) (n_metrics,): each metric's smallest and largest value (inf / -inf: none)."""
    lo, hi = np.full(n_metrics, np.inf), np.full(n_metrics, -np.inf)
    np.minimum.at(lo, metric_code, raw)
    np.maximum.at(hi, metric_code, raw)
    return lo, hi


def add_raw_means(rows: dict[str, dict[str, Any]], per_task: list[dict[str, Any]],
                  pool: ReferencePool,
                  task_scales: dict[str, dict[str, ScoreScale]] | None = None) -> None:
    """Evaluation under target "score": put each row's mean in the metric's own units
    beside its normalised ``acc``, in place.

    Per task (``per_task[d][name]["acc_raw"]``): the inverse map of the task's metric
    applied to ``acc`` (the map is affine, so this is the mean raw value of the chosen
    model on the task's items, MoE's per-item picks included); None for a task mixing
    metrics. Per row: ``acc_raw_by_metric`` {metric: mean over that metric's tasks} and
    ``acc_raw``, that mean when every task has one and the same metric (else None).
    ``task_scales``: {task: scales} for tasks scored in other scales than the pool's (the
    strict evaluation's, from the other tasks).
    """
    metric_of = dict(zip(pool.task_names, pool.task_metrics))
    for name, summary in rows.items():
        by_metric: dict[str, list[float]] = {}
        for record in per_task:
            entry = record.get(name)
            if not isinstance(entry, dict) or "acc" not in entry:
                continue
            metric = metric_of.get(record["task"], "")
            scale = (task_scales or {}).get(record["task"], pool.scales).get(metric)
            value = (float(scale.raw(entry["acc"])) if scale is not None
                     and entry["acc"] == entry["acc"] else None)
            entry["acc_raw"] = value
            if value is not None:
                by_metric.setdefault(metric, []).append(value)
        summary["acc_raw_by_metric"] = {m: float(np.mean(v)) for m, v in by_metric.items()}
        single = len(set(pool.task_metrics)) == 1 and len(pool.scales) == 1
        summary["acc_raw"] = (summary["acc_raw_by_metric"].get(pool.task_metrics[0])
                              if single and pool.task_metrics else None)


#: Margins (normalised metric units) the per-input switch of target "score" chooses from;
#: inf: never leave the best model on average.
ROUTE_MARGINS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, math.inf)


def fit_route_margin(loo_g: np.ndarray, Y: np.ndarray, task_of: np.ndarray,
                     accuracy: np.ndarray, included: np.ndarray, allowed: np.ndarray
                     ) -> tuple[float, np.ndarray]:
    """The per-input confidence rule of ``route --target score``, learned leave-one-task-out
    on the reference tasks: leave BMA for the input's highest-g model only when its
    predicted value exceeds BMA's by more than a margin tau.

    Each included reference task z is routed as a new task: its rows' g from a fit without
    z (``loo_g`` (n, M)), its BMA from the other tasks' mean values (``accuracy`` (D, M),
    per task and model), and the realised gain over BMA of each tau is the mean of
    Y[chosen] - Y[BMA] over its rows. The tau of highest mean gain over tasks is kept (ties:
    the larger, more conservative). Returns (tau, mean gain per ROUTE_MARGINS entry (T,)).
    """
    tasks = np.flatnonzero(included)
    acc = accuracy[tasks]
    has = ~np.isnan(acc)
    total, count = np.where(has, acc, 0).sum(0), has.sum(0)
    gains = np.zeros((len(tasks), len(ROUTE_MARGINS)))
    rows_of = rows_by_task(task_of, len(accuracy))
    for i, z in enumerate(tasks):
        others_n = count - has[i]
        mean_others = np.divide(total - np.where(has[i], acc[i], 0), others_n,
                                out=np.full(len(total), -np.inf), where=others_n > 0)
        ok = allowed & has[i]
        if not ok.any():
            continue
        b = int(np.argmax(np.where(ok, mean_others, -np.inf)))
        rows = rows_of[z]
        g, y = loo_g[rows], Y[rows]
        gain = np.where(ok[None, :] & ~np.isnan(y), g - g[:, [b]], -np.inf)
        best = gain.argmax(1)
        top = gain[np.arange(len(rows)), best]
        realised = np.nan_to_num(y[np.arange(len(rows)), best] - y[:, b])
        gains[i] = [float(np.mean(np.where(top > tau, realised, 0.0))) for tau in ROUTE_MARGINS]
    mean = gains.mean(0)
    chosen = max(np.flatnonzero(mean >= mean.max() - 1e-12))
    return ROUTE_MARGINS[chosen], mean


def route_with_margin(g: np.ndarray, bma: int, tau: float, allowed: np.ndarray,
                      tie: np.ndarray) -> np.ndarray:
    """(n,) per-input model: the allowed model of highest g (ties: higher ``tie``) when
    it beats BMA's g by more than ``tau``, else BMA. g (n, M)."""
    adjusted = np.where(allowed[None, :], g + 1e-9 * tie[None, :], -np.inf)
    best = adjusted.argmax(1)
    lead = g[np.arange(len(g)), best] - g[:, bma]
    return np.where(lead > tau, best, bma)
