"""The correctness table: one row per (task, instance, model), stored as Parquet.

Column names are defined once here; every table that enters ingest or fit goes through
:func:`validate_table`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from ..errors import SchemaError

SOURCE = "source"  # lm-eval | helm | table
BENCHMARK = "benchmark"  # HELM suite / lm-eval group, may be empty
TASK = "task"
INSTANCE_ID = "instance_id"
INPUT_TEXT = "input_text"  # the instance's own text (zero-shot, no in-context examples)
MODEL = "model"
METRIC = "metric"
SCORE = "score"  # raw metric value
THRESHOLD = "threshold"  # eta used; null for binary metrics
CORRECT = "correct"  # 0/1
ORIGIN = "origin"  # the file the row was read from (named in conflict errors)
PROMPT_HASH = "prompt_hash"  # sha256 hex of the prompt the model saw; "" when unknown
TEXT_RULE = "text_rule"  # the rule that produced input_text (adapters/instance_text.py)

#: Version of the stored table's format. 1 (no version recorded): input_text held the prompt
#: the model saw; 2: the instance's own text, with prompt_hash and text_rule.
FORMAT_VERSION = 2

KEY = [TASK, INSTANCE_ID, MODEL]
COLUMNS = [SOURCE, BENCHMARK, TASK, INSTANCE_ID, INPUT_TEXT, MODEL, METRIC, SCORE, THRESHOLD,
           CORRECT, ORIGIN, PROMPT_HASH, TEXT_RULE]

ARROW_SCHEMA = pa.schema([
    (SOURCE, pa.string()),
    (BENCHMARK, pa.string()),
    (TASK, pa.string()),
    (INSTANCE_ID, pa.string()),
    (INPUT_TEXT, pa.string()),
    (MODEL, pa.string()),
    (METRIC, pa.string()),
    (SCORE, pa.float64()),
    (THRESHOLD, pa.float64()),
    (CORRECT, pa.int8()),
    (ORIGIN, pa.string()),
    (PROMPT_HASH, pa.string()),
    (TEXT_RULE, pa.string()),
])


#: The string columns. In memory they are held dictionary-encoded (Arrow dictionary arrays,
#: pandas categoricals): 10M rows share ~10k instance texts, ~1k models, ~20 tasks, so a
#: row costs an index per column, not a string (store.read_arrow, ingest.read_arrow).
STRING_COLUMNS = [SOURCE, BENCHMARK, TASK, INSTANCE_ID, INPUT_TEXT, MODEL, METRIC, ORIGIN,
                  PROMPT_HASH, TEXT_RULE]
DICT_TYPE = pa.dictionary(pa.int32(), pa.string())
ARROW_DICT_SCHEMA = pa.schema([pa.field(f.name, DICT_TYPE if f.name in STRING_COLUMNS
                                        else f.type) for f in ARROW_SCHEMA])


def empty_table() -> pd.DataFrame:
    """An empty correctness table with the right dtypes."""
    return ARROW_SCHEMA.empty_table().to_pandas()


def validate_table(df: pd.DataFrame, *, where: str = "table") -> pd.DataFrame:
    """Check columns, dtypes, ``correct`` in {0, 1}, keys present and unique, numeric scores;
    return a normalised copy.

    Raises:
        SchemaError: naming the missing column, the bad value (column and first row) or a
            duplicated key.
    """
    missing = [c for c in (TASK, INSTANCE_ID, MODEL, CORRECT) if c not in df.columns]
    if missing:
        raise SchemaError(f"{where}: missing column(s) {missing}; required: {KEY + [CORRECT]}")
    for col in KEY:  # astype(str) below would make a null the key "None" or "nan"
        null = df[col].isna().to_numpy()
        if null.any():
            i = int(np.flatnonzero(null)[0])
            raise SchemaError(f"{where}: column '{col}' is null at row {i}; every row needs a "
                              f"{col}")
    for col in (SCORE, THRESHOLD):  # to_numeric(errors="coerce") would make text a NaN
        if col in df.columns:
            bad = (pd.to_numeric(df[col], errors="coerce").isna() & df[col].notna()).to_numpy()
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise SchemaError(f"{where}: column '{col}' must be a number, got "
                                  f"{df[col].iloc[i]!r} at row {i}")
    out = df.copy()
    for col, default in ((SOURCE, "table"), (BENCHMARK, ""), (INPUT_TEXT, ""), (METRIC, "correct"),
                         (ORIGIN, where), (PROMPT_HASH, ""), (TEXT_RULE, "table")):
        if col not in out.columns:
            out[col] = default
    if SCORE not in out.columns:
        out[SCORE] = out[CORRECT].astype(float)
    if THRESHOLD not in out.columns:
        out[THRESHOLD] = np.nan
    for col in (SOURCE, BENCHMARK, TASK, INSTANCE_ID, INPUT_TEXT, MODEL, METRIC, ORIGIN,
                PROMPT_HASH, TEXT_RULE):
        out[col] = out[col].astype(str)
    correct = pd.to_numeric(out[CORRECT], errors="coerce")
    bad = ~correct.isin([0, 1])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise SchemaError(f"{where}: column '{CORRECT}' must be 0 or 1, got {df[CORRECT].iloc[i]!r} "
                          f"at row {i}")
    out[CORRECT] = correct.astype("int8")
    out[SCORE] = pd.to_numeric(out[SCORE], errors="coerce").astype(float)
    out[THRESHOLD] = pd.to_numeric(out[THRESHOLD], errors="coerce").astype(float)
    dup = out.duplicated(KEY, keep=False)
    if dup.any():
        row = out.loc[dup, KEY].iloc[0].to_dict()
        raise SchemaError(f"{where}: duplicated key {row}: each (task, instance_id, model) must "
                          "appear once")
    return out[COLUMNS].reset_index(drop=True)
