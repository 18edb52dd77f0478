"""Per-metric thresholds eta that turn metric values into correct/incorrect.

Defaults ship in ``thresholds.yaml``; a user file overrides them::

    metrics:
      f1_score: 0.4                                  # change a default
      judge_score: {threshold: 7, higher_is_better: true}   # declare a new metric
    tasks:
      narrative_qa: {metric: rouge_l, threshold: 0.3}  # per task: which metric, which eta
      gsm8k: {filter: flexible-extract}                # lm-eval: which filter's lines to read

    >>> rule = Thresholds.load().rule("my_task", "f1_score")
    >>> rule.apply(0.7)
    (0.5, 1)
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..errors import InputError, SchemaError
from ..registry import unknown_name_message

logger = logging.getLogger(__name__)

BINARY = "binary"
_AT_K = re.compile(r"@\d+$")
_TASK_KEYS = {"metric", "threshold", "filter", "higher_is_better"}
_TOP_KEYS = ("metrics", "tasks")


#: The eta of the binary fallback (a value outside {0, 1} of a binary or undeclared metric).
FALLBACK_ETA = 0.5


@dataclass(frozen=True)
class Rule:
    """How one (task, metric) becomes 0/1: ``threshold`` None means the value is binary.

    ``declared`` is False for a metric with no entry anywhere (no default, no user file):
    its values outside {0, 1} are still thresholded at FALLBACK_ETA (so ingest never stops),
    but the stored threshold stays null, which marks the row's ``correct`` as a guess
    (:func:`undeclared_raw_groups` finds such rows; ``--target correct`` refuses them).
    """

    metric: str
    threshold: float | None
    higher_is_better: bool = True
    declared: bool = True

    def apply(self, score: float) -> tuple[float | None, int]:
        """(threshold used, correct) for one metric value (threshold None: none was
        declared, or the value was binary)."""
        if self.threshold is None:
            if score == 0 or score == 1:
                return None, int(score)
            # a "binary" metric with a fractional value: the documented fallback (ingest
            # warns once per task and metric: ingest.log_binary_fallback)
            eta = FALLBACK_ETA
        else:
            eta = self.threshold
        correct = score > eta if self.higher_is_better else score < eta
        return (eta if self.declared or self.threshold is not None else None), int(correct)

    def apply_array(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`apply` of many finite or NaN scores at once: (threshold used, NaN for
        none; correct as int8)."""
        eta = FALLBACK_ETA if self.threshold is None else self.threshold
        correct = scores > eta if self.higher_is_better else scores < eta
        recorded = eta if self.declared or self.threshold is not None else np.nan
        threshold = np.full(len(scores), recorded, dtype=float)
        if self.threshold is None:  # binary: a 0 or 1 is its own correctness, no eta
            binary = (scores == 0) | (scores == 1)
            correct[binary] = scores[binary] == 1
            threshold[binary] = np.nan
        return threshold, correct.astype(np.int8)


