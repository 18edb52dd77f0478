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

from ..errors import LMRouterError, SchemaError
from ..store.schema import CORRECT, INPUT_TEXT, KEY


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
    codes of the key columns without sorting the rows (categorical columns, as
    ``Store.read_table(categorical=True)`` gives, are never expanded to a string per row):
    10M rows take a few int32/int64 arrays of the table's length besides Y.
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
        row = table.iloc[[i]][KEY + [CORRECT]].iloc[0].to_dict()  # Python scalars
        raise SchemaError(f"the correctness table has correct={row[CORRECT]!r} for "
                          f"{ {k: row[k] for k in KEY} }: 'correct' must be 0 or 1")
    del bad
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
                                 Y=np.zeros((0, len(models)), np.float32))
        column, correct = column[keep], correct[keep]
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
    return ReferencePool(texts=texts,
                         instance_ids=[str(v) for v in inst_values[inst_keys % n_inst_values]],
                         task_of=np.searchsorted(used, tasks).astype(np.int64),
                         task_names=[str(v) for v in task_values[used]], models=models, Y=Y)


def _dense_rank(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank of each key among the distinct keys (n,) int64, the sorted distinct keys)."""
    if len(keys) and keys.max() < 1 << 27:  # a direct lookup table: no sort of n keys
        seen = np.zeros(int(keys.max()) + 1, bool)
        seen[keys] = True
        rank = np.cumsum(seen) - 1
        return rank[keys], np.flatnonzero(seen)
    distinct, inverse = np.unique(keys, return_inverse=True)
    return inverse.astype(np.int64), distinct
