"""Texts of a new task's docs, rendered the way lm-eval renders them, or read from a file.

    >>> texts = task_texts("my_task", include_path="task_configs/")   # list[str], one per doc
    >>> prompts = read_prompts_file("prompts.jsonl")   # one {"prompt": "..."} object per line
    >>> prompts = read_prompts_file("prompts.txt")     # one prompt per line

A doc's text is its zero-shot rendering (``doc_to_text``), without the task description and
the in-context examples whatever the task's ``num_fewshot``: the same text the lm-eval
adapter stores for the reference runs, so new and reference texts are comparable.

lm-eval is imported only here, inside the functions.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from pathlib import Path
from typing import Any

from ..adapters.instance_text import multiple_input_text
from ..errors import InputError, LMRouterError, UnknownNameError

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
        InputError: the task is unknown and a YAML file of ``include_path`` cannot be parsed.
        LMRouterError: the task cannot be loaded, has no docs, or ``doc_to_text`` fails on a
            doc (naming the leaf task, the doc index and lm-eval's message).
    """
    return [text for _, texts, _ in task_leaves(name, include_path, limit=limit)
            for text in texts]


def task_leaves(name: str, include_path: str | Path | None = None, *,
                limit: int | None = None) -> list[tuple[str, list[str], list[Any]]]:
    """[(leaf task, its texts, its docs)] of an lm-eval task, leaves sorted by name: the
    texts of :func:`task_texts` and the docs they were rendered from (lm-eval's
    ``eval_docs``, the dicts a sample log carries as ``doc``). Raises as task_texts."""
    include = str(include_path) if include_path else None
    tm = _task_manager(include, include_defaults=include is None)
    if name not in tm.all_tasks and include is not None:
        tm = _task_manager(include, include_defaults=True)  # maybe a built-in task
    if name not in tm.all_tasks:
        _unknown_task(name, include, list(tm.all_tasks))
    try:
        tasks = _load_tasks(tm, name)
    except Exception as exc:  # dataset missing, bad YAML, ...: lm-eval's own message
        offline = _offline()
        where = (f"exists locally (offline: {offline} is set, so nothing is downloaded)"
                 if offline else "can be downloaded or exists locally")
        raise LMRouterError(f"lm-eval could not load task '{name}' ({type(exc).__name__}: "
                            f"{exc}): check that its dataset {where} and is not empty") from exc
    out = []
    for leaf_name, task in sorted(tasks.items()):
        texts, docs = _texts_of(task, limit, leaf_name)
        out.append((leaf_name, texts, docs))
        logger.info("task %s: %d texts (doc_to_text, zero-shot)", leaf_name, len(texts))
    if not any(texts for _, texts, _ in out):
        raise LMRouterError(f"lm-eval task '{name}' has no documents in its evaluation split")
    return out


task_prompts = task_texts  # the name used before texts replaced few-shot prompts


def _texts_of(task: Any, limit: int | None, name: str = "") -> tuple[list[str], list[Any]]:
    """(``doc_to_text``, doc) of the task's first ``limit`` evaluation docs (lm-eval's own
    code). A doc_to_text that fails (a Python ``!function``, a template) is one error naming
    the task and the doc: lm-eval would fail on it too."""
    name = name or str(getattr(getattr(task, "config", None), "task", "") or "?")
    try:
        docs = task.eval_docs if hasattr(task, "eval_docs") else (
            task.test_docs() if task.has_test_docs() else task.validation_docs())
    except Exception as exc:  # process_docs runs here in lm-eval 0.4.x
        raise LMRouterError(f"lm-eval task '{name}': cannot read its evaluation docs "
                            f"({type(exc).__name__}: {exc}): fix its process_docs or "
                            "dataset") from exc
    texts, kept = [], []
    for i, doc in enumerate(docs):
        if limit is not None and i >= limit:
            break
        try:
            # multiple inputs (winogrande): the first context and the continuation, as the
            # adapter
            texts.append(multiple_input_text(task.doc_to_text(doc), task, doc))
        except Exception as exc:  # user code: KeyError, a template's undefined name, ...
            raise LMRouterError(f"lm-eval task '{name}': doc_to_text failed on doc {i} "
                                f"({type(exc).__name__}: {exc}): fix the task's doc_to_text "
                                "or that doc (lm_eval would fail on it too)") from exc
        kept.append(doc)
    return texts, kept


def _unknown_task(name: str, include: str | None, known: list[str]) -> None:
    """Raise the error for a task lm-eval does not know: a YAML file of ``include`` that
    lm-eval could not parse (it skips such files silently) is named first, with the parser's
    message; else the closest names (not the thousands of built-in ones)."""
    broken = _unreadable_yamls(include) if include else []
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    # a broken file that names the task is the reason: no other names then
    named = any(name in path.read_text(errors="replace") for path, _, _ in broken)
    maybe = f"; or did you mean: {', '.join(close)}?" if close and not named else ""
    if len(broken) == 1:
        path, line, problem = broken[0]
        raise InputError(path, problem, line=line, hint=f"lm-eval skips a task YAML it "
                         f"cannot read, so task '{name}' is unknown: fix the file{maybe}")
    if broken:
        where = "; ".join(f"{path}{f' line {line}' if line else ''}: {problem}"
                          for path, line, problem in broken[:5])
        more = f" (and {len(broken) - 5} more)" if len(broken) > 5 else ""
        raise LMRouterError(f"lm-eval task '{name}' is unknown and {len(broken)} YAML files "
                            f"under --include-path {include} cannot be read (lm-eval skips "
                            f"them): {where}{more}; fix them{maybe}")
    message = f"Unknown lm-eval task '{name}'."
    if close:
        message += f" Did you mean: {', '.join(close)}?"
    message += (f" (lm-eval knows {len(known)} tasks, groups and tags: `lm-eval ls tasks` "
                "lists them" + ("" if include else "; pass --include-path DIR for your own "
                                "task YAMLs") + ")")
    raise UnknownNameError(message)