@dataclass
class Thresholds:
    """Default and user thresholds; ``rule(task, metric)`` resolves one pair."""

    metrics: dict[str, float | str] = field(default_factory=dict)
    lower_is_better: set[str] = field(default_factory=set)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    _warned: set[tuple[str, str]] = field(default_factory=set, repr=False)

    @classmethod
    def load(cls, path: str | Path | None = None) -> Thresholds:
        """The shipped defaults, overridden by the YAML file at ``path`` if given.

        Raises:
            InputError: unreadable file, unknown metric name, or a non-numeric threshold.
        """
        text = resources.files("lm_router_plugin").joinpath("thresholds.yaml").read_text()
        base = yaml.safe_load(text)
        out = cls(metrics=dict(base["metrics"]), lower_is_better=set(base["lower_is_better"]),
                  tasks={})
        if path is not None:
            out._merge_user_file(Path(path))
        return out

    def _merge_user_file(self, path: Path) -> None:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise InputError(path, f"cannot read thresholds file: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise InputError(path, f"not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise InputError(path, "expected a mapping with top-level keys 'metrics' and/or "
                                   "'tasks'", hint="see the README section 'Thresholds'")
        for key in data:
            if key not in _TOP_KEYS:  # e.g. the shipped file's 'lower_is_better' list
                raise InputError(path, unknown_name_message("top-level key", str(key),
                                                            sorted(_TOP_KEYS)),
                                 hint="a metric where lower is better is declared as "
                                      "'metrics: {NAME: {threshold: X, higher_is_better: "
                                      "false}}'; see the README section 'Thresholds'")
        for key in _TOP_KEYS:
            if data.get(key) is not None and not isinstance(data[key], dict):
                raise InputError(path, f"{key}: expected a mapping, got {data[key]!r}")
        for metric, spec in (data.get("metrics") or {}).items():
            metric = str(metric)
            if isinstance(spec, dict):  # declares a new metric (or redefines one) fully
                for key in spec:
                    if key not in ("threshold", "higher_is_better"):
                        raise InputError(path, f"metrics.{metric}: " + unknown_name_message(
                            "key", str(key), ["higher_is_better", "threshold"]))
                if "threshold" not in spec:
                    raise InputError(path, f"metrics.{metric}: missing key 'threshold'")
                if not isinstance(spec.get("higher_is_better", True), bool):
                    raise InputError(path, f"metrics.{metric}.higher_is_better: expected "
                                           f"true or false, got {spec['higher_is_better']!r}")
                self.metrics[metric] = self._number(path, f"metrics.{metric}.threshold",
                                                    spec["threshold"])
                if not spec.get("higher_is_better", True):
                    self.lower_is_better.add(metric)
                else:
                    self.lower_is_better.discard(metric)
                continue
            if self._base(metric) not in self.metrics:
                raise InputError(path, "metrics: " + unknown_name_message(
                    "metric", metric, list(self.metrics)),
                    hint=f"declare a new metric as '{metric}: {{threshold: X, "
                         "higher_is_better: true}'")
            self.metrics[metric] = (BINARY if spec == BINARY
                                    else self._number(path, f"metrics.{metric}", spec))
        for task, spec in (data.get("tasks") or {}).items():
            if not isinstance(spec, dict) or set(spec) - _TASK_KEYS:
                raise InputError(path, f"tasks.{task}: expected a mapping with keys among "
                                       f"{sorted(_TASK_KEYS)}")
            if not isinstance(spec.get("higher_is_better", True), bool):  # "false" is truthy
                raise InputError(path, f"tasks.{task}.higher_is_better: expected true or false, "
                                       f"got {spec['higher_is_better']!r}",
                                 hint="write it without quotes: higher_is_better: false")
            if "threshold" in spec:
                spec = {**spec, "threshold": self._number(path, f"tasks.{task}.threshold",
                                                          spec["threshold"])}
            if "metric" in spec and self._base(str(spec["metric"])) not in self.metrics \
                    and "threshold" not in spec:
                raise InputError(path, f"tasks.{task}.metric: " + unknown_name_message(
                    "metric", str(spec["metric"]), list(self.metrics)),
                    hint="give a 'threshold' for a metric that has no default")
            self.tasks[str(task)] = dict(spec)

    @staticmethod
    def _number(path: Path, key: str, value: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not math.isfinite(number):
            raise InputError(path, f"{key}: threshold must be a number, got {value!r}")
        return number

    @staticmethod
    def _base(metric: str) -> str:
        return _AT_K.sub("", metric)

    def task_metric(self, task: str) -> str | None:
        """The metric configured for ``task``, if any."""
        return self.tasks.get(task, {}).get("metric")

    def task_filter(self, task: str) -> str | None:
        """The lm-eval filter configured for ``task``, if any."""
        return self.tasks.get(task, {}).get("filter")

    def is_binary(self, metric: str, task: str | None = None) -> bool:
        """Whether ``metric`` (on ``task``, if given) is declared binary (no eta of its own; a
        value outside {0, 1} falls back to FALLBACK_ETA), as :meth:`rule` resolves it."""
        task_spec = self.tasks.get(task, {}) if task is not None else {}
        if "threshold" in task_spec and task_spec.get("metric", metric) == metric:
            return False
        return self.metrics.get(self._base(metric)) == BINARY

    def is_known(self, metric: str) -> bool:
        return self._base(metric) in self.metrics or metric in self.lower_is_better

    def higher_is_better(self, metric: str, hint: bool | None = None) -> bool:
        """Direction: the harness's own ``higher_is_better`` when given, else our table."""
        if hint is not None:
            return bool(hint)
        return self._base(metric) not in self.lower_is_better

    def rule(self, task: str, metric: str, higher_is_better: bool | None = None) -> Rule:
        """The rule for ``metric`` on ``task``: task override, then metric default.

        A metric with no entry is treated as binary (correct = value for 0/1 values, else
        value > 0.5) and logged once, so unknown harness metrics never stop an ingest.
        """
        hib = self.higher_is_better(metric, higher_is_better)
        task_spec = self.tasks.get(task, {})
        if "higher_is_better" in task_spec:
            hib = bool(task_spec["higher_is_better"])
        if "threshold" in task_spec and task_spec.get("metric", metric) == metric:
            return Rule(metric, float(task_spec["threshold"]), hib)
        spec = self.metrics.get(self._base(metric))
        if spec is None:
            if (task, metric) not in self._warned:
                self._warned.add((task, metric))
                logger.warning("task %s: metric '%s' has no threshold; treating it as binary "
                               "(values other than 0/1 are thresholded at 0.5, and --target "
                               "correct refuses them). Set one with --thresholds, or route on "
                               "the raw values with --target score.", task, metric)
            return Rule(metric, None, hib, declared=False)
        return Rule(metric, None if spec == BINARY else float(spec), hib)


# -- reading the stored rows back -------------------------------------------------------------
def _column(table: pd.DataFrame, name: str) -> np.ndarray:
    return pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=float)


def metric_codes(table: pd.DataFrame, column: str = "metric") -> tuple[np.ndarray, list[str]]:
    """(codes (n,) int64, names): a categorical column (``read_table(categorical=True)``)
    is coded from its categories, without a string per row (10M rows)."""
    values = table[column]
    if isinstance(values.dtype, pd.CategoricalDtype):
        names = [str(c) for c in values.cat.categories]
        return values.cat.codes.to_numpy().astype(np.int64), names
    codes, uniques = pd.factorize(values.astype(str), sort=True)
    return codes.astype(np.int64), [str(n) for n in uniques]


def metric_directions(table: pd.DataFrame, thresholds: Thresholds | None = None
                      ) -> dict[str, bool]:
    """{metric: higher_is_better} for every metric of a stored table (columns metric, score,
    threshold, correct).

    The store keeps no direction column, but a thresholded row records it: correct is
    1[score > eta] where higher is better and 1[score < eta] where lower is better. So the
    direction ingest used (the harness's own hint: HELM's schema, lm-eval's
    ``higher_is_better``, EEE's ``lower_is_better``, or the thresholds file) is read back
    from every row with a recorded eta and a score != eta. A metric without such rows
    (binary values, or correctness given by the source) takes the direction of
    ``thresholds`` (default: the shipped table's ``lower_is_better`` list).

    Raises:
        SchemaError: a metric whose rows were thresholded in both directions (naming two).
    """
    thresholds = thresholds or Thresholds.load()
    codes, names = metric_codes(table)
    score, eta = _column(table, "score"), _column(table, "threshold")
    correct = _column(table, "correct")
    informative = np.isfinite(eta) & np.isfinite(score) & (score != eta)
    # per row: does it agree with "higher is better" (1[score > eta])?
    agrees = (correct == 1) == (score > eta)
    out: dict[str, bool] = {}
    for code, metric in enumerate(names):
        rows = informative & (codes == code)
        if not rows.any():
            out[metric] = thresholds.higher_is_better(metric)
            continue
        up, down = rows & agrees, rows & ~agrees
        if up.any() and down.any():
            a, b = int(np.flatnonzero(up)[0]), int(np.flatnonzero(down)[0])
            raise SchemaError(
                f"metric '{metric}' was thresholded in both directions: {_where(table, a)} "
                f"has score {score[a]:g}, eta {eta[a]:g}, correct {int(correct[a])} (higher is "
                f"better) but {_where(table, b)} has score {score[b]:g}, eta {eta[b]:g}, "
                f"correct {int(correct[b])} (lower is better); re-ingest one of them with "
                "--replace and a thresholds file that declares the direction")
        out[metric] = bool(up.any())
    return out


def undeclared_raw_rows(table: pd.DataFrame, thresholds: Thresholds | None = None
                        ) -> pd.DataFrame:
    """The rows whose ``correct`` is a guess: a metric declared nowhere (no shipped default;
    a user file's eta would have been recorded), a finite score outside {0, 1}, no recorded
    eta, and a ``correct`` that is exactly the fallback 1[score > 0.5] (or < 0.5) over all
    such rows of its (task, metric). Returns those rows (task, instance_id, model, metric,
    score); empty when there are none (or the table lacks the columns)."""
    needed = ("task", "instance_id", "model", "metric", "score", "threshold", "correct")
    if any(c not in table.columns for c in needed):
        return table.iloc[:0]
    thresholds = thresholds or Thresholds.load()
    codes, names = metric_codes(table)
    unknown = np.array([not thresholds.is_known(m) for m in names], dtype=bool)
    if not unknown.any():
        return table.iloc[:0]
    score, eta = _column(table, "score"), _column(table, "threshold")
    correct = _column(table, "correct")
    raw = unknown[codes] & np.isnan(eta) & np.isfinite(score) & (score != 0) & (score != 1)
    if not raw.any():
        return table.iloc[:0]
    rows = table.loc[raw, ["task", "instance_id", "model", "metric"]].astype(str)
    rows = rows.assign(score=score[raw], _up=(correct[raw] == 1) == (score[raw] > FALLBACK_ETA),
                       _down=(correct[raw] == 1) == (score[raw] < FALLBACK_ETA))
    group = rows.groupby(["task", "metric"], sort=True)
    guessed = group["_up"].transform("all") | group["_down"].transform("all")
    return rows.loc[guessed, ["task", "instance_id", "model", "metric", "score"]]


def _where(table: pd.DataFrame, i: int) -> str:
    row = table.iloc[i]
    return f"task={row['task']!s} instance_id={row['instance_id']!s} model={row['model']!s}"
