"""Read lm-eval ``--output_path`` trees (``--log_samples``) into correctness rows.

Every lm-eval sample-log layout from 0.4.0 to 0.4.13 is accepted (FORMATS.md §1):

- 0.4.3+: ``<model>/results_<date>.json`` + ``samples_<task>_<date>.jsonl`` (JSON lines);
- mid-2024: ``samples_<task>_<date>.json`` holding one JSON array;
- 0.4.0-0.4.2 and earlier: ``<model_args>_<task>.jsonl`` (a JSON array or JSON lines) beside
  an optional ``results.json``;
- published: ``samples_<task>_<date>.parquet`` (the Hub's Parquet conversion of the JSONL files,
  read row group by row group through the same code path), results files optional (the model
  is then the folder name ``org__name`` -> ``org/name``); and ``hf://datasets/ORG/NAME[@rev]``,
  downloaded with huggingface_hub first (adapters/published.py);
- the Hub's automatic Parquet conversion (``refs/convert/parquet``): ``<config>/<split>/NNNN.parquet``
  (or ``<config>/partial-<split>/NNNN.parquet``), one config per (model, task) named
  ``<org>__<model>__<task>`` or ``<task>``; one split per config is read (``latest``, else the
  newest timestamp split), its files in order as one sample log (published.hub_configs).

    rows = LMEvalAdapter().read([Path("runs/")])     # or: lm-router ingest lm-eval runs/
    next(rows)  # Row(source='lm-eval', task='toy_arith', instance_id='0', model='org/Fake-A',
                #     metric='acc', score=1.0, higher_is_better=True, ...)

One row per (task, doc_id, model). The metric is the task's configured one (thresholds file,
``tasks: {task: {metric: ...}}``) else the first per-sample metric with a scalar value;
lines of other filters than the chosen one are skipped, and of lines that repeat a doc_id
the first wins (one warning per file); of two runs of the same model and task the newest
wins. JSON-lines files are streamed line by line (orjson); the older
JSON-array files are parsed whole.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from math import isfinite
from pathlib import Path
from typing import Any

from ..errors import InputError
from .base import Adapter, Row, file_size
from .instance_text import (
    RULE_STRUCTURE,
    RULE_TAIL,
    LMEvalDocText,
    Unrenderable,
    prompt_hash,
    structural_texts,
)
from .published import (
    HUB_PART,
    HubConfig,
    download_dataset,
    hub_configs,
    is_hf_path,
    parquet_records,
)

try:
    import orjson

    _loads = orjson.loads
    _DecodeError: tuple[type[Exception], ...] = (orjson.JSONDecodeError, UnicodeDecodeError)
except ImportError:  # pragma: no cover - orjson is a declared dependency
    import json

    _loads = json.loads
    _DecodeError = (json.JSONDecodeError, UnicodeDecodeError)

logger = logging.getLogger(__name__)


def _loads_with_nan(data: bytes) -> Any:
    """orjson's parse, else Python's where the line holds a bare NaN / Infinity (what
    Python's own json.dumps writes for a non-finite metric; orjson refuses them). Any other
    fault (a lone surrogate Python would accept, a cut line) stays orjson's error."""
    import json

    try:
        return _loads(data)
    except _DecodeError as exc:
        seen: list[str] = []

        def constant(name: str) -> float:
            seen.append(name)
            return float(name)

        try:
            value = json.loads(data, parse_constant=constant)
            if seen:
                orjson.dumps(value)  # refuses strings orjson would not have read
        except (ValueError, UnicodeDecodeError, TypeError):
            raise exc from None
        if not seen:
            raise exc
        return value


SOURCE = "lm-eval"
READ_BUFFER = 1 << 16  # bytes; see _records
# Keys of a sample line that are not metric values (FORMATS.md §1.3, §1.4).
STANDARD_KEYS = frozenset({"doc_id", "doc", "target", "arguments", "resps", "filtered_resps",
                           "filter", "metrics", "doc_hash", "prompt_hash", "target_hash",
                           "task_name", "doc_id_orig"})
# lm-eval's order for naming a model after its model_args (GeneralConfigTracker).
MODEL_ARG_KEYS = ("peft", "delta", "pretrained", "model", "path", "engine")
_DATE_ID = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?")
_RESULTS_NAME = re.compile(r"(?:results.*|.*_" + _DATE_ID.pattern + r")\.json")
_SCALAR = (int, float)  # bool is an int
_NO_LM_EVAL = "no lm-eval results_*.json / samples_* files under {}"
_NO_LM_EVAL_HINT = ("point at the --output_path folder of an 'lm_eval ... --log_samples "
                    "--output_path DIR' run")


def get_file_task_name(stem: str) -> str:
    """lm-eval's own rule: the part between the first and the last ``_`` of the name."""
    return stem[stem.find("_") + 1: stem.rfind("_")]


def _date_id_time(date_id: str | None) -> float | None:
    if not date_id:
        return None
    try:
        return datetime.strptime(date_id, "%Y-%m-%dT%H-%M-%S.%f").timestamp()
    except ValueError:
        try:
            return datetime.strptime(date_id, "%Y-%m-%dT%H-%M-%S").timestamp()
        except ValueError:
            return None


def model_from_model_args(model_args: Any) -> str | None:
    """The model name lm-eval derives from ``model_args`` (a string or a dict), if any."""
    if isinstance(model_args, dict):
        for key in MODEL_ARG_KEYS:
            if model_args.get(key):
                return str(model_args[key])
        return None
    if not isinstance(model_args, str) or not model_args:
        return None
    pairs = {}
    for piece in model_args.split(","):
        key, sep, value = piece.partition("=")
        if sep:
            pairs.setdefault(key.strip(), value.strip())
    for key in MODEL_ARG_KEYS:
        if pairs.get(key):
            return pairs[key]
    return None


def _model_from_sanitized_args(prefix: str) -> str | None:
    """Model name from a legacy file-name prefix (``pretrained=org__x,...`` or ``pretrained__org__x``)."""
    pairs = {}
    for piece in prefix.split(","):
        if "=" in piece:
            key, _, value = piece.partition("=")
        else:
            key, _, value = piece.partition("__")
        if value:
            pairs.setdefault(key, value)
    for key in MODEL_ARG_KEYS:
        if pairs.get(key):
            return pairs[key].replace("__", "/")
    return None


def _json_problem(exc: Exception) -> str:
    """A decode error without its misleading "line 1" (a JSONL line is parsed alone)."""
    if hasattr(exc, "msg") and hasattr(exc, "colno"):
        return f"{exc.msg} at column {exc.colno}"
    return str(exc)


# Keys of a results JSON that the adapter reads, with the JSON types lm-eval writes.
_RESULTS_KEY_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "results": ((dict,), "an object {task: {metric: value}}"),
    "config": ((dict,), "an object"),
    "model_name": ((str,), "a string"),
    "configs": ((dict,), "an object {task: config}"),
    "group_subtasks": ((dict,), "an object {group: [subtasks]}"),
    "higher_is_better": ((dict,), "an object {task: {metric: bool}}"),
    "date": ((int, float, str), "a number"),
}


