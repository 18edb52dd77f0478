"""Helpers shared by the router_toy tasks: local data found relative to this file (works
from any CWD), and the per-sample ``token_f1`` metric of ``toy_cooking``.

lm-eval calls ``load`` through ``custom_dataset: !function utils.load`` in each task YAML,
with ``dataset_kwargs: {data_file: <task>.jsonl}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets

HERE = Path(__file__).resolve().parent


def load(data_file: str, **_: Any) -> datasets.DatasetDict:
    """The ``test`` split read from ``data_file`` (a JSONL file beside this one).

    lm-eval passes the task's ``metadata`` and ``dataset_kwargs`` as keyword arguments; only
    ``data_file`` (set it under ``dataset_kwargs``) is used.
    """
    path = HERE / data_file
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def doc_to_text(doc: dict) -> str:
    """The prompt of ``toy_units`` (as the other tasks' Jinja template, in Python)."""
    return f"Question: {doc['question']}\nAnswer:"


def _tokens(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() else " " for c in text).split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 in [0, 1] between two texts (bag of lower-cased words)."""
    pred, ref = _tokens(prediction), _tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = 0
    remaining = list(ref)
    for token in pred:
        if token in remaining:
            remaining.remove(token)
            common += 1
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """Per-sample ``token_f1`` of the generated answer against ``doc["answer"]``."""
    return {"token_f1": token_f1(results[0], doc["answer"])}
