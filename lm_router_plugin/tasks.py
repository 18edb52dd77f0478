"""Prompts of a new task, built the way lm-eval builds them, or read from a file.

    >>> prompts = task_prompts("my_task", include_path="task_configs/")   # list[str]
    >>> prompts = read_prompts_file("prompts.jsonl")                       # {"prompt": ...} lines

lm-eval is imported only here, inside the functions.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .errors import InputError, LMRouterError, UnknownNameError
from .registry import unknown_name_message

logger = logging.getLogger(__name__)

FEWSHOT_SEED = 1234  # lm-eval's default --fewshot_seed, so prompts match the logged ones


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


def task_prompts(name: str, include_path: str | Path | None = None, *,
                 limit: int | None = None) -> list[str]:
    """One prompt per doc of an lm-eval task (or every leaf task of a group or tag).

    The prompt is the context lm-eval gives the model for the doc (description, few-shot
    examples from the task's seeded sampler, and the doc's text), i.e. the same text that
    ``--log_samples`` records as ``arguments.gen_args_0.arg_0``.

    Raises:
        UnknownNameError: the task is unknown (with did-you-mean suggestions).
        LMRouterError: the task has no docs.
    """
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local data only; never hang on a hub
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
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
    except Exception as exc:  # dataset missing offline, bad YAML, ...: lm-eval's own message
        raise LMRouterError(f"lm-eval could not load task '{name}' ({type(exc).__name__}: "
                            f"{exc}): check that its dataset exists locally and is not empty "
                            "(no hub downloads: HF_DATASETS_OFFLINE=1)") from exc
    prompts: list[str] = []
    for leaf_name, task in sorted(tasks.items()):
        prompts.extend(_prompts_of(task, limit))
        logger.info("task %s: %d prompts", leaf_name, len(prompts))
    if not prompts:
        raise LMRouterError(f"lm-eval task '{name}' has no documents in its evaluation split")
    return prompts


def _prompts_of(task: Any, limit: int | None) -> list[str]:
    if hasattr(task, "set_fewshot_seed"):
        task.set_fewshot_seed(seed=FEWSHOT_SEED)
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    first: dict[int, str] = {}
    for instance in task.instances:
        first.setdefault(instance.doc_id, instance.arguments[0])
    return [first[doc_id] for doc_id in sorted(first)]


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
