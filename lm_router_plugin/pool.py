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
    dup = table.duplicated(KEY, keep=False)
    if dup.any():
        row = table.loc[dup, KEY].iloc[0].to_dict()
        raise SchemaError(f"the correctness table repeats the key {row}: each (task, "
                          "instance_id, model) must appear once")


def build_pool(table: pd.DataFrame, models: Sequence[str] | None = None) -> ReferencePool:
    """Pivot a correctness table into one row per (task, instance_id), one column per model.

    The input text of an instance is the first non-empty one in model order (models may
    have seen different prompts; the first is kept, deterministically).
    """
    if table.empty:
        raise LMRouterError("the correctness table is empty: ingest results first")
    check_table(table)
    if INPUT_TEXT not in table.columns:
        table = table.assign(**{INPUT_TEXT: ""})
    models = sorted(table[MODEL].unique()) if models is None else list(models)
    table = table[table[MODEL].isin(models)]
    model_code = pd.Categorical(table[MODEL], categories=models).codes
    order = np.lexsort((model_code, table[INSTANCE_ID].to_numpy(), table[TASK].to_numpy()))
    table = table.iloc[order]
    model_code = model_code[order]
    key = table[TASK].astype(str) + "\x00" + table[INSTANCE_ID].astype(str)
    key_code, key_values = pd.factorize(key, sort=False)
    Y = np.full((len(key_values), len(models)), np.nan, dtype=np.float32)
    Y[key_code, model_code] = pd.to_numeric(table[CORRECT]).to_numpy(dtype=np.float32)
    texts = table[INPUT_TEXT].astype(str).to_numpy()
    has_text = texts != ""
    first = pd.Series(np.arange(len(table)))[has_text].groupby(key_code[has_text]).first()
    first_any = pd.Series(np.arange(len(table))).groupby(key_code).first()
    pick = first_any.copy()
    pick.loc[first.index] = first.to_numpy()
    pick = pick.sort_index().to_numpy()
    tasks = table[TASK].to_numpy()[pick]
    task_names = sorted(set(tasks.tolist()))
    task_index = {name: i for i, name in enumerate(task_names)}
    return ReferencePool(texts=texts[pick].tolist(),
                         instance_ids=table[INSTANCE_ID].astype(str).to_numpy()[pick].tolist(),
                         task_of=np.array([task_index[t] for t in tasks], dtype=np.int64),
                         task_names=task_names, models=models, Y=Y)
