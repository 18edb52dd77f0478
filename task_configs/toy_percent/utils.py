"""Local data for this task folder, found relative to this file (works from any CWD).

lm-eval calls ``load`` through ``custom_dataset: !function utils.load`` in the task YAML.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets

HERE = Path(__file__).resolve().parent


def load(data_file: str | None = None, **_: Any) -> datasets.DatasetDict:
    """The ``test`` split read from ``data_file`` (default: ``<folder name>.jsonl`` here).

    lm-eval passes the task's ``metadata`` and ``dataset_kwargs`` as keyword arguments; only
    ``data_file`` (set it under ``dataset_kwargs``) is used.
    """
    path = HERE / (data_file or f"{HERE.name}.jsonl")
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