def _unreadable_yamls(include: str) -> list[tuple[Path, int | None, str]]:
    """[(file, line or None, problem)] of the ``*.yaml`` files under ``include`` that
    lm-eval's task index cannot load (its own loader where it has one: ``!function`` tags
    and ``include:`` resolved the way it resolves them)."""
    import yaml

    try:  # lm-eval 0.4.13: the loader and the folders its index skips
        from lm_eval.tasks._index import _IGNORE_DIRS as ignore
        from lm_eval.tasks._yaml_loader import load_yaml

        def load(path: Path) -> Any:
            return load_yaml(path, resolve_func=False, recursive=True)
    except ImportError:  # older lm-eval: plain YAML, every tag kept as its text
        ignore = frozenset()

        class _Loader(yaml.SafeLoader):
            pass

        _Loader.add_multi_constructor("!", lambda loader, suffix, node: None)

        def load(path: Path) -> Any:
            with open(path, "rb") as fh:
                return yaml.load(fh, Loader=_Loader)  # noqa: S506 - a SafeLoader

    out = []
    root = Path(include)
    for path in sorted(root.glob("**/*.yaml")):
        if any(part in ignore for part in path.relative_to(root).parts):
            continue
        try:
            load(path)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc)
            context = getattr(exc, "context", None)
            text = f"not valid YAML: {problem}" + (f" ({context})" if context else "")
            out.append((path, mark.line + 1 if mark is not None else None, " ".join(
                text.split())))
        except Exception as exc:  # an include: that is missing or cyclic, not a mapping
            out.append((path, None, " ".join(f"{type(exc).__name__}: {exc}".split())))
    return out


PROMPTS_HINT = ('a UTF-8 text file with one prompt per line, or JSONL with one '
                '{"prompt": "..."} object per line')


def read_prompts_file(path: str | Path) -> list[str]:
    r"""The prompts of a ``--prompts`` file, in file order. Two formats, both UTF-8:

    - **JSONL**: a file whose name ends in ``.jsonl``, or whose every non-blank line is a
      JSON object. One object per line with a string ``"prompt"``, which may hold newlines
      (``\n``): multi-line prompts go here, e.g. ``{"prompt": "Solve:\nx + 1 = 2"}``. Other
      keys are ignored; blank lines are skipped.
    - **Text**: any other file. One prompt per line; blank lines are skipped. A prompt cannot
      span lines: each line is a prompt of its own.

    Raises:
        InputError: the file cannot be read, is binary or not UTF-8, holds no prompt, or a
            JSONL line is not an object with a non-empty string ``"prompt"`` (naming the file,
            the line and what to do).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read prompts: {exc.strerror or exc}") from exc
    if b"\0" in data:  # UTF-8 text never holds a NUL byte
        raise InputError(path, "is a binary file, not a prompts file", hint=PROMPTS_HINT)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"is not UTF-8 text (byte {exc.start} cannot be decoded)",
                         line=data.count(b"\n", 0, exc.start) + 1,
                         hint="re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 "
                              f"{path.name} > prompts.txt") from exc
    # "\n" only: str.splitlines would also split at \x0b, \x1c, \u2028 ... inside a prompt
    lines = [(number, line[:-1] if line.endswith("\r") else line)
             for number, line in enumerate(text.split("\n"), start=1)]
    lines = [(number, line) for number, line in lines if line.strip()]
    if not lines:
        raise InputError(path, "no prompts: the file is empty" if not data
                         else "no prompts: only blank lines", hint=PROMPTS_HINT)
    jsonl = path.suffix.lower() == ".jsonl"
    records = None if jsonl else _json_objects(lines)
    if records is None and not jsonl:
        prompts = [line for _, line in lines]
        logger.info("read %d prompts from %s, one per line; for prompts that span lines use "
                    'JSONL with {"prompt": ...}', len(prompts), path)
        return prompts
    if records is None:
        records = []
        for number, line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(path, f"not valid JSON: {exc.msg} (column {exc.colno})",
                                 line=number, hint=PROMPTS_HINT) from exc
    return [_prompt_of(record, path, number) for (number, _), record in zip(lines, records)]


def _json_objects(lines: list[tuple[int, str]]) -> list[Any] | None:
    """The parsed lines if every one is a JSON object, else None (a text file)."""
    if not lines[0][1].lstrip().startswith("{"):
        return None
    records = []
    for _, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return None
        if not isinstance(record, dict):
            return None
        records.append(record)
    return records


def _prompt_of(record: Any, path: Path, number: int) -> str:
    """The ``"prompt"`` string of one JSONL line, or an InputError naming the line."""
    if not isinstance(record, dict):
        raise InputError(path, f"{_json_kind(record)}, not a JSON object", line=number,
                         hint=PROMPTS_HINT)
    if "prompt" not in record:
        keys = ", ".join(map(repr, list(record)[:5])) or "none"
        raise InputError(path, f"no 'prompt' key (keys: {keys})", line=number,
                         hint='each line needs {"prompt": "..."}')
    prompt = record["prompt"]
    if not isinstance(prompt, str):
        raise InputError(path, f"'prompt' is {_json_kind(prompt)}, not a string", line=number,
                         hint='write the prompt text as a JSON string: {"prompt": "..."}')
    if not prompt.strip():
        raise InputError(path, "'prompt' is empty", line=number,
                         hint="remove the line or give the prompt text")
    return prompt


def _json_kind(value: Any) -> str:
    """'a number', 'null', 'a list', ... for a parsed JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), "a value")
