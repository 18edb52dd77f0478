"""Texts of a new task's docs, rendered the way lm-eval renders them, or read from a file.

    >>> texts = task_texts("my_task", include_path="task_configs/")   # list[str], one per doc
    >>> prompts = read_prompts_file("prompts.jsonl")                   # {"prompt": ...} lines

A doc's text is its zero-shot rendering (``doc_to_text``), without the task description and
the in-context examples whatever the task's ``num_fewshot``: the same text the lm-eval
adapter stores for the reference runs, so new and reference texts are comparable.

lm-eval is imported only here, inside the functions.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .adapters.instance_text import multiple_input_text
from .errors import InputError, LMRouterError, UnknownNameError
from .registry import unknown_name_message

logger = logging.getLogger(__name__)

OFFLINE_VARS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


def _task_manager(include_path: str | None, include_defaults: bool) -> Any:
    from lm_eval.tasks import TaskManager

    kwargs: dict[str, Any] = {"include_path": include_path}
    try:
        return TaskManager(include_defaults=include_defaults, **kwargs)
    except TypeError:  # lm-eval < 0.4.2 has no include_defaults
        return TaskManager(**kwargs)


def _load_tasks(tm: Any, name: str) -> dict[str, Any]:
    """{leaf task name: Task} for a task, group or tag name."""
    if hasattr(tm, "load"):  # lm-eval 0.4.13
        return dict(tm.load([name])["tasks"])
    from lm_eval.tasks import get_task_dict  # 0.4.0 - 0.4.12

    leaves: dict[str, Any] = {}

    def walk(node: dict) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value)
            elif isinstance(value, tuple):  # (group config, task) in old versions
                leaves[getattr(value[1], "config", {}).task] = value[1]
            elif value is not None:
                leaves[getattr(key, "group", key) if not isinstance(key, str) else key] = value

    walk(get_task_dict([name], tm))
    return leaves


def _offline() -> str | None:
    """The offline variable the user set (HF_DATASETS_OFFLINE=1, ...), if any."""
    for var in OFFLINE_VARS:
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return var
    return None


def task_texts(name: str, include_path: str | Path | None = None, *,
               limit: int | None = None) -> list[str]:
    """One text per doc of an lm-eval task (or every leaf task of a group or tag).

    The text is lm-eval's ``doc_to_text(doc)``: the doc as the task renders it at
    ``num_fewshot`` 0, without the description (for a multiple-input task, the first
    choice's context). The user's environment decides about hub access (set
    ``HF_DATASETS_OFFLINE=1`` to use local data only).

    Raises:
        UnknownNameError: the task is unknown (with did-you-mean suggestions).
        LMRouterError: the task cannot be loaded or has no docs.
    """
    include = str(include_path) if include_path else None
    tm = _task_manager(include, include_defaults=include is None)
    if name not in tm.all_tasks and include is not None:
        tm = _task_manager(include, include_defaults=True)  # maybe a built-in task
    if name not in tm.all_tasks:
        raise UnknownNameError(unknown_name_message("lm-eval task", name, list(tm.all_tasks))
                               + ("" if include else " (pass --include-path DIR for your own "
                                  "task YAMLs)"))
    try:
        tasks = _load_tasks(tm, name)
    except Exception as exc:  # dataset missing, bad YAML, ...: lm-eval's own message
        offline = _offline()
        where = (f"exists locally (offline: {offline} is set, so nothing is downloaded)"
                 if offline else "can be downloaded or exists locally")
        raise LMRouterError(f"lm-eval could not load task '{name}' ({type(exc).__name__}: "
                            f"{exc}): check that its dataset {where} and is not empty") from exc
    texts: list[str] = []
    for leaf_name, task in sorted(tasks.items()):
        leaf = _texts_of(task, limit)
        texts.extend(leaf)
        logger.info("task %s: %d texts (doc_to_text, zero-shot)", leaf_name, len(leaf))
    if not texts:
        raise LMRouterError(f"lm-eval task '{name}' has no documents in its evaluation split")
    return texts


task_prompts = task_texts  # the name used before texts replaced few-shot prompts


def _texts_of(task: Any, limit: int | None) -> list[str]:
    """``doc_to_text`` of the task's first ``limit`` evaluation docs (lm-eval's own code)."""
    docs = task.eval_docs if hasattr(task, "eval_docs") else (
        task.test_docs() if task.has_test_docs() else task.validation_docs())
    texts = []
    for i, doc in enumerate(docs):
        if limit is not None and i >= limit:
            break
        # multiple inputs (winogrande): the first context and the continuation, as the adapter
        texts.append(multiple_input_text(task.doc_to_text(doc), task, doc))
    return texts


def read_prompts_file(path: str | Path) -> list[str]:
    """Prompts from a text file (one per line) or JSONL with a ``prompt`` field per line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(path, f"cannot read prompts: {exc.strerror}") from exc
    jsonl = path.suffix == ".jsonl" or (lines and lines[0].lstrip().startswith("{"))
    prompts: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if not jsonl:
            prompts.append(line)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"not valid JSON: {exc.msg}", line=number,
                             hint="one JSON object per line, or a plain text file") from exc
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise InputError(path, "missing string key 'prompt'", line=number)
        prompts.append(record["prompt"])
    if not prompts:
        raise InputError(path, "no prompts in the file",
                         hint="one prompt per line, or JSONL lines {\"prompt\": ...}")
    return prompts