def check_results_json(path: Path, data: Any) -> None:
    """Reject a results file whose known keys have the wrong JSON types (InputError naming
    the file and the key), before anything of it is used. ``null`` counts as absent."""
    hint = "the lm-eval results file is damaged or not from lm-eval; re-run lm-eval or delete it"
    if not isinstance(data, dict):
        raise InputError(path, f"expected a JSON object (lm-eval results), got a JSON "
                               f"{_json_type(data)}", hint=hint)
    for key, (types, expected) in _RESULTS_KEY_TYPES.items():
        value = data.get(key)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            raise InputError(path, f"key '{key}' should be {expected}, got a JSON "
                                   f"{_json_type(value)} {_short(value)}", hint=hint)
    nested = (("results", dict, "an object {metric: value}"),
              ("higher_is_better", dict, "an object {metric: bool}"),
              ("group_subtasks", list, "a list of task names"))
    for key, inner, expected in nested:
        for name, value in (data.get(key) or {}).items():
            if value is not None and not isinstance(value, inner):
                raise InputError(path, f"key '{key}.{name}' should be {expected}, got a JSON "
                                       f"{_json_type(value)} {_short(value)}", hint=hint)
    model_args = (data.get("config") or {}).get("model_args")
    if model_args is not None and not isinstance(model_args, (str, dict)):
        raise InputError(path, "key 'config.model_args' should be a string or an object, got "
                               f"a JSON {_json_type(model_args)} {_short(model_args)}", hint=hint)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {dict: "object", list: "array", str: "string", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return f"({text[:40]}...)" if len(text) > 40 else f"({text})"


def _unsanitize_folder(name: str) -> str:
    # lm-eval replaces characters such as "/" by "__" in folder names; undo the usual case.
    return name.replace("__", "/")


@dataclass
class _Results:
    """What a results JSON tells about one run."""

    path: Path
    date_id: str | None
    model: str | None
    model_args: Any
    params: int | None
    time: float | None
    higher_is_better: dict[str, dict[str, Any]]
    benchmark: dict[str, str]  # task -> outermost group
    tasks: set[str]
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> logged config
    n_shot: dict[str, Any] = field(default_factory=dict)  # task -> num_fewshot used


@dataclass
class _SampleFile:
    """One per-task sample log, with the run it belongs to."""

    path: Path
    task: str
    model: str
    time: float
    results: _Results | None = None
    legacy: bool = False
    parts: tuple[Path, ...] = ()  # Hub conversion layout: the split's files, read in order


@dataclass
class _Found:
    results: dict[tuple[Path, str | None], list[_Results]] = field(default_factory=dict)
    samples: list[tuple[Path, str, str | None]] = field(default_factory=list)  # (path, task, date)
    legacy: list[Path] = field(default_factory=list)
    kinds: dict[Path, str | None] = field(default_factory=dict)  # resolved path -> kind
    hub_parts: list[Path] = field(default_factory=list)  # <config>/<split>/NNNN.parquet
    hub: list[HubConfig] = field(default_factory=list)


class LMEvalAdapter(Adapter):
    """Reads lm-eval sample logs (``--log_samples``) of any number of models and runs.

    Options: ``tasks`` (``a,b`` or a list): download only these tasks' sample logs from an
    ``hf://datasets/`` path (local paths are read whole). ``model`` (``ORG/NAME``): the model
    of Hub-conversion configs whose name has no ``<org>__<model>__`` prefix and whose folder
    does not name a model. Per-task metric and filter choices come from the thresholds file
    (``tasks: {gsm8k: {filter: flexible-extract, metric: exact_match}}``).
    """

    name = "lm-eval"
    options_allowed = ("tasks", "model")
    remote_prefixes = ("hf:/",)  # paths ingest must not check for existence (downloaded here)

    def read(self, paths: Sequence[Path]) -> Iterator[Row]:
        """Yield one :class:`Row` per (task, doc_id, model) under ``paths``.

        Raises:
            InputError: a malformed file (naming file and line), a path with no lm-eval
                output, or no usable per-sample scores at all.
        """
        files = self._discover_all(paths)
        self._start()
        for sample_file in self._newest_runs(files):
            yield from self._read_file(sample_file)
        self._report_mismatches()
        self.finish([self.unit_state()], paths, merge=False)

    # -- parallel reading (ingest.read_arrow) ------------------------------------------
    def plan(self, paths: Sequence[Path]) -> list[list[_SampleFile]]:
        """Work units for parallel reading: the chosen sample files grouped by task, each
        group in the order :meth:`read` reads them. Everything that links files (which doc
        text a later model reuses, doc_hash checks) links files of one task only, so a unit
        read alone gives the rows :meth:`read` gives."""
        by_task: dict[str, list[_SampleFile]] = {}
        for sample_file in self._newest_runs(self._discover_all(paths)):
            by_task.setdefault(sample_file.task, []).append(sample_file)
        return list(by_task.values())

    @staticmethod
    def unit_cost(unit: list[_SampleFile]) -> int:
        """Bytes of a unit's sample files (the pool starts the largest first)."""
        return sum(file_size(path) for sf in unit for path in (sf.parts or (sf.path,)))

    def read_unit(self, unit: list[_SampleFile]) -> Iterator[Row]:
        """The rows of one unit of :meth:`plan` (in a worker process or here)."""
        self._start()
        for sample_file in unit:
            yield from self._read_file(sample_file)
        self._report_mismatches()

    def unit_state(self) -> dict[str, Any]:
        """What the parent needs from a unit's reading: counts, skips, model metadata."""
        return {"n_rows": self._n_rows, "skipped": list(self._skipped),
                "model_metadata": {m: dict(v) for m, v in self.model_metadata.items()}}

    def finish(self, states: list[dict[str, Any]], paths: Sequence[Path], *,
               merge: bool = True) -> None:
        """Combine the units' states; InputError when no usable sample was read at all."""
        if merge:
            for state in states:
                for model, meta in state["model_metadata"].items():
                    mine = self.model_metadata.setdefault(model, {"params": None,
                                                                 "cost_per_1m": None})
                    if meta.get("params") and not mine.get("params"):
                        mine["params"] = meta["params"]
        n_rows = sum(state["n_rows"] for state in states)
        skipped = [reason for state in states for reason in state["skipped"]]
        if n_rows == 0:
            where = ", ".join(map(str, paths))
            if skipped:
                raise InputError(where, "no usable per-sample scores: " + "; ".join(skipped),
                                 hint="choose a scalar per-sample metric with --thresholds "
                                      "(tasks: {TASK: {metric: NAME}}) or log a task that has one")
            raise InputError(where, "the lm-eval sample logs hold no samples",
                             hint=_NO_LM_EVAL_HINT)

    def _discover_all(self, paths: Sequence[Path]) -> list[_SampleFile]:
        found = _Found()
        tasks = self.options.get("tasks")
        if isinstance(tasks, str):
            tasks = [t.strip() for t in tasks.split(",") if t.strip()]
        elif tasks is not None and not (isinstance(tasks, list)
                                        and all(isinstance(t, str) for t in tasks)):
            raise ValueError(f"tasks: expected a comma-separated list of task names, got "
                             f"{tasks!r}")
        model = self.options.get("model")
        if model is not None and not (isinstance(model, str) and model.strip()):
            raise ValueError(f"model: expected a model id such as org/name, got {model!r}")
        for path in paths:
            if is_hf_path(path):
                path = download_dataset(path, tasks=tasks)
            self._discover(Path(path), found)
        return self._sample_files(found)

    def _start(self) -> None:
        """Fresh per-read state."""
        # task -> {doc_id: [doc_hash, model, text, prompt_hash, rule, instance_id]}
        self._docs: dict[str, dict[Any, list]] = {}
        self._renderers: dict[tuple[str, str], Any] = {}  # (doc_to_text, doc_to_choice) -> renderer
        self._rules_logged: set[tuple[str, str]] = set()
        self._mismatch: dict[tuple[str, str, str], list] = {}
        self._skipped: list[str] = []
        self._filter_logged: set[str] = set()
        self._metric_logged: set[tuple[str, str]] = set()
        self._n_rows = 0

    # -- discovery ---------------------------------------------------------------------
    def _discover(self, root: Path, found: _Found) -> None:
        kinds: list[str | None] = []
        if root.is_file():
            kinds.append(self._classify(root, found))
            # a results file alone stands for its run: take the sample logs beside it
            if root.suffix == ".json" and not root.name.startswith("samples_"):
                date = _DATE_ID.search(root.stem)
                for sibling in sorted(root.parent.iterdir()):
                    if sibling.name.startswith("samples_") and sibling != root and (
                            date is None or sibling.stem.endswith(date.group(0))):
                        kinds.append(self._classify(sibling, found))
            elif root.name.startswith("samples_") or root.suffix == ".jsonl":
                for sibling in sorted(root.parent.glob("*.json")):  # the run's results file
                    if not sibling.name.startswith("samples_"):
                        self._classify(sibling, found, results_only=True)
        else:
            n_parts = len(found.hub_parts)
            for folder, dirs, names in os.walk(root):
                dirs.sort()
                kinds.extend(self._classify(Path(folder) / name, found) for name in sorted(names))
            if "hub" in kinds:  # the Hub's Parquet conversion layout: one split per config
                new = hub_configs(root, found.hub_parts[n_parts:], self.options.get("model"))
                found.hub.extend(new)
                if new or len(found.hub_parts) == n_parts:  # (or all reached before)
                    kinds.append("samples")
        if "samples" not in kinds:
            if "results" in kinds:
                raise InputError(root, "found lm-eval results files but no per-sample logs "
                                       "(samples_*.jsonl)",
                                 hint="re-run lm-eval with --log_samples --output_path DIR")
            raise InputError(root, _NO_LM_EVAL.format(root), hint=_NO_LM_EVAL_HINT)

    def _classify(self, path: Path, found: _Found, *, results_only: bool = False) -> str | None:
        """Record ``path`` in ``found``; its kind ("samples", "results") or None."""
        name = path.name
        is_samples = name.startswith("samples_") and name.endswith((".jsonl", ".json",
                                                                     ".parquet"))
        if results_only and (is_samples or not name.endswith(".json")):
            return None
        key = path.resolve()
        if key in found.kinds:  # the same file reached twice (nested or repeated paths)
            return found.kinds[key]
        kind: str | None = None
        if is_samples:
            stem = name.rsplit(".", 1)[0]
            date: str | None = stem[stem.rfind("_") + 1:]
            if _DATE_ID.fullmatch(date or ""):
                task = get_file_task_name(stem)
            else:  # no date part: everything after "samples_" is the task
                task, date = stem[len("samples_"):], None
            found.samples.append((path, task, date))
            kind = "samples"
        elif name.endswith(".json") and _RESULTS_NAME.fullmatch(name):
            results = self._read_results(path)
            if results is not None:
                found.results.setdefault((path.parent, results.date_id), []).append(results)
                kind = "results"
        elif HUB_PART.fullmatch(name) and path.parent != path.parent.parent:
            found.hub_parts.append(path)  # which config, split and model: hub_configs
            kind = "hub"
        elif name.endswith(".jsonl"):
            if self._looks_like_samples(path):
                found.legacy.append(path)
                kind = "samples"
            else:
                logger.debug("%s: not an lm-eval sample log; ignored", path)
        found.kinds[key] = kind
        return kind

    @staticmethod
    def _looks_like_samples(path: Path) -> bool:
        with open(path, "rb") as fh:
            head = fh.read(4096)
        return b'"doc_id"' in head

    def _read_results(self, path: Path) -> _Results | None:
        try:
            data = _loads(path.read_bytes())
        except _DecodeError as exc:
            raise InputError(path, f"not valid JSON: {exc}", line=getattr(exc, "lineno", None),
                             hint="the lm-eval results file is damaged; re-run lm-eval or "
                                  "delete the file") from exc
        if isinstance(data, dict) and "results" not in data:
            logger.debug("%s: not an lm-eval results file; ignored", path)
            return None
        check_results_json(path, data)
        config = data.get("config") if isinstance(data.get("config"), dict) else {}
        model_args = config.get("model_args")
        model = data.get("model_name") or model_from_model_args(model_args)
        params = config.get("model_num_parameters")
        try:
            params = int(params) if params not in (None, "") else None
        except (TypeError, ValueError):
            params = None
        date = _DATE_ID.search(path.stem)
        date_id = date.group(0) if date else None
        when = _date_id_time(date_id)
        if when is None and isinstance(data.get("date"), (int, float)):
            when = float(data["date"])
        groups = data.get("group_subtasks") or {}
        parent: dict[str, str] = {}
        for group, subtasks in groups.items():
            for sub in subtasks or []:
                if sub != group:
                    parent.setdefault(sub, group)
        benchmark = {}
        for task in parent:
            top, hops = task, 0
            while top in parent and hops < 50:
                top, hops = parent[top], hops + 1
            benchmark[task] = top
        configs = data.get("configs") if isinstance(data.get("configs"), dict) else {}
        n_shot = data.get("n-shot") if isinstance(data.get("n-shot"), dict) else {}
        tasks = set(configs) | set(data.get("results") or {})
        return _Results(path=path, date_id=date_id, model=str(model) if model else None,
                        model_args=model_args, params=params, time=when,
                        higher_is_better=data.get("higher_is_better") or {},
                        benchmark=benchmark, tasks=tasks,
                        configs={k: v for k, v in configs.items() if isinstance(v, dict)},
                        n_shot=n_shot)

    # -- runs and models ---------------------------------------------------------------
    def _sample_files(self, found: _Found) -> list[_SampleFile]:
        files = []
        for path, task, date in found.samples:
            candidates = found.results.get((path.parent, date), []) if date else []
            results = next((r for r in candidates if task in r.tasks), None) or (
                candidates[0] if candidates else None)
            model = (results.model if results else None) or _unsanitize_folder(path.parent.name)
            when = _date_id_time(date) or (results.time if results else None) \
                or path.stat().st_mtime
            files.append(_SampleFile(path, task, model, when, results))
        by_dir: dict[Path, list[Path]] = {}
        for path in found.legacy:
            by_dir.setdefault(path.parent, []).append(path)
        for folder, legacy in by_dir.items():
            results_here = found.results.get((folder, None), [])
            for path in legacy:
                files.append(self._legacy_file(path, legacy, results_here))
        for hub in found.hub:
            when = hub.time if hub.time is not None else hub.parts[0].stat().st_mtime
            files.append(_SampleFile(hub.parts[0], hub.task, hub.model, when, None,
                                     parts=hub.parts))
        return files

    def _legacy_file(self, path: Path, siblings: list[Path], results: list[_Results]
                     ) -> _SampleFile:
        """Split ``<model_args>_<task>.jsonl`` into model and task."""
        stem = path.name[: -len(".jsonl")]
        for res in results:  # 0.4.0-0.4.2: results.json names the model_args and the tasks
            args = res.model_args if isinstance(res.model_args, str) else ""
            prefix = re.sub("/|=", "__", args)
            for candidate in (prefix, args):
                if stem.startswith(candidate + "_") and stem[len(candidate) + 1:] in res.tasks:
                    model = res.model or _model_from_sanitized_args(candidate)
                    return _SampleFile(path, stem[len(candidate) + 1:],
                                       model or _unsanitize_folder(path.parent.name),
                                       res.time or path.stat().st_mtime, res, legacy=True)
        cuts = self._legacy_cuts(stem)
        shared: set[str] = set()
        for other in siblings:  # the model_args part is shared by one model's files
            if other != path:
                other_stem = other.name[: -len(".jsonl")]
                shared.update(other_stem[:c] for c in self._legacy_cuts(other_stem))
        if cuts:
            cut = next((c for c in reversed(cuts) if stem[:c] in shared), cuts[0])
            prefix, task = stem[:cut], stem[cut + 1:]
        else:
            prefix, task = "", stem
        model = _model_from_sanitized_args(prefix) or _unsanitize_folder(path.parent.name)
        return _SampleFile(path, task, model, path.stat().st_mtime, None, legacy=True)

    @staticmethod
    def _legacy_cuts(stem: str) -> list[int]:
        """Positions of single ``_`` that may end the model_args part of a legacy name."""
        if stem.startswith("_"):
            return [0]
        start = max(stem.rfind("="), stem.rfind(","))
        if start < 0:  # "pretrained__org__x_task": skip the first key separator
            start = stem.find("__") + 1
        cuts, i = [], start + 1
        while True:
            i = stem.find("_", i)
            if i < 0:
                return cuts
            if stem.startswith("__", i):
                i += 2
                continue
            cuts.append(i)
            i += 1

    def _newest_runs(self, files: list[_SampleFile]) -> list[_SampleFile]:
        by_key: dict[tuple[str, str], list[_SampleFile]] = {}
        for sample_file in files:
            by_key.setdefault((sample_file.model, sample_file.task), []).append(sample_file)
        chosen = []
        for (model, task), runs in by_key.items():
            runs.sort(key=lambda f: (f.time, str(f.path)))
            chosen.append(runs[-1])
            if len(runs) > 1:
                logger.info("task %s, model %s: %d runs found; using the newest, %s (ignored: %s)",
                            task, model, len(runs), runs[-1].path,
                            ", ".join(str(f.path) for f in runs[:-1]))
        return chosen

    # -- one sample log ----------------------------------------------------------------
    def _file_records(self, sf: _SampleFile) -> Iterator[tuple[Path, int | None, Any]]:
        """(file, line or row number in it, record) of a sample log, its parts in order."""
        for path in sf.parts or (sf.path,):
            for lineno, rec in self._records(path):
                yield path, lineno, rec

    def _records(self, path: Path) -> Iterator[tuple[int | None, Any]]:
        """(line number or None, record) for a JSONL file or a JSON-array file; (row number,
        record) for a Parquet file (published sample logs)."""
        if path.suffix == ".parquet":
            yield from parquet_records(path)
            return
        # a 64 KiB buffer: sample lines run to kilobytes (the prompt once per choice), and
        # the default 8 KiB one makes line iteration several times slower
        with open(path, "rb", buffering=READ_BUFFER) as fh:
            head = fh.read(256).lstrip()
            fh.seek(0)
            if head.startswith(b"["):
                data = fh.read()
                try:
                    records = _loads_with_nan(data)
                except _DecodeError as exc:
                    raise InputError(path, f"not valid JSON: {exc}",
                                     line=getattr(exc, "lineno", None),
                                     hint="the file may be truncated; re-run lm-eval") from exc
                if not isinstance(records, list):
                    raise InputError(path, "expected a JSON array of samples")
                for record in records:
                    yield None, record
                return
            for lineno, line in enumerate(fh, 1):
                try:
                    record = _loads(line)
                except _DecodeError as exc:
                    try:  # a NaN or Infinity that Python's json.dumps wrote (lm-eval does)
                        record = _loads_with_nan(line)
                    except _DecodeError:
                        pass
                    else:  # (its non-finite score is one error further on, naming it)
                        yield lineno, record
                        continue
                    if not line.strip():
                        continue
                    raise InputError(path, f"not valid JSON ({_json_problem(exc)})", line=lineno,
                                     hint="the file may be truncated or damaged; re-run "
                                          "lm-eval or delete the file") from exc
                yield lineno, record

    def _read_file(self, sf: _SampleFile) -> Iterator[Row]:
        path, task, model = sf.path, sf.task, sf.model
        origin = str(path.parent) if sf.parts else str(path)  # Hub layout: the split folder
        results = sf.results
        benchmark = results.benchmark.get(task, "") if results else ""
        hib_table = (results.higher_is_better.get(task) or {}) if results else {}
        want_filter = self.thresholds.task_filter(task)
        want_metric = self.thresholds.task_metric(task)
        metric: str | None = None
        hib: bool | None = None
        used_filter: str | None = None
        other_filters: set[str] = set()
        seen: set[Any] = set()
        # doc_ids of both types (1 and "1"): str(doc_id) -> doc_id, to catch one instance
        # id from two doc_ids (None while every doc_id has the first one's type)
        as_str: dict[str, Any] | None = None
        id_type: type | None = None
        n_repeated = 0
        first_repeat = ""  # where the first line with an already-read doc_id is
        # this task's docs read so far (for earlier models): doc_id -> _DocEntry fields
        docs = self._docs.setdefault(task, {})
        get_doc = docs.get
        # (doc_id, prompt, doc, score, prompt_hash, doc_hash, multiple-input continuation,
        #  the doc's entry from an earlier model or None)
        pending: list[tuple[Any, str, Any, float, str, Any, str | None, list | None]] = []
        add_pending = pending.append
        keep_doc = False  # only a rendered doc_to_text needs the doc (else it is freed now)
        index = 0
        for part in sf.parts or (sf.path,):
            for lineno, rec in self._records(part):
                path = part
                index += 1
                if type(rec) is not dict:
                    raise self._bad(path, lineno, index, "expected a JSON object per sample")
                line_filter = rec.get("filter")
                if line_filter is not None and line_filter != used_filter:
                    if used_filter is None and (want_filter is None or line_filter == want_filter):
                        used_filter = line_filter
                    else:
                        other_filters.add(line_filter)
                        continue
                try:
                    doc_id = rec["doc_id"]
                    arguments = rec["arguments"]
                except KeyError as exc:
                    raise self._bad(path, lineno, index, f"missing key {exc.args[0]!r}",
                                    "is this an lm-eval --log_samples file?") from exc
                if type(doc_id) is not id_type:
                    if type(doc_id) is not int and type(doc_id) is not str:
                        got = ("null" if doc_id is None else
                               f"a JSON {_json_type(doc_id)} {_short(doc_id)}")
                        raise self._bad(path, lineno, index, f"doc_id must be an int or a "
                                        f"string, got {got}",
                                        "is this an lm-eval --log_samples file? re-run lm-eval")
                    if id_type is None:
                        id_type = type(doc_id)
                    elif as_str is None:
                        as_str = {str(d): d for d in seen}
                if doc_id in seen:
                    # one line per doc and filter (without a filter key: per doc); the first
                    # wins, the others are counted and logged below
                    n_repeated += 1
                    if not first_repeat:
                        first_repeat = self._where(path, lineno, index)
                    continue
                if as_str is not None:
                    other = as_str.setdefault(str(doc_id), doc_id)
                    if other != doc_id:
                        raise self._bad(path, lineno, index, f"doc_id {doc_id!r} and doc_id "
                                        f"{other!r} of an earlier line give the same instance "
                                        f"id {str(doc_id)!r}", "write every doc_id of a file "
                                        "as an int, or every one as a string")
                if metric is None:
                    metric = self._pick_metric(rec, task, want_metric, path, lineno, index)
                    if metric is None:
                        return
                    hint = hib_table.get(metric)
                    hib = hint if isinstance(hint, bool) else None
                    keep_doc = not isinstance(self._renderer(
                        results.configs.get(task) if results else None), str)
                try:
                    value = rec[metric]
                except KeyError as exc:
                    raise self._bad(path, lineno, index, f"missing key {metric!r} (the metric "
                                    "chosen for this task)") from exc
                if type(value) is int:
                    score = value
                elif isinstance(value, _SCALAR):  # float, bool, numpy-like subclasses
                    score = value if type(value) is float else float(value)
                    if not isfinite(score):  # JSON has no NaN, Parquet and numpy do
                        raise self._bad(path, lineno, index, f"non-finite score {metric}="
                                        f"{value!r}", "every line of a task must carry a "
                                        "finite number for its metric; re-run lm-eval or drop "
                                        "this sample")
                else:
                    raise self._bad(path, lineno, index, f"non-numeric score {metric}={value!r}",
                                    "every line of a task must carry a number for its metric")
                try:
                    if type(arguments) is dict:
                        prompt = arguments["gen_args_0"]["arg_0"]
                    else:
                        prompt = arguments[0]
                        if type(prompt) is list:
                            prompt = prompt[0]
                except (KeyError, IndexError, TypeError) as exc:
                    raise self._bad(path, lineno, index, "cannot read the prompt from "
                                    "'arguments' (expected gen_args_0.arg_0 or a list)") from exc
                if type(prompt) is not str:
                    prompt = str(prompt)
                seen.add(doc_id)
                phash = rec.get("prompt_hash")
                if type(phash) is not str or len(phash) != 64:
                    phash = prompt_hash(prompt)  # lm-eval < 0.4.3 logs none
                cont = None
                if type(arguments) is dict and "gen_args_1" in arguments:
                    first, second = arguments["gen_args_0"], arguments["gen_args_1"]
                    if type(first) is dict and type(second) is dict and \
                            first.get("arg_0") != second.get("arg_0") and \
                            type(first.get("arg_1")) is str and first.get("arg_1") == second.get(
                                "arg_1"):
                        cont = first["arg_1"]  # multiple inputs: one context per choice
                add_pending((doc_id, prompt, rec.get("doc") if keep_doc else None, score, phash,
                             rec.get("doc_hash"), cont, get_doc(doc_id)))
        # The instance texts need the whole file (the structural rule compares its prompts).
        texts, rules = self._instance_texts(task, results, pending, path)
        if pending:
            self._note_model(sf)
        # tuple.__new__ skips the namedtuple's Python-level __new__ (hot loop)
        new_row = tuple.__new__
        for (doc_id, _prompt, _doc, score, phash, doc_hash, _cont, entry), text, rule in zip(
                pending, texts, rules):
            if entry is None:
                instance_id = str(doc_id)
                docs[doc_id] = [doc_hash, model, text, phash, rule, instance_id]
            else:
                if doc_hash != entry[0] and doc_hash is not None and entry[0] is not None:
                    self._note_mismatch(task, doc_id, entry[1], model)
                if text == entry[2]:
                    text = entry[2]  # share one string between models: memory
                if phash == entry[3]:
                    phash = entry[3]
                instance_id = entry[5]
            yield new_row(Row, (SOURCE, benchmark, task, instance_id, text, model, metric,
                                score, hib, origin, None, phash, rule))
        n = len(pending)
        del pending
        if n_repeated:
            # without a filter key (lm-eval before 0.4.3) each filter writes its own line:
            # repeats are expected there (info); with one, a repeat is unexpected (warning)
            how = ("per doc_id and filter" if used_filter is not None else
                   "per doc_id (no 'filter' key: probably one line per filter)")
            log = logger.warning if used_filter is not None else logger.info
            log("%s: %d line(s) repeat the doc_id of an earlier line (the first: %s); kept "
                "the first line %s, skipped the repeats",
                path if not sf.parts else sf.path.parent, n_repeated, first_repeat, how)
        if other_filters and task not in self._filter_logged:
            self._filter_logged.add(task)
            logger.info("task %s, model %s: using filter %r; skipped the lines of filter(s) %s "
                        "(choose another with --thresholds tasks: {%s: {filter: NAME}})",
                        task, model, used_filter, ", ".join(sorted(map(repr, other_filters))),
                        task)
        if want_filter is not None and used_filter is None and other_filters:
            logger.warning("task %s, %s: no lines with the configured filter %r (found: %s); "
                           "task skipped", task, path, want_filter,
                           ", ".join(sorted(other_filters)))
            self._skipped.append(f"{task}: filter {want_filter!r} not in {path.name}")
        self._n_rows += n
        if n == 0 and metric is None and not other_filters:
            logger.warning("%s: no samples", path)

    def _renderer(self, config: dict[str, Any] | None) -> LMEvalDocText | str:
        """The compiled doc_to_text of a logged config (cached), or why there is none."""
        if not config:
            return "no task config (no results file beside the sample log)"
        key = (repr(config.get("doc_to_text")), repr(config.get("doc_to_choice")),
               repr(config.get("use_prompt")))
        renderer = self._renderers.get(key)
        if renderer is None:
            try:
                renderer = LMEvalDocText.from_config(config)
            except Unrenderable as exc:
                renderer = str(exc)
            self._renderers[key] = renderer
        return renderer

    def _instance_texts(self, task: str, results: _Results | None, pending: list,
                        path: Path) -> tuple[list[str], list[str]]:
        """Each sample's zero-shot text and the rule that gave it (instance_text.py).

        The logged config's doc_to_text is rendered when it can be; a rendering that does not
        occur in the prompt the model saw (a config that does not match the log) and samples
        without a doc fall back to the prompt's structure.
        """
        if not pending:
            return [], []
        config = results.configs.get(task) if results else None
        renderer = self._renderer(config)
        n = len(pending)
        why = renderer if isinstance(renderer, str) else ""
        if why:  # nothing to render: every sample falls back (the doc was not kept)
            texts: list[str | None] = [None] * n
            rules: list[str] = [""] * n
            missing = range(n)
        else:
            texts, rules = [None] * n, [""] * n
            n_bad = 0
            rule = renderer.rule
            for i, (_id, prompt, doc, _score, _phash, doc_hash, _cont, entry) in enumerate(
                    pending):
                if type(doc) is not dict:
                    continue
                if entry is not None and doc_hash is not None and entry[0] == doc_hash \
                        and entry[4] == rule:  # the same doc, read for another model
                    texts[i], rules[i] = entry[2], rule
                    continue
                try:
                    text = renderer(doc)
                except Exception as exc:  # StrictUndefined, KeyError in user code, ...
                    n_bad += 1
                    why = why or f"doc_to_text failed on doc {_id}: {type(exc).__name__}: {exc}"
                    continue
                if renderer.context in prompt:
                    texts[i], rules[i] = text, rule
                else:
                    n_bad += 1
                    why = why or (f"the rendered doc_to_text of doc {_id} does not occur in its "
                                  "logged prompt (config and log differ)")
            if n_bad:
                why = f"{n_bad} of {n} samples: {why}"
            missing = [i for i in range(n) if texts[i] is None]
        if missing:
            # the same prompts read for another model: reuse its texts (same rule, same result)
            reuse = True
            for i in missing:
                entry = pending[i][7]
                if entry is None or entry[3] != pending[i][4] or (
                        entry[4] != RULE_STRUCTURE and entry[4] != RULE_TAIL):
                    reuse = False
                    break
            if reuse:
                for i in missing:
                    entry = pending[i][7]
                    texts[i], rules[i] = entry[2], entry[4]
                missing = []
        if missing:
            config = config or {}
            shots = results.n_shot.get(task) if results else None
            if not isinstance(shots, int):
                shots = config.get("num_fewshot")
            description = config.get("description")
            fallback, fallback_rules = structural_texts(
                [pending[i][1] for i in missing],
                fewshot_delimiter=config.get("fewshot_delimiter") or None,
                description=description if isinstance(description, str) else None,
                num_fewshot=shots if isinstance(shots, int) else None)
            for i, text, rule in zip(missing, fallback, fallback_rules):
                cont = pending[i][6]  # multiple inputs: the continuation completes the doc
                texts[i], rules[i] = (text + cont if cont else text), rule
        counts = Counter(rules)
        summary = ", ".join(f"{rule} ({count})" for rule, count in sorted(counts.items()))
        if (task, summary) not in self._rules_logged:
            self._rules_logged.add((task, summary))
            level = logging.WARNING if "tail" in counts else logging.INFO
            logger.log(level, "task %s: input texts by rule %s%s", task, summary,
                       f"; not rendered from the config: {why or 'samples without a doc'} "
                       f"({path.name})" if missing else "")
        return texts, rules  # type: ignore[return-value]

    def _pick_metric(self, rec: dict, task: str, want: str | None, path: Path,
                     lineno: int | None, index: int) -> str | None:
        """The configured metric, else the first metric whose per-sample value is a scalar."""
        if want is not None:
            if want not in rec:
                names = rec.get("metrics") or [k for k in rec if k not in STANDARD_KEYS]
                raise self._bad(path, lineno, index, f"missing key {want!r} (the metric set for "
                                f"task {task} in the thresholds file; this file has "
                                f"{', '.join(map(str, names)) or 'none'})")
            return want
        names = rec.get("metrics")
        if not isinstance(names, list):
            names = [k for k in rec if k not in STANDARD_KEYS]
        skipped = []
        for name in names:
            value = rec.get(name)
            if isinstance(value, _SCALAR):
                for other, reason in skipped:
                    if (task, other) not in self._metric_logged:
                        self._metric_logged.add((task, other))
                        logger.info("task %s: %s", task, reason)
                return str(name)
            kind = type(value).__name__ if name in rec else "absent"
            skipped.append((name, f"metric {name!r} is not a scalar per sample ({kind}: a "
                                  f"corpus-level metric or not a score); using the next one"))
        detail = ", ".join(f"{name} ({type(rec.get(name)).__name__})" for name in names)
        logger.warning("task %s (%s): no scalar per-sample metric (%s); task skipped",
                       task, path, detail or "no metric keys")
        self._skipped.append(f"task {task} in {path}: no scalar per-sample metric "
                             f"({detail or 'no metric keys'})")
        return None

    def _note_model(self, sf: _SampleFile) -> None:
        meta = self.model_metadata.setdefault(sf.model, {"params": None, "cost_per_1m": None})
        if sf.results is not None and sf.results.params and not meta["params"]:
            meta["params"] = sf.results.params

    @staticmethod
    def _where(path: Path, lineno: int | None, index: int) -> str:
        """Where a sample is, as :meth:`_bad` names it (line, Parquet row, array sample)."""
        if path.suffix == ".parquet":
            return f"{path.name} row {lineno if lineno is not None else index}"
        return f"line {lineno}" if lineno is not None else f"sample {index} of the JSON array"

    @staticmethod
    def _bad(path: Path, lineno: int | None, index: int, problem: str, hint: str = ""
             ) -> InputError:
        if path.suffix == ".parquet":  # the row in this file (a split may span several)
            return InputError(path, f"row {lineno if lineno is not None else index}: {problem}",
                              hint=hint)
        if lineno is None:
            problem = f"sample {index} of the JSON array: {problem}"
        return InputError(path, problem, line=lineno, hint=hint)

    # -- doc_hash checks ---------------------------------------------------------------
    def _note_mismatch(self, task: str, doc_id: Any, first_model: str, model: str) -> None:
        key = (task, first_model, model)
        entry = self._mismatch.get(key)
        if entry is None:
            self._mismatch[key] = [1, doc_id]
        else:
            entry[0] += 1

    def _report_mismatches(self) -> None:
        for (task, model_a, model_b), (count, doc_id) in sorted(
                self._mismatch.items(), key=lambda kv: (kv[0], kv[1][0])):
            logger.warning("task %s, doc %s: doc_hash differs between models %s and %s "
                           "(%d doc(s) in all): the task version or its preprocessing "
                           "differs, so their scores may not be comparable",
                           task, doc_id, model_a, model_b, count)


def iter_sample_files(paths: Iterable[str | Path]) -> list[Path]:
    """Every lm-eval sample log under ``paths`` (for tools and benchmarks)."""
    found = _Found()
    adapter = LMEvalAdapter()
    for path in paths:
        adapter._discover(Path(path), found)
    return [p for p, _, _ in found.samples] + found.legacy + [
        p for hub in found.hub for p in hub.parts]


__all__ = ["LMEvalAdapter", "get_file_task_name", "iter_sample_files", "model_from_model_args"]
