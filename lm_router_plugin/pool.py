"""The reference pool: the correctness table pivoted to one row per instance, one column per
model (what the correctness predictors and the calibration work on).

    >>> pool = build_pool(store.read_table())
    >>> pool.Y.shape          # (n instances, M models), values 0, 1 or nan (no result)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import LMRouterError, SchemaError
from .schema import CORRECT, INPUT_TEXT, INSTANCE_ID, KEY, MODEL, TASK


@dataclass
class ReferencePool:
    """Unique reference inputs with their correctness per model.

    texts (n,), instance_ids (n,), task_of (n,) index into task_names (D,), models (M,),
    Y (n, M) in {0, 1, nan}. Rows are sorted by (task, instance_id).
    """

    texts: list[str]
    instance_ids: list[str]
    task_of: np.ndarray
    task_names: list[str]
    models: list[str]
    Y: np.ndarray


def _codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes (n,) int64, sorted distinct values): codes follow the values' sort order.

    A categorical column is coded from its categories (no Python string per row)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        cats = np.asarray(column.cat.categories.astype(str), dtype=object)
        order = np.argsort(cats, kind="stable")
        rank = np.empty(len(cats) + 1, np.int64)
        rank[order] = np.arange(len(cats))
        rank[-1] = -1  # code -1: a missing value
        codes = rank[column.cat.codes.to_numpy()]
        return codes, cats[order]
    codes, uniques = pd.factorize(column.astype(str), sort=True)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def _packed_keys(table: pd.DataFrame) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """(n,) int64 key per row, ordered like (task, instance_id, model) strings; the codes."""
    coded = [_codes(table[name]) for name in KEY]
    sizes = [max(len(values), 1) for _, values in coded]
    key = (coded[0][0] * sizes[1] + coded[1][0]) * sizes[2] + coded[2][0]
    return key, coded


def check_table(table: pd.DataFrame) -> None:
    """The checks a table must pass before fitting: the key columns, ``correct`` in {0, 1}
    and each (task, instance_id, model) once. Raises SchemaError naming the first problem."""
    missing = [c for c in KEY + [CORRECT] if c not in table.columns]
    if missing:
        raise SchemaError(f"the correctness table lacks column(s) {missing}")
    correct = pd.to_numeric(table[CORRECT], errors="coerce")
    bad = ~correct.isin([0, 1])
    if bad.any():
        row = table.loc[bad, KEY + [CORRECT]].iloc[0].to_dict()
        raise SchemaError(f"the correctness table has correct={row[CORRECT]!r} for "
                          f"{ {k: row[k] for k in KEY} }: 'correct' must be 0 or 1")
    key, _ = _packed_keys(table)
    _check_unique(table, key)


def _check_unique(table: pd.DataFrame, key: np.ndarray) -> None:
    order = np.argsort(key, kind="stable")
    same = np.flatnonzero(key[order][1:] == key[order][:-1])
    if len(same):
        i = int(order[same[0]])
        row = {k: str(table[k].iloc[i]) for k in KEY}
        raise SchemaError(f"the correctness table repeats the key {row}: each (task, "
                          "instance_id, model) must appear once")


def build_pool(table: pd.DataFrame, models: Sequence[str] | None = None) -> ReferencePool:
    """Pivot a correctness table into one row per (task, instance_id), one column per model.

    The input text of an instance is the first non-empty one in model order (models may
    have seen different prompts; the first is kept, deterministically). Works on integer
    codes of the key columns (categorical columns, as ``Store.read_table(categorical=True)``
    gives, are never expanded to a string per row): time O(rows log rows), memory a few
    int64 arrays of the table's length plus Y.
    """
    if table.empty:
        raise LMRouterError("the correctness table is empty: ingest results first")
    missing = [c for c in KEY + [CORRECT] if c not in table.columns]
    if missing:
        raise SchemaError(f"the correctness table lacks column(s) {missing}")
    correct = pd.to_numeric(table[CORRECT], errors="coerce").to_numpy(dtype=np.float32)
    bad = ~np.isin(correct, (0, 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        row = {k: table[k].iloc[i] for k in KEY + [CORRECT]}
        raise SchemaError(f"the correctness table has correct={row[CORRECT]!r} for "
                          f"{ {k: row[k] for k in KEY} }: 'correct' must be 0 or 1")
    key, coded = _packed_keys(table)
    _check_unique(table, key)
    (task_code, task_values), (inst_code, inst_values), (model_code, model_values) = coded
    present = np.zeros(len(model_values), bool)
    present[model_code] = True
    if models is None:
        models = model_values[present].tolist()
        col_of = np.cumsum(present) - 1  # model code -> column (sorted names)
        keep = np.ones(len(table), bool)
    else:
        models = list(models)
        position = {m: j for j, m in enumerate(models)}
        col_of = np.array([position.get(m, -1) for m in model_values], dtype=np.int64)
        keep = col_of[model_code] >= 0
    rows = np.flatnonzero(keep)
    if len(rows) == 0:  # none of ``models`` in the table
        return ReferencePool(texts=[], instance_ids=[], task_of=np.zeros(0, np.int64),
                             task_names=[], models=models,
                             Y=np.zeros((0, len(models)), np.float32))
    column = col_of[model_code[rows]]
    n_models = len(models)
    # instance = (task, instance_id); rows ordered by instance, then by model column
    inst_key = task_code[rows] * max(len(inst_values), 1) + inst_code[rows]
    order = np.lexsort((column, inst_key))
    rows, column, inst_key = rows[order], column[order], inst_key[order]
    starts = np.flatnonzero(np.r_[True, inst_key[1:] != inst_key[:-1]])
    instance = np.cumsum(np.r_[False, inst_key[1:] != inst_key[:-1]])
    Y = np.full((len(starts), n_models), np.nan, dtype=np.float32)
    Y[instance, column] = correct[rows]
    # the text of each instance: its first non-empty one in model order, else its first
    if INPUT_TEXT in table.columns:
        text_code, text_values = _codes(table[INPUT_TEXT])
        codes = text_code[rows]
        empty = (codes < 0) | (text_values[np.maximum(codes, 0)] == "") if len(text_values) \
            else np.ones(len(rows), bool)
        pick = starts.copy()
        nonempty = np.flatnonzero(~empty)
        if len(nonempty):
            first = np.unique(instance[nonempty], return_index=True)
            pick[first[0]] = nonempty[first[1]]
        texts = [str(text_values[c]) if c >= 0 else "" for c in codes[pick]]
    else:
        pick = starts
        texts = [""] * len(starts)
    first_rows = rows[pick]
    tasks = task_code[first_rows]
    used = np.unique(tasks)
    task_names = task_values[used].tolist()
    task_of = np.searchsorted(used, tasks).astype(np.int64)
    return ReferencePool(texts=texts,
                         instance_ids=inst_values[inst_code[first_rows]].astype(str).tolist(),
                         task_of=task_of, task_names=task_names, models=models, Y=Y)
