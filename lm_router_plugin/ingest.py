"""Fill the store's correctness table from harness outputs.

    >>> report = ingest("lm-eval", ["runs/"], Store("lm-router-store"))
    >>> report.n_added, report.n_unchanged
    (1200, 0)

Rows stream from the adapter; thresholds turn metric values into 0/1; the result is merged
with the stored table (identical rows are skipped, a different value for an existing key is
a :class:`ConflictError` naming both files) and committed with the model metadata as one
atomic store generation, under the store's writer lock (store.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .errors import ConflictError, InputError
from .registry import adapters
from .schema import (
    CORRECT, KEY, MODEL, ORIGIN, SCORE, TASK, validate_table,
)
from .store import Store, parse_params
from .thresholds import Rule, Thresholds

logger = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What one ingest did."""

    n_read: int
    n_added: int
    n_unchanged: int
    n_replaced: int
    models: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)


def read_rows(adapter_name: str, paths: Sequence[str | Path],
              thresholds: Thresholds | None = None, **options: Any
              ) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Run one adapter over ``paths``: (validated table of new rows, model metadata)."""
    thresholds = thresholds or Thresholds.load()
    adapter = adapters.get(adapter_name)(thresholds=thresholds, **options)
    paths = [Path(p) for p in paths]
    remote = tuple(getattr(adapter, "remote_prefixes", ()))  # e.g. lm-eval's hf://datasets/
    for path in paths:
        if not path.exists() and not (remote and str(path).startswith(remote)):
            raise InputError(path, "no such file or folder")
    # Hot loop: keep the rows as they come and transpose them once at the end (zip in C);
    # per row only the rule lookup and two appends run in Python.
    rows: list[Any] = []
    thresholds_col: list[float | None] = []
    correct_col: list[int] = []
    add_row, add_threshold, add_correct = rows.append, thresholds_col.append, correct_col.append
    rules: dict[tuple[str, str, bool | None], Rule] = {}
    for row in adapter.read(paths):
        add_row(row)
        if row.correct is None:
            rule_key = (row.task, row.metric, row.higher_is_better)
            rule = rules.get(rule_key)
            if rule is None:
                rule = rules[rule_key] = thresholds.rule(row.task, row.metric,
                                                         row.higher_is_better)
            threshold, correct = rule.apply(row.score)
        else:
            threshold, correct = None, row.correct
        add_threshold(threshold)
        add_correct(correct)
    if not rows:
        raise InputError(", ".join(map(str, paths)),
                         f"nothing recognisable for the '{adapter_name}' adapter",
                         hint=f"is this the right adapter? available: {', '.join(adapters.names())}")
    (source, benchmark, task, instance_id, input_text, model, metric, score, _, origin,
     _, prompt_hash, text_rule) = zip(*rows)
    del rows
    columns = {"source": source, "benchmark": benchmark, "task": task,
               "instance_id": instance_id, "input_text": input_text, "model": model,
               "metric": metric, "score": score, "threshold": thresholds_col,
               "correct": correct_col, "origin": origin, "prompt_hash": prompt_hash,
               "text_rule": text_rule}
    table = pd.DataFrame(columns)
    table["threshold"] = table["threshold"].astype(float)
    return validate_table(table, where=", ".join(map(str, paths))), adapter.model_metadata


def merge_tables(stored: pd.DataFrame, new: pd.DataFrame, *, replace: bool = False
                 ) -> tuple[pd.DataFrame, int, int, int]:
    """Merge ``new`` into ``stored``: (merged, n_added, n_unchanged, n_replaced).

    Raises:
        ConflictError: a key in both with a different score or correctness (unless ``replace``).
    """
    if stored.empty:
        return new, len(new), 0, 0
    both = new.reset_index().merge(stored[KEY + [SCORE, CORRECT, ORIGIN]].reset_index(),
                                   on=KEY, suffixes=("", "_old"))
    same_score = (both[SCORE] == both[SCORE + "_old"]) | (
        both[SCORE].isna() & both[SCORE + "_old"].isna())
    differs = ~same_score | (both[CORRECT] != both[CORRECT + "_old"])
    if differs.any() and not replace:
        first = both[differs].iloc[0]
        raise ConflictError(
            f"conflicting values for task={first[TASK]!r} instance={first['instance_id']!r} "
            f"model={first[MODEL]!r}: {first[SCORE + '_old']} in {first[ORIGIN + '_old']} vs "
            f"{first[SCORE]} in {first[ORIGIN]} ({int(differs.sum())} such rows). Re-run with "
            "--replace to let the new files win; nothing was changed")
    drop_new = both.loc[~differs, "index"].to_numpy()
    drop_old = both.loc[differs, "index_old"].to_numpy()
    added = new.drop(index=np.concatenate([drop_new, both.loc[differs, "index"].to_numpy()]))
    merged = pd.concat([stored.drop(index=drop_old), new.drop(index=drop_new)],
                       ignore_index=True)
    return merged, len(added), len(drop_new), len(drop_old)


def load_models_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a model metadata YAML: ``{model: {params: 7B, cost_per_1m: 0.2}}``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(path, f"cannot read model metadata: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(path, "expected a mapping {model: {params: ..., cost_per_1m: ...}}")
    out: dict[str, dict[str, Any]] = {}
    for model, spec in data.items():
        if not isinstance(spec, dict) or set(spec) - {"params", "cost_per_1m"}:
            raise InputError(path, f"{model}: expected keys 'params' and/or 'cost_per_1m'")
        try:
            params = parse_params(spec.get("params"))
            cost = None if spec.get("cost_per_1m") is None else float(spec["cost_per_1m"])
        except ValueError as exc:
            raise InputError(path, f"{model}: {exc}") from exc
        out[str(model)] = {"params": params, "cost_per_1m": cost}
    return out


def ingest(adapter_name: str, paths: Sequence[str | Path], store: Store, *,
           thresholds: Thresholds | str | Path | None = None,
           models_file: str | Path | None = None, replace: bool = False,
           **options: Any) -> IngestReport:
    """Read ``paths`` with the named adapter and merge the rows into ``store``.

    Nothing is written unless every file was read without error.
    """
    if not isinstance(thresholds, Thresholds):
        thresholds = Thresholds.load(thresholds)
    user_models = load_models_file(models_file) if models_file else {}
    new, metadata = read_rows(adapter_name, paths, thresholds, **options)
    # The slow part (reading the files) is done; the read-merge-commit runs under the store's
    # writer lock so that a concurrent ingest cannot lose our rows or we theirs.
    with store.lock():
        stored = store.read_table()
        merged, n_added, n_unchanged, n_replaced = merge_tables(stored, new, replace=replace)
        old_models = store.read_models()
        models = {m: dict(spec) for m, spec in old_models.items()}
        for source in (metadata, user_models):  # the user's YAML wins over harness metadata
            for model, spec in source.items():
                entry = models.setdefault(model, {"params": None, "cost_per_1m": None})
                entry.update({k: v for k, v in spec.items() if v is not None})
        table_changed = bool(n_added or n_replaced or not store.has_table())
        if table_changed or models != old_models:  # one commit point for table + metadata
            store.commit(table=merged if table_changed else None, models=models)
    logger.info("ingested %d rows: %d added, %d already stored, %d replaced",
                len(new), n_added, n_unchanged, n_replaced)
    return IngestReport(n_read=len(new), n_added=n_added, n_unchanged=n_unchanged,
                        n_replaced=n_replaced, models=sorted(new[MODEL].unique()),
                        tasks=sorted(new[TASK].unique()))


def accuracy_table(table: pd.DataFrame) -> tuple[dict, dict]:
    """({task: {model: accuracy}}, {task: {model: n}}) of a correctness table."""
    grouped = table.groupby([TASK, MODEL], sort=True)[CORRECT].agg(["mean", "size"])
    accuracy: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}
    for (task, model), (mean, size) in grouped.iterrows():
        accuracy.setdefault(task, {})[model] = float(mean)
        counts.setdefault(task, {})[model] = int(size)
    return accuracy, counts


def score_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, model): metric, threshold eta, mean raw score, accuracy, n.

    ``metric`` and ``threshold`` join distinct values with "/" in the rare case of several
    (e.g. a task re-ingested with another --thresholds); ``threshold`` is NaN for binary
    metrics; ``mean_score`` is the harness's own mean of the metric (what its leaderboard
    shows), ``acc`` the share of rows counted correct after thresholding.
    """
    def joined(values: pd.Series) -> str:
        return "/".join(sorted({str(v) for v in values.dropna()}))

    def threshold(values: pd.Series) -> float | str:
        distinct = sorted(set(values.dropna()))
        if not distinct:
            return math.nan
        return distinct[0] if len(distinct) == 1 else "/".join(f"{v:g}" for v in distinct)

    grouped = table.groupby([TASK, MODEL], sort=True)
    out = grouped.agg(metric=("metric", joined), threshold=("threshold", threshold),
                      mean_score=(SCORE, "mean"), acc=(CORRECT, "mean"),
                      n=(CORRECT, "size")).reset_index()
    return out


__all__ = ["IngestReport", "accuracy_table", "score_summary", "ingest", "load_models_file", "merge_tables",
           "read_rows"]
