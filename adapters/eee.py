"""Read Every Eval Ever (EEE) results: aggregate ``<uuid>.json`` plus ``<uuid>_samples.jsonl``.

EEE (github.com/evaleval/every_eval_ever, MIT) stores one evaluation run of one model as an
aggregate JSON (``eval.schema.json``) and, optionally, one JSON line per sample beside it
(``instance_level_eval.schema.json``), in a datastore laid out as
``data/<benchmark>/<developer>/<model>/<uuid>.json``. Both schemas (0.3.0) ship with this
package (``eee_schema/``) and every record is validated against them.

One row per (task, instance, model)::

    model        = model_info.id of the aggregate (each sample's model_id must equal it)
    task         = the sample's evaluation_name
    instance_id  = sample_id
    input_text   = input.raw (the question; input.formatted, the prompt the model saw, is
                   kept as prompt_hash)
    score        = evaluation.score
    correct      = evaluation.is_correct, except for a continuous metric (score_type
                   "continuous", or no score_type and a metric the thresholds table knows):
                   then the thresholds rule of the metric (direction from lower_is_better);
                   an unknown continuous metric with finite min/max is cut at their middle.
    benchmark    = the <benchmark> folder of detailed_evaluation_results.file_path

A sample links to its aggregate result by ``evaluation_result_id`` (else ``evaluation_name``);
the metric is the result's ``metric_config.metric_id`` (else ``metric_name``, else the
description's metric as EEE's lm-eval/HELM converters write it). When one task has samples
for several results (EEE's HELM converter writes one line per sample and metric), the metric
is the task's ``metric:`` in the thresholds file, else HELM's main metric for the scenario
(``helm_metrics.yaml``), else the first one the thresholds table knows, else the first.

Integrity: ``total_rows`` and ``checksum`` (``hash_algorithm``, sha256 by default) of
``detailed_evaluation_results`` are checked against the samples file; an unknown
``schema_version``, a record that breaks the schema, a truncated samples file or a sample
whose evaluation_id/model_id differs from its aggregate is one :class:`InputError` naming the
file (and line), raised before anything is stored.

    from lm_router_plugin.adapters.eee import EEEAdapter
    rows = list(EEEAdapter().read([Path("data/")]))
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from ..errors import InputError
from .base import Adapter, Row
from .helm import MetricTable, split_run_name
from .instance_text import prompt_hash

logger = logging.getLogger(__name__)

SOURCE = "eee"
SCHEMA_DIR = "eee_schema"
AGGREGATE_SCHEMA = "eval.schema.json"
#: Sample fields that become row keys (model, task, instance_id): an empty one is an error.
_SAMPLE_KEYS = ("model_id", "evaluation_name", "sample_id")
INSTANCE_SCHEMA = "instance_level_eval.schema.json"
SAMPLES_SUFFIX = "_samples.jsonl"
#: How input_text was obtained (the store's text_rule column).
RULE_EEE_RAW = "eee:input.raw"
_HINT_RECONVERT = "convert the run to EEE again, or fetch the file again"
_DESCRIPTION_METRIC = re.compile(r"^([\w@.\-]+)(?: \(filter: [^)]*\))?$")
_MAX_MESSAGE = 240


@lru_cache(maxsize=None)
def _schema(name: str) -> dict[str, Any]:
    text = resources.files("lm_router_plugin.adapters").joinpath(SCHEMA_DIR, name).read_text()
    return json.loads(text)


@lru_cache(maxsize=None)
def _validator(name: str) -> Any:
    import jsonschema  # imported on first use: only this adapter needs it

    schema = _schema(name)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def supported_versions() -> tuple[str, ...]:
    """The EEE schema versions this adapter reads (the shipped schemas' ``version``)."""
    return tuple(sorted({_schema(AGGREGATE_SCHEMA)["version"],
                         _schema(INSTANCE_SCHEMA)["version"]}))


def _json_path(parts: Sequence[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def schema_problem(record: Any, schema_name: str) -> str | None:
    """One line saying where and how ``record`` breaks the schema, or None when it follows it."""
    from jsonschema.exceptions import best_match

    validator = _validator(schema_name)
    if validator.is_valid(record):  # the fast path; best_match walks the errors again
        return None
    error = best_match(validator.iter_errors(record))
    if error is None:
        return None
    message = error.message
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "..."
    return (f"does not follow the EEE {_schema(schema_name)['version']} schema "
            f"({schema_name}) at {_json_path(list(error.absolute_path))}: {message}")


def _check_version(record: Any, path: Path, line: int | None = None) -> None:
    if not isinstance(record, dict):
        return  # the schema check names it
    version = record.get("schema_version")
    if version is None:
        return  # the schema check names the missing key
    if version not in supported_versions():
        raise InputError(path, f"unknown EEE schema_version {version!r}; this lm-router reads "
                               f"EEE schema {', '.join(supported_versions())}", line=line,
                         hint="convert the run with an every_eval_ever release that writes "
                              f"schema {supported_versions()[-1]}")


def _metric_name(result: dict[str, Any]) -> str:
    """The metric of one aggregate ``evaluation_results`` entry."""
    config = result.get("metric_config") or {}
    for key in ("metric_id", "metric_name"):
        if config.get(key):
            return str(config[key])
    match = _DESCRIPTION_METRIC.match(str(config.get("evaluation_description") or ""))
    if match:  # EEE's lm-eval ("acc (filter: x)") and HELM ("exact_match") converters
        return match.group(1)
    return str(result.get("evaluation_result_id") or result["evaluation_name"])


def _bound(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)  # "Infinity" / "-Infinity" included
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass
class _Sample:
    line: int
    task: str
    sample_id: str
    result: int  # index into evaluation_results
    score: float
    is_correct: bool
    raw: str
    formatted: str


class EEEAdapter(Adapter):
    """Reads Every Eval Ever aggregate + instance-level files (schema 0.3.0)."""

    name = SOURCE

    def __init__(self, thresholds=None, **options: Any):
        super().__init__(thresholds, **options)
        self._start_checks()

    def _start_checks(self) -> None:
        """Fresh state of the checks across runs (kept in the reading process)."""
        # (task, sample_id, model) -> samples file that gave it first
        self._seen: dict[tuple[str, str, str], Path] = {}
        self._logged: set[tuple[str, str]] = set()  # (task, metric) warned about
        self._n_rows = 0
        self._without_samples: list[str] = []

    # -- finding files -----------------------------------------------------------------
    def aggregates(self, paths: Sequence[Path]) -> list[Path]:
        """The aggregate files under ``paths`` (a samples file means its aggregate)."""
        found: list[Path] = []
        for path in paths:
            path = Path(path)
            if path.is_dir():
                files = sorted(p for p in path.rglob("*.json*")
                               if p.is_file() and not any(
                                   part.startswith(".") for part in p.relative_to(path).parts))
                for file in files:
                    if file.name.endswith(SAMPLES_SUFFIX):
                        if not self._aggregate_of(file).is_file():
                            raise InputError(file, "samples file without its aggregate "
                                                   f"{self._aggregate_of(file).name} beside it",
                                             hint=_HINT_RECONVERT)
                    elif file.suffix == ".json":
                        found.append(file)
            elif path.name.endswith(SAMPLES_SUFFIX):
                aggregate = self._aggregate_of(path)
                if not aggregate.is_file():
                    raise InputError(path, f"samples file without its aggregate "
                                           f"{aggregate.name} beside it",
                                     hint="pass the aggregate .json (its samples .jsonl "
                                          "must lie beside it)")
                found.append(aggregate)
            else:
                found.append(path)
        out: list[Path] = []
        for file in found:  # a file named twice (folder and file) is read once
            if file.resolve() not in {f.resolve() for f in out}:
                out.append(file)
        return out

    @staticmethod
    def _aggregate_of(samples: Path) -> Path:
        return samples.with_name(samples.name[: -len(SAMPLES_SUFFIX)] + ".json")

    # -- reading -----------------------------------------------------------------------
    def read(self, paths: Sequence[Path]) -> Iterator[Row]:
        """Yield one row per (task, sample, model) of every run under ``paths``, run by run
        (a run's rows once they passed the checks across runs).

        Raises:
            InputError: a malformed or inconsistent file (file and line), a sample of one
                model and task in two runs, or no instance-level results at all.
        """
        states = []
        for unit in self.plan(paths):
            rows = list(self.read_unit(unit))
            states.append(self.unit_state())
            self.check_unit(states[-1])
            yield from rows
        self.finish(states, paths)

    # -- parallel reading (ingest.read_arrow, engines.RayEngine) -----------------------
    def plan(self, paths: Sequence[Path]) -> list[Path]:
        """Work units for parallel reading: the aggregate files (each read with its samples
        file), in the order :meth:`read` reads them. A run's rows depend on its own two files;
        what spans runs (a sample of one model and task in two runs, a warning given once per
        task and metric, no samples at all) is checked by :meth:`check_unit` and
        :meth:`finish` in the reading process.

        Raises:
            InputError: a samples file without its aggregate.
        """
        self._start_checks()
        return self.aggregates(paths)

    def read_unit(self, aggregate_path: Path) -> Iterator[Row]:
        """The rows of one run (in a worker or here). What :meth:`check_unit` needs is kept
        for :meth:`unit_state`: the rows' (task, sample_id), the warnings to give, and an
        error (raised by check_unit after the checks of the rows before it)."""
        unit: dict[str, Any] = {"keys": [], "warnings": [], "error": None, "model": None,
                                "origin": None, "without_samples": None}
        self._unit = unit
        self._unit_logged: set[tuple[str, str]] = set()
        keys = unit["keys"]
        try:
            aggregate = self._load_aggregate(aggregate_path)
            detail = aggregate.get("detailed_evaluation_results")
            if not detail:
                unit["without_samples"] = str(aggregate_path)
                logger.warning("%s: no detailed_evaluation_results (aggregate scores only); "
                               "skipped: routing needs per-sample results", aggregate_path)
                return
            for row in self._read_run(aggregate_path, aggregate, detail):
                unit["model"], unit["origin"] = row.model, row.origin
                keys.append((row.task, row.instance_id))
                yield row
        except InputError as exc:
            unit["error"] = exc

    def unit_state(self) -> dict[str, Any]:
        """What the reading process needs from the last unit read (picklable)."""
        unit = dict(self._unit)
        model = unit["model"]
        unit["model_metadata"] = ({} if model is None
                                  else {model: dict(self.model_metadata[model])})
        return unit

    def check_unit(self, state: dict[str, Any]) -> None:
        """In the reading process, unit by unit in plan order: each row against the runs
        before it (the same model, task and sample in two runs is an error), the continuous-
        metric warnings not given yet, then the unit's own error; as :meth:`read` met them
        row by row before."""
        state["checked"] = True
        warnings = iter(state["warnings"])
        warning = next(warnings, None)
        model, origin = state["model"], state["origin"]
        for i, (task, sample_id) in enumerate(state["keys"]):
            while warning is not None and warning[0] <= i:  # given before row i was yielded
                self._warn_continuous(*warning[1:])
                warning = next(warnings, None)
            key = (task, sample_id, model)
            if key in self._seen:
                raise InputError(origin, f"model {model}, task {task}, sample {sample_id} is "
                                         f"also in {self._seen[key]}",
                                 hint="two runs of the same model and evaluation: pass only one "
                                      "of them")
            self._seen[key] = Path(origin)
        while warning is not None:
            self._warn_continuous(*warning[1:])
            warning = next(warnings, None)
        if state["error"] is not None:
            raise state["error"]
        self._n_rows += len(state["keys"])
        if state["without_samples"]:
            self._without_samples.append(state["without_samples"])

    def finish(self, states: list[dict[str, Any]], paths: Sequence[Path]) -> None:
        """After the last unit: the units not checked one by one yet, the model metadata in
        unit order, and one error when no run had instance-level results."""
        for state in states:
            if not state.get("checked"):
                self.check_unit(state)
        for state in states:
            for model, meta in state["model_metadata"].items():
                self.model_metadata.setdefault(model, meta)
        if not self._n_rows and self._without_samples:
            raise InputError(", ".join(self._without_samples),
                             "no instance-level results (no detailed_evaluation_results / "
                             "<uuid>_samples.jsonl)",
                             hint="routing learns from per-sample results: convert the run "
                                  "with its samples (e.g. every_eval_ever convert lm_eval "
                                  "--include_samples)")

    def _load_aggregate(self, path: Path) -> dict[str, Any]:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(path, f"cannot read file: {exc.strerror or exc}") from exc
        try:
            record = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InputError(path, f"not valid JSON at column {exc.colno}: {exc.msg}",
                             line=exc.lineno, hint=f"the file is truncated or corrupt; "
                                                   f"{_HINT_RECONVERT}") from exc
        _check_version(record, path)
        problem = schema_problem(record, AGGREGATE_SCHEMA)
        if problem:
            raise InputError(path, problem, hint="is this an EEE aggregate <uuid>.json?")
        return record

    def _samples_path(self, aggregate_path: Path, detail: dict[str, Any]) -> Path:
        name = PurePosixPath(detail["file_path"]).name
        samples = aggregate_path.with_name(name)
        if not samples.is_file():
            raise InputError(aggregate_path, f"detailed_evaluation_results.file_path names "
                                             f"{name}, which is not beside the aggregate",
                             hint="keep <uuid>.json and <uuid>_samples.jsonl in one folder")
        return samples

    def _read_run(self, aggregate_path: Path, aggregate: dict[str, Any],
                  detail: dict[str, Any]) -> Iterator[Row]:
        samples_path = self._samples_path(aggregate_path, detail)
        try:
            content = samples_path.read_bytes()
        except OSError as exc:
            raise InputError(samples_path, f"cannot read file: {exc.strerror or exc}") from exc
        lines = content.splitlines()
        self._check_integrity(samples_path, aggregate_path, content, lines, detail)

        model = aggregate["model_info"]["id"]
        if not model.strip():  # the schema allows "", but a row needs a model name
            raise InputError(aggregate_path, "empty model_info.id",
                             hint="give the model's id, e.g. org/name")
        results = aggregate["evaluation_results"]
        by_id = {r["evaluation_result_id"]: i for i, r in enumerate(results)
                 if r.get("evaluation_result_id")}
        by_name: dict[str, list[int]] = {}
        for i, result in enumerate(results):
            by_name.setdefault(result["evaluation_name"], []).append(i)

        samples: list[_Sample] = []
        for number, line in enumerate(lines, start=1):
            record = self._parse_line(samples_path, number, line)
            for key in _SAMPLE_KEYS:  # strings by the schema, but "" is no name
                if not record[key].strip():
                    raise InputError(samples_path, f"empty {key}", line=number,
                                     hint="every sample needs a model_id, an evaluation_name "
                                          "(the task) and a sample_id")
            if record["evaluation_id"] != aggregate["evaluation_id"]:
                raise InputError(samples_path, f"evaluation_id {record['evaluation_id']!r} is "
                                               f"not the aggregate's "
                                               f"{aggregate['evaluation_id']!r}", line=number,
                                 hint=_HINT_RECONVERT)
            if record["model_id"] != model:
                raise InputError(samples_path, f"model_id {record['model_id']!r} is not the "
                                               f"aggregate's model_info.id {model!r}",
                                 line=number, hint=_HINT_RECONVERT)
            task = record["evaluation_name"]
            result_id = record.get("evaluation_result_id")
            if result_id:
                if result_id not in by_id:
                    raise InputError(samples_path, f"evaluation_result_id {result_id!r} is "
                                                   "not in the aggregate's evaluation_results",
                                     line=number, hint=_HINT_RECONVERT)
                index = by_id[result_id]
            elif task in by_name:
                index = by_name[task][0]
            else:
                raise InputError(samples_path, f"evaluation_name {task!r} is not in the "
                                               "aggregate's evaluation_results", line=number,
                                 hint=_HINT_RECONVERT)
            inp = record["input"]
            evaluation = record["evaluation"]
            samples.append(_Sample(number, task, record["sample_id"], index,
                                   float(evaluation["score"]), bool(evaluation["is_correct"]),
                                   inp["raw"], inp.get("formatted") or ""))

        chosen = self._choose_results(samples_path, samples, results)
        benchmark = self._benchmark(aggregate_path, detail)
        meta = self.model_metadata.setdefault(model, {"params": None, "cost_per_1m": None})
        del meta  # EEE has no parameter count or price field
        first_line: dict[tuple[str, str], int] = {}
        origin = str(samples_path)
        for sample in samples:
            if sample.result != chosen[sample.task]:
                continue
            key = (sample.task, sample.sample_id)
            if key in first_line:
                raise InputError(samples_path, f"sample_id {sample.sample_id!r} of "
                                               f"{sample.task!r} appears again (first on line "
                                               f"{first_line[key]})", line=sample.line,
                                 hint=_HINT_RECONVERT)
            first_line[key] = sample.line
            result = results[sample.result]
            metric = _metric_name(result)
            config = result["metric_config"]
            higher = not config["lower_is_better"]
            correct = self._correct(sample, metric, config, higher)
            yield Row(source=SOURCE, benchmark=benchmark, task=sample.task,
                      instance_id=sample.sample_id, input_text=sample.raw, model=model,
                      metric=metric, score=sample.score, higher_is_better=higher,
                      origin=origin, correct=correct,
                      prompt_hash=prompt_hash(sample.formatted) if sample.formatted else "",
                      text_rule=RULE_EEE_RAW)

    # -- integrity ---------------------------------------------------------------------
    @staticmethod
    def _check_integrity(samples_path: Path, aggregate_path: Path, content: bytes,
                         lines: list[bytes], detail: dict[str, Any]) -> None:
        if content and not content.endswith((b"\n", b"\r")):
            try:
                orjson.loads(lines[-1])
            except orjson.JSONDecodeError as exc:
                raise InputError(samples_path, "the last line is cut off (the file is "
                                               "truncated)", line=len(lines),
                                 hint=_HINT_RECONVERT) from exc
        total = detail.get("total_rows")
        if total is not None and total != len(lines):
            raise InputError(samples_path, f"has {len(lines)} lines but "
                                           f"detailed_evaluation_results.total_rows in "
                                           f"{aggregate_path.name} says {total} (truncated or "
                                           "changed)", hint=_HINT_RECONVERT)
        checksum = detail.get("checksum")
        if checksum:
            algorithm = detail.get("hash_algorithm") or "sha256"
            actual = hashlib.new(algorithm, content).hexdigest()
            if actual != str(checksum).lower():
                raise InputError(samples_path, f"{algorithm} checksum {actual} is not "
                                               f"detailed_evaluation_results.checksum "
                                               f"{checksum} in {aggregate_path.name} (the file "
                                               "was changed or is incomplete)",
                                 hint=_HINT_RECONVERT)
        if not lines:
            raise InputError(samples_path, "no samples (empty file)", hint=_HINT_RECONVERT)

    @staticmethod
    def _parse_line(path: Path, number: int, line: bytes) -> dict[str, Any]:
        if not line.strip():
            raise InputError(path, "blank line", line=number,
                             hint="EEE samples files have one JSON object per line")
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InputError(path, f"not valid JSON at column {exc.colno}: {exc.msg}",
                             line=number, hint=_HINT_RECONVERT) from exc
        _check_version(record, path, number)
        problem = schema_problem(record, INSTANCE_SCHEMA)
        if problem:
            raise InputError(path, problem, line=number, hint=_HINT_RECONVERT)
        return record

    # -- metric and correctness --------------------------------------------------------
    def _choose_results(self, path: Path, samples: list[_Sample],
                        results: list[dict[str, Any]]) -> dict[str, int]:
        """task -> the aggregate result whose samples become rows (one metric per task)."""
        candidates: dict[str, list[int]] = {}
        for sample in samples:
            found = candidates.setdefault(sample.task, [])
            if sample.result not in found:
                found.append(sample.result)
        chosen: dict[str, int] = {}
        table = MetricTable.load()
        for task, indices in candidates.items():
            if len(indices) == 1:
                chosen[task] = indices[0]
                continue
            names = {i: _metric_name(results[i]) for i in indices}
            wanted = self.thresholds.task_metric(task)
            order: list[str] = [wanted] if wanted else []
            order += list(table.scenarios.get(split_run_name(task)[0], ())) + list(table.fallback)
            pick = next((i for m in order for i in indices if names[i] == m), None)
            if pick is None:
                pick = next((i for i in indices if self.thresholds.is_known(names[i])),
                            indices[0])
            chosen[task] = pick
            logger.info("%s: task %s has samples for metrics %s; using %s (choose another "
                        "with --thresholds: tasks: {%s: {metric: NAME}})", path, task,
                        ", ".join(names.values()), names[pick], task)
        return chosen

    def _thresholded(self, task: str, metric: str) -> bool:
        spec = self.thresholds.tasks.get(task, {})
        return self.thresholds.is_known(metric) or (
            "threshold" in spec and spec.get("metric", metric) == metric)

    def _correct(self, sample: _Sample, metric: str, config: dict[str, Any],
                 higher: bool) -> int | None:
        """0/1 when decided here; None when the thresholds rule decides (at ingest)."""
        score_type = config.get("score_type")
        known = self._thresholded(sample.task, metric)
        if score_type != "continuous" and not (score_type is None and known):
            return int(sample.is_correct)
        if known:
            return None
        low, high = _bound(config.get("min_score")), _bound(config.get("max_score"))
        if low is None or high is None or low >= high:
            return None  # the thresholds table's binary fallback, logged there
        eta = (low + high) / 2
        if (sample.task, metric) not in self._unit_logged:
            # given by check_unit, once per task and metric across all runs
            self._unit_logged.add((sample.task, metric))
            self._unit["warnings"].append((len(self._unit["keys"]), sample.task, metric,
                                           higher, eta, low, high))
        return int(sample.score > eta if higher else sample.score < eta)

    def _warn_continuous(self, task: str, metric: str, higher: bool, eta: float, low: float,
                         high: float) -> None:
        if (task, metric) not in self._logged:
            self._logged.add((task, metric))
            logger.warning("task %s: continuous metric '%s' has no threshold; correct when "
                           "%s %g (the middle of [%g, %g]). Set one with --thresholds.",
                           task, metric, ">" if higher else "<", eta, low, high)

    @staticmethod
    def _benchmark(aggregate_path: Path, detail: dict[str, Any]) -> str:
        parts = PurePosixPath(detail["file_path"]).parts
        if len(parts) == 5 and parts[0] == "data":
            return parts[1]
        folders = aggregate_path.parts
        if len(folders) >= 5 and folders[-5] == "data":
            return folders[-4]
        return ""
