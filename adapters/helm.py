"""Read HELM run folders (crfm-helm 0.5.x ``benchmark_output/runs/<suite>/<run>/``).

One row per (task, instance, model): the task is the run name without its ``model=`` part,
the correctness metric comes from ``helm_metrics.yaml`` (or a ``tasks:`` override in the
thresholds file), the input text is the instance's own input (``instance.input.text``, not
the prompt with its instructions and in-context examples; the prompt is kept as a hash)::

    from lm_router_plugin.adapters.helm import HELMAdapter
    rows = list(HELMAdapter().read([Path("benchmark_output/runs/v1")]))
    rows[0].task      # 'mmlu:subject=philosophy,method=multiple_choice_joint'
    rows[0].metric    # 'exact_match' (helm_metrics.yaml)
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml

from ..errors import InputError
from ..store.thresholds import Thresholds
from .base import Adapter, Row, file_size
from .instance_text import RULE_HELM_INPUT, RULE_HELM_PROMPT, prompt_hash

logger = logging.getLogger(__name__)

RUN_SPEC = "run_spec.json"
SCENARIO_STATE = "scenario_state.json"
PER_INSTANCE_STATS = "per_instance_stats.json"
#: A run folder is complete (readable) when these three exist.
REQUIRED_FILES = (RUN_SPEC, SCENARIO_STATE, PER_INSTANCE_STATS)
#: Files helm-run / helm-summarize write into a run folder (a path to one means its folder).
RUN_FILES = {*REQUIRED_FILES, "scenario.json", "stats.json", "instances.json",
             "display_predictions.json", "display_requests.json"}
#: Folders under benchmark_output/ that hold caches and downloads, never runs.
_SKIP_DIRS = {"eval_cache", "scenarios", "scenario_instances", "cache"}
_MODEL_ARGS = ("model", "model_deployment")
_PERTURBATION_FLAGS = ("name", "robustness", "fairness")
#: Per-instance stats that are bookkeeping, never correctness (not offered in error hints).
_BOOKKEEPING = {"num_references", "num_train_trials", "num_prompt_tokens",
                "num_completion_tokens", "num_output_tokens", "training_co2_cost",
                "training_energy_cost", "inference_runtime", "batch_size", "num_train_instances",
                "prompt_truncated", "max_prob", "logprob", "num_perplexity_tokens", "num_bytes"}
_HINT_RERUN = "re-run helm-run for this run, or remove its folder"
_NO_MEAN = object()

TrainTrials = Literal["mean", "first"]


@dataclass(frozen=True)
class MetricTable:
    """The shipped ``helm_metrics.yaml``: main metric(s) per scenario and the fallback order."""

    scenarios: dict[str, tuple[str, ...]]
    fallback: tuple[str, ...]
    lower_is_better: frozenset[str]

    @classmethod
    @lru_cache(maxsize=1)
    def load(cls) -> MetricTable:
        """Parse the packaged ``helm_metrics.yaml`` (cached)."""
        text = resources.files("lm_router_plugin").joinpath("helm_metrics.yaml").read_text()
        data = yaml.safe_load(text)
        scenarios = {str(k): (v,) if isinstance(v, str) else tuple(v)
                     for k, v in data["scenarios"].items()}
        return cls(scenarios=scenarios, fallback=tuple(data["fallback"]),
                   lower_is_better=frozenset(data["lower_is_better"]))


def split_run_name(name: str) -> tuple[str, list[tuple[str, str]]]:
    """(scenario, [(separator, "key=value"), ...]) of a HELM run name.

    ``"mmlu:subject=philosophy,model=openai_gpt2"`` ->
    ``("mmlu", [(":", "subject=philosophy"), (",", "model=openai_gpt2")])``. Expanders such
    as ``data_augmentation`` may put a ``,`` before the first ``:``; both are separators.
    """
    parts = re.split(r"([:,])", name)
    return parts[0], [(parts[i], parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def task_name(run_name: str) -> str:
    """The run name without its ``model=`` (and ``model_deployment=``) arguments.

    The other arguments keep their order and separators; ``_`` is never mapped back to ``/``.

    Example:
        >>> task_name("mmlu:subject=philosophy,method=multiple_choice_joint,model=openai_gpt2")
        'mmlu:subject=philosophy,method=multiple_choice_joint'
        >>> task_name("narrative_qa:model=openai_gpt2,data_augmentation=canonical")
        'narrative_qa:data_augmentation=canonical'
    """
    scenario, args = split_run_name(run_name)
    out = scenario
    pending_colon = False
    for sep, arg in args:
        if arg.split("=", 1)[0] in _MODEL_ARGS:
            pending_colon = pending_colon or sep == ":"
            continue
        out += (":" if pending_colon else sep) + arg
        pending_colon = False
    return out


def _load_json(path: Path) -> Any:
    """Parse one JSON file; malformed content is an InputError naming line and column."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read file: {exc.strerror or exc}") from exc
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON at column {exc.colno} (character {exc.pos}): "
                               f"{exc.msg}", line=exc.lineno,
                         hint=f"the file is truncated or corrupt; {_HINT_RERUN}") from exc


def _get(obj: Any, keys: str, path: Path, where: str = "") -> Any:
    """``obj[k1][k2]...`` for ``keys="k1.k2"``; a missing key is an InputError naming it."""
    current = obj
    for key in keys.split("."):
        if not isinstance(current, dict) or key not in current:
            prefix = f"{where}: " if where else ""
            raise InputError(path, f"{prefix}missing key '{keys}'",
                             hint=f"is this a HELM {path.name} (crfm-helm 0.5.x)? {_HINT_RERUN}")
        current = current[key]
    return current


def _object(value: Any, path: Path, where: str) -> dict[str, Any]:
    """``value`` if it is a JSON object; else an InputError naming ``where``."""
    if not isinstance(value, dict):
        kind = "null" if value is None else f"a JSON {_JSON_TYPES.get(type(value), 'value')} " \
            f"{value!r:.40}"
        raise InputError(path, f"{where} must be a JSON object, got {kind}",
                         hint=f"is this a HELM {path.name} (crfm-helm 0.5.x)? {_HINT_RERUN}")
    return value


def _trial(obj: dict[str, Any], path: Path, where: str) -> int:
    """``train_trial_index`` (0 when absent) as an int."""
    value = obj.get("train_trial_index", 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(path, f"{where}: 'train_trial_index' must be an integer, got "
                               f"{value!r}", hint=_HINT_RERUN)
    return value


_JSON_TYPES = {str: "string", list: "array", int: "number", float: "number", bool: "boolean"}
_TRUE_WORDS = {"true", "1", "yes"}
_FALSE_WORDS = {"false", "0", "no"}


def _flag(value: Any, name: str) -> bool:
    """A boolean option: a bool, 0/1 or true/false/yes/no (any case); else ValueError
    (``bool("flase")`` would be True)."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError(f"HELMAdapter: {name} must be true or false, got {value!r}")


def _perturbation_key(perturbation: Any) -> str | None:
    """A stable string for a PerturbationDescription (None for the original instance)."""
    if not perturbation:
        return None
    if not isinstance(perturbation, dict):
        return str(perturbation)
    extra = ",".join(f"{k}={perturbation[k]}" for k in sorted(perturbation)
                     if k not in _PERTURBATION_FLAGS)
    return f"{perturbation.get('name', 'perturbed')}" + (f":{extra}" if extra else "")


def _prompt_text(request: dict[str, Any]) -> str:
    """The text the model saw: ``prompt``, else the chat messages, else multimodal text."""
    prompt = request.get("prompt")
    if prompt:
        return str(prompt)
    messages = request.get("messages") or []
    texts = [m.get("content") for m in messages if isinstance(m, dict)]
    text = "\n\n".join(t for t in texts if isinstance(t, str) and t)
    if text:
        return text
    multimodal = request.get("multimodal_prompt")
    media = (multimodal.get("media_objects") if isinstance(multimodal, dict) else None) or []
    return "\n".join(m["text"] for m in media if isinstance(m, dict) and m.get("text"))


def _with_options(text: str, references: Any) -> str:
    """The input followed by its answer options as HELM lists them (``A. ...``)."""
    options = [str((ref.get("output") or {}).get("text") or "") for ref in references or []
               if isinstance(ref, dict)]
    if not options:
        return text
    return "\n".join([text] + [f"{chr(65 + i) if i < 26 else i + 1}. {option}"
                                for i, option in enumerate(options)])


@dataclass
class _Run:
    """One run folder while it is being read."""

    folder: Path
    suite: str
    name: str = ""
    task: str = ""
    scenario: str = ""
    model: str = ""
    method: str = ""
    # (instance_id, perturbation key) -> split
    splits: dict[tuple[str, str | None], str] = field(default_factory=dict)
    # (instance_id, train_trial_index, perturbation key) -> (prompt seen, prompt without the
    # reference multiple_choice_separate_* appends)
    prompts: dict[tuple[str, int, str | None], tuple[str, str]] = field(default_factory=dict)
    # (instance_id, perturbation key) -> the instance's own input text (the input text)
    inputs: dict[tuple[str, str | None], str] = field(default_factory=dict)
    text_rule: str = RULE_HELM_INPUT


@dataclass
class _Unit:
    """One work unit of :meth:`HELMAdapter.plan`: a run folder with its run spec read
    (``run``), or the error that stops the reading at it (``error``)."""

    folder: Path
    run: _Run | None = None
    error: InputError | None = None


class HELMAdapter(Adapter):
    """Reads HELM ``runs/<suite>/`` folders, a ``benchmark_output`` folder or run folders.

    A run folder is read when ``run_spec.json``, ``scenario_state.json`` and
    ``per_instance_stats.json`` exist (folders named with ``:`` or with ``-`` in its place
    both work); incomplete folders and ``eval_cache/`` are skipped with a log message.

    Args:
        thresholds: per-task metric overrides (``tasks: {TASK: {metric: NAME}}``).
        include_perturbed (bool): also yield perturbed instances (HELM ``data_augmentation``),
            with instance ids ``"<id>|<perturbation>"``. Default False: they are ignored.
            A bool, 0/1 or true/false/yes/no (any case); anything else is a ValueError.
        train_trials ("mean" | "first"): several train trials (few-shot draws) of one
            instance are averaged (default), or only the first trial is used.
        split ("main" | "all" | str): which instances to read: "main" (default) reads the
            ``test`` split when the run has one, else every split it has (e.g. ``valid`` for
            hellaswag), as HELM's leaderboards do; "all" reads every split; any other value
            names one split.

    Example:
        >>> rows = list(HELMAdapter(train_trials="first").read([Path("runs/v1")]))
    """

    name = "helm"
    options_allowed = ("include_perturbed", "train_trials", "split")

    def __init__(self, thresholds: Thresholds | None = None, **options: Any):
        super().__init__(thresholds, **options)
        self.include_perturbed = _flag(options.get("include_perturbed", False),
                                       "include_perturbed")
        self.train_trials: TrainTrials = options.get("train_trials", "mean")
        if self.train_trials not in ("mean", "first"):
            raise ValueError(f"HELMAdapter: train_trials must be 'mean' or 'first', got "
                             f"{self.train_trials!r}")
        self.split: str = str(options.get("split", "main"))
        self.metrics = MetricTable.load()

    # -- discovery ---------------------------------------------------------------------
    def find_runs(self, paths: Sequence[Path]) -> list[Path]:
        """Complete run folders under ``paths`` (each a run, suite or benchmark_output folder).

        Raises:
            InputError: no run folder was found under the given paths.
        """
        runs: list[Path] = []
        incomplete: list[Path] = []
        for path in paths:
            path = Path(path)
            if path.is_file():
                if path.name not in RUN_FILES:
                    raise InputError(path, "not a HELM run file",
                                     hint="pass a run folder, runs/<suite>/ or benchmark_output/")
                path = path.parent
            for top, dirs, files in os.walk(path):
                present = set(files)
                if present & set(REQUIRED_FILES):
                    dirs[:] = []  # a run folder holds no runs below it
                    if present.issuperset(REQUIRED_FILES):
                        runs.append(Path(top))
                    else:
                        incomplete.append(Path(top))
                        missing = [f for f in REQUIRED_FILES if f not in present]
                        logger.warning("skipping incomplete HELM run %s (missing %s)", top,
                                       ", ".join(missing))
                    continue
                for skipped in sorted(d for d in dirs if d in _SKIP_DIRS):
                    logger.info("skipping %s (HELM cache folder)", Path(top) / skipped)
                dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        if not runs:
            where = ", ".join(map(str, paths))
            problem = "no HELM run folder found"
            if incomplete:
                problem += f" ({len(incomplete)} incomplete run folder(s) skipped)"
            raise InputError(where, problem,
                             hint=f"a run folder holds {', '.join(REQUIRED_FILES)}; pass "
                                  "benchmark_output/runs/<suite>/ or run folders")
        return sorted(set(runs))

    def read(self, paths: Sequence[Path]) -> Iterator[Row]:
        """Yield one row per (task, instance, model) of every complete run under ``paths``.

        Raises:
            InputError: malformed JSON (file, line, column), a missing key (file, key), a
                non-numeric metric value, a run without its metric, the same task and model
                in two run folders, no run folder at all, or no row from any run (why: the
                split chosen, empty per_instance_stats.json).
        """
        units = self.plan(paths)
        states = []
        for unit in units:
            yield from self.read_unit(unit)
            states.append(self.unit_state())
            self.check_unit(states[-1])
        self.finish(states, paths)

    # -- parallel reading (ingest.read_arrow, engines.RayEngine) -----------------------
    def plan(self, paths: Sequence[Path]) -> list[_Unit]:
        """Work units for parallel reading: one per run folder, in the order :meth:`read`
        reads them. A run's rows depend on its own folder only; the one check across runs
        (the same task and model in two folders) is made here from the small run_spec.json
        files. A run whose run_spec cannot be read, or that repeats an earlier run, ends the
        plan with its error: :meth:`check_unit` raises it after the runs before it were
        read, where :meth:`read` raised it before.

        Raises:
            InputError: no run folder under ``paths``.
        """
        units: list[_Unit] = []
        seen: dict[tuple[str, str], Path] = {}
        for folder in self.find_runs(paths):
            try:
                run = self._read_run_spec(folder)
                other = seen.setdefault((run.task, run.model), folder)
                if other != folder:
                    raise InputError(folder, f"task {run.task!r} and model {run.model!r} were "
                                             f"already read from {other}",
                                     hint="ingest one suite at a time (use --replace to let a "
                                          "later suite win)")
            except InputError as exc:
                units.append(_Unit(folder, error=exc))
                break  # reading stops at this run: the runs after it are not read
            units.append(_Unit(folder, run=run))
        return units

    @staticmethod
    def unit_cost(unit: _Unit) -> int:
        """Bytes of a run folder's files (the pool starts the largest first)."""
        try:
            return sum(file_size(p) for p in unit.folder.iterdir())
        except OSError:
            return 0

    def read_unit(self, unit: _Unit) -> Iterator[Row]:
        """The rows of one run folder of :meth:`plan` (in a worker or here). An error is kept
        for :meth:`unit_state` (raised by :meth:`check_unit` in the reading process, after
        the log records the worker wrote before it)."""
        self._error: InputError | None = unit.error
        self._n_rows = 0
        self._skipped: list[str] = []  # why a run gave no rows (the error if none gives any)
        if unit.run is None:
            return
        run = replace(unit.run, splits={}, prompts={}, inputs={})
        try:
            self._read_scenario_state(run)
            yield from self._read_stats(run)
        except InputError as exc:
            self._error = exc

    def unit_state(self) -> dict[str, Any]:
        """What the reading process needs from a unit: its error, if any (HELM run folders
        name no parameter count or price)."""
        return {"error": getattr(self, "_error", None), "model_metadata": {},
                "n_rows": getattr(self, "_n_rows", 0),
                "skipped": list(getattr(self, "_skipped", []))}

    def check_unit(self, state: dict[str, Any]) -> None:
        """In the reading process, unit by unit in plan order: raise the unit's error."""
        state["checked"] = True
        if state["error"] is not None:
            raise state["error"]

    def finish(self, states: list[dict[str, Any]], paths: Sequence[Path]) -> None:
        """After the last unit: the errors of units not checked one by one yet; then, when
        no run gave a row, an InputError saying why (rather than "nothing recognisable")."""
        for state in states:
            if not state.get("checked"):
                self.check_unit(state)
        skipped = [reason for state in states for reason in state.get("skipped", ())]
        if skipped and not sum(state.get("n_rows", 0) for state in states):
            shown = "; ".join(skipped[:3]) + (f"; and {len(skipped) - 3} more run(s)"
                                              if len(skipped) > 3 else "")
            split = any(" in split(s) " in reason for reason in skipped)
            raise InputError(", ".join(map(str, paths)), f"no rows read: {shown}",
                             hint="choose a split with -o split=NAME, or split=all" if split
                             else _HINT_RERUN)

    # -- one run -----------------------------------------------------------------------
    def _read_run_spec(self, folder: Path) -> _Run:
        path = folder / RUN_SPEC
        spec = _load_json(path)
        if not isinstance(spec, dict):
            raise InputError(path, f"expected a JSON object (RunSpec), got "
                                   f"{type(spec).__name__}", hint=_HINT_RERUN)
        run = _Run(folder=folder, suite=folder.parent.name)
        run.name = str(spec.get("name") or folder.name)
        run.task = task_name(run.name)
        run.scenario = re.split(r"[:,]", run.name, maxsplit=1)[0]
        run.model = str(_get(spec, "adapter_spec.model", path))
        run.method = str(spec["adapter_spec"].get("method", ""))
        return run

    def _read_scenario_state(self, run: _Run) -> None:
        path = run.folder / SCENARIO_STATE
        state = _load_json(path)
        request_states = _get(state, "request_states", path)
        if not isinstance(request_states, list):
            raise InputError(path, "'request_states' must be a list", hint=_HINT_RERUN)
        separate = run.method.startswith("multiple_choice_separate")
        # multiple_choice_joint puts the options into the question the model answers; with
        # them the nearest neighbour of 21 of the real fixture's 23 instances is from the same
        # run, without them of 20 (bench/measure_instance_texts.py)
        joint = run.method.startswith("multiple_choice_joint")
        run.text_rule = RULE_HELM_INPUT + ("+options" if joint else "")
        for i, rs in enumerate(request_states):
            where = f"request_states[{i}]"
            instance = _object(_get(_object(rs, path, where), "instance", path, where), path,
                               where + ".instance")
            iid = str(_get(instance, "id", path, where + ".instance"))
            pert = _perturbation_key(instance.get("perturbation"))
            run.splits.setdefault((iid, pert), str(instance.get("split", "test")))
            if (iid, pert) not in run.inputs:
                given = instance.get("input")
                if given is not None:
                    _object(given, path, where + ".instance.input")
                text = str((given or {}).get("text") or "")
                if joint and text.strip():
                    text = _with_options(text, instance.get("references"))
                run.inputs[(iid, pert)] = text
            if rs.get("request_mode") == "calibration":
                continue  # the calibration prompt holds only the answer, not the question
            key = (iid, _trial(rs, path, where), pert)
            if key in run.prompts:
                continue  # multiple_choice_separate_*: one state per reference; keep the first
            seen = _prompt_text(_object(_get(rs, "request", path, where), path,
                                        where + ".request"))
            text = seen
            if separate:
                text = self._strip_reference(text, instance, rs.get("reference_index"))
            run.prompts[key] = (seen, text)

    @staticmethod
    def _strip_reference(prompt: str, instance: dict[str, Any], index: Any) -> str:
        """Drop the answer choice that multiple_choice_separate_* appends to the prompt."""
        try:
            ref = instance["references"][int(index)]["output"]["text"]
        except (KeyError, IndexError, TypeError, ValueError):
            return prompt
        if ref and prompt.endswith(ref):
            return prompt[: -len(ref)].rstrip()
        return prompt

    def _wanted_splits(self, run: _Run) -> set[str]:
        present = set(run.splits.values())
        if self.split == "all":
            return present
        if self.split == "main":
            return {"test"} if "test" in present else present
        return {self.split}

    def _read_stats(self, run: _Run) -> Iterator[Row]:
        path = run.folder / PER_INSTANCE_STATS
        entries = _load_json(path)
        if not isinstance(entries, list):
            raise InputError(path, f"expected a JSON list of PerInstanceStats, got "
                                   f"{type(entries).__name__}", hint=_HINT_RERUN)
        if not entries:
            logger.warning("%s: no entries (an empty list); run skipped", path)
            self._skipped.append(f"{path} has no entries (an empty list)")
            return
        splits = self._wanted_splits(run)
        # (instance_id, perturbation) -> {train_trial_index: {metric: (value, entry index)}}
        merged: dict[tuple[str, str | None], dict[int, dict[str, tuple[Any, int]]]] = {}
        available: set[str] = set()
        n_perturbed = n_other_split = 0
        for i, entry in enumerate(entries):
            where = f"entry {i}"
            iid = str(_get(entry, "instance_id", path, where))
            where = f"entry {i} (instance {iid})"
            stats = _get(entry, "stats", path, where)
            pert_desc = entry.get("perturbation")
            pert = _perturbation_key(pert_desc)
            if pert is not None and not self.include_perturbed:
                n_perturbed += 1
                continue
            split = run.splits.get((iid, pert))
            if split is None:
                raise InputError(path, f"{where}: instance not found in {SCENARIO_STATE}",
                                 hint="the folder mixes files of different runs; "
                                      + _HINT_RERUN)
            if split not in splits:
                n_other_split += 1
                continue
            trial = _trial(entry, path, where)
            values = merged.setdefault((iid, pert), {}).setdefault(trial, {})
            if not isinstance(stats, list):
                raise InputError(path, f"{where}: 'stats' must be a list", hint=_HINT_RERUN)
            for stat in stats:
                name = _get(stat, "name", path, where)
                metric = _get(name, "name", path, where + " stat")
                if name.get("split", split) != split:
                    continue
                stat_pert = name.get("perturbation")
                if stat_pert and stat_pert != pert_desc:
                    continue  # a robustness/fairness view computed on another copy
                # Several entries per instance (one per Metric class): union of their stats.
                values.setdefault(metric, (stat.get("mean", _NO_MEAN), i))
                available.add(metric)
        if n_perturbed:
            logger.info("%s: ignored %d perturbed instance entries (include_perturbed=False)",
                        run.folder.name, n_perturbed)
        if n_other_split:
            logger.info("%s: skipped %d entries outside split(s) %s", run.folder.name,
                        n_other_split, ", ".join(sorted(splits)))
        if not merged:
            why = (f"no instances in split(s) {', '.join(sorted(splits))} (splits present: "
                   f"{', '.join(sorted(set(run.splits.values()))) or 'none'}"
                   + (f"; {n_perturbed} perturbed entries ignored" if n_perturbed else "") + ")")
            logger.warning("%s: %s; run skipped", run.folder, why)
            self._skipped.append(f"{run.folder.name}: {why}")
            return
        metric = self._choose_metric(run, available, path)
        higher = False if metric in self.metrics.lower_is_better else None
        origin = str(path)
        ids_per_split: dict[str, set[str]] = {}
        for (iid, _pert), split in run.splits.items():
            ids_per_split.setdefault(iid, set()).add(split)
        n_rows = n_missing = 0
        for (iid, pert), trials in merged.items():
            scores: list[float] = []
            for trial in sorted(trials):
                found = trials[trial].get(metric)
                if found is None:
                    continue
                value, entry_index = found
                if value is _NO_MEAN:  # count == 0: HELM leaves mean out
                    continue
                scores.append(self._number(value, path, entry_index, iid, metric))
                if self.train_trials == "first":
                    break
            if not scores:
                n_missing += 1
                continue
            score = math.fsum(scores) / len(scores)
            first_trial = min(trials)
            seen, prompt = run.prompts.get((iid, first_trial, pert)) or run.prompts.get(
                (iid, 0, pert)) or ("", "")
            # The instance's own input: the prompt adds instructions and in-context examples
            # shared by all instances (identical embeddings once truncated). Only without an
            # input text (e.g. multimodal inputs) is the prompt used.
            text, rule = run.inputs.get((iid, pert), ""), run.text_rule
            if not text.strip():
                text, rule = prompt, RULE_HELM_PROMPT
            phash = prompt_hash(seen) if seen else ""
            instance_id = iid
            if len(ids_per_split.get(iid, ())) > 1:
                instance_id += f"|{run.splits[(iid, pert)]}"
            if pert is not None:
                instance_id += f"|{pert}"
            n_rows += 1
            self._n_rows += 1
            yield Row(source="helm", benchmark=run.suite, task=run.task,
                      instance_id=instance_id, input_text=text, model=run.model,
                      metric=metric, score=score, higher_is_better=higher, origin=origin,
                      prompt_hash=phash, text_rule=rule)
        if n_missing:
            logger.warning("%s: %d instance(s) have no '%s' stat and were skipped",
                           run.folder.name, n_missing, metric)
        logger.info("%s: %d instances, metric %s, split(s) %s", run.folder.name, n_rows,
                    metric, ", ".join(sorted(splits)))

    def _choose_metric(self, run: _Run, available: set[str], path: Path) -> str:
        """The user's task override, else the scenario's main metric, else the fallback."""
        override = self.thresholds.task_metric(run.task) or self.thresholds.task_metric(
            run.scenario)
        shown = ", ".join(sorted(m for m in available
                                 if m not in _BOOKKEEPING and not m.startswith("finish_reason")))
        fix = (f"choose one in --thresholds: tasks: {{\"{run.task}\": {{metric: NAME}}}} "
               f"with NAME among: {shown or 'none'}")
        if override:
            if override not in available:
                raise InputError(path, f"task {run.task!r}: the metric '{override}' set in the "
                                       "thresholds file is not in this run", hint=fix)
            return override
        listed = self.metrics.scenarios.get(run.scenario)
        candidates = listed or self.metrics.fallback
        for metric in candidates:
            if metric in available:
                return metric
        if listed:
            problem = (f"run {run.name!r} has none of the main metric(s) "
                       f"{', '.join(listed)} of scenario '{run.scenario}'")
        else:
            problem = (f"run {run.name!r} (scenario '{run.scenario}') has no known "
                       "correctness metric")
        raise InputError(path, problem, hint=fix)

    @staticmethod
    def _number(value: Any, path: Path, entry: int, iid: str, metric: str) -> float:
        """A stat's ``mean`` as a float; anything else is an InputError."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
            if math.isfinite(number):
                return number
        raise InputError(path, f"entry {entry} (instance {iid}): stat '{metric}' has a "
                               f"non-numeric mean {value!r}",
                         hint=f"expected a number; {_HINT_RERUN}")


__all__ = ["HELMAdapter", "MetricTable", "split_run_name", "task_name"]
