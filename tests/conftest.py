"""Shared fixtures: real lm-eval sample logs made offline by lm-eval itself, and CLI helpers.

``lmeval_runs`` (session scope) runs lm-eval once on task_configs/ for six fake models:
two ``--model dummy`` runs through lm-eval's own CLI (``org/Fake-A`` on the ``router_toy``
tag, ``org/Fake-B`` on a group ``toy_quiz`` plus the other tasks) and the four replay
profiles of ``tests/lmeval_replay.py`` through ``simple_evaluate`` + ``EvaluationTracker``.
The three runs go in parallel subprocesses (about 20 s on 2 cores).

``lmeval_fewshot_runs`` (session scope) runs the same ``router_toy`` tasks with
``--num_fewshot 3`` for ``org/Fake-A`` (dummy, CLI) and the four replay profiles.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lm_router_plugin import Store

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURES = SHARED / "fixtures"
TASK_CONFIGS = REPO / "task_configs"
TESTS = Path(__file__).resolve().parent

DUMMY_MODELS = ("org/Fake-A", "org/Fake-B")
GROUP_YAML = """group: toy_quiz
task:
  - toy_science
  - toy_history
aggregate_metric_list:
  - metric: acc
    aggregation: mean
    weight_by_size: true
metadata:
  version: 1.0
"""


def offline_env() -> dict[str, str]:
    """The environment for lm-eval subprocesses: no hub access, quiet, reproducible."""
    env = dict(os.environ)
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false",
               PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    return env


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


@dataclass
class LMEvalRuns:
    """The output of the session's lm-eval runs."""

    root: Path  # the --output_path: <root>/<model folder>/{results,samples}_*.json[l]
    tasks_dir: Path  # the copy of task_configs/ (plus the toy_quiz group) lm-eval read
    seconds: float
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> results JSON

    def model_dir(self, model: str) -> Path:
        return self.root / model.replace("/", "__")

    def results_file(self, model: str) -> Path:
        (path,) = self.model_dir(model).glob("results_*.json")
        return path

    def samples_file(self, model: str, task: str) -> Path:
        (path,) = self.model_dir(model).glob(f"samples_{task}_*.jsonl")
        return path


def _start(args: list[str], log: Path, cwd: Path) -> tuple[subprocess.Popen, Path]:
    fh = open(log, "wb")  # noqa: SIM115 - closed by the child's exit
    proc = subprocess.Popen(args, cwd=cwd, env=offline_env(), stdout=fh,
                            stderr=subprocess.STDOUT)
    fh.close()
    return proc, log


@pytest.fixture(scope="session")
def lmeval_runs(tmp_path_factory: pytest.TempPathFactory) -> LMEvalRuns:
    """Real lm-eval 0.4.x sample logs of 6 fake models on the task_configs/ tasks."""
    pytest.importorskip("lm_eval")
    base = tmp_path_factory.mktemp("lmeval")
    tasks_dir = base / "tasks"  # a copy run from another CWD: data paths must not depend on it
    shutil.copytree(TASK_CONFIGS, tasks_dir, ignore=shutil.ignore_patterns("__pycache__"))
    (tasks_dir / "_toy_quiz.yaml").write_text(GROUP_YAML)
    root = base / "runs"
    lm_eval_cli = [sys.executable, "-m", "lm_eval", "--include_path", str(tasks_dir),
                   "--output_path", str(root), "--log_samples", "--model", "dummy"]
    replay = ("import lmeval_replay as r; "
              f"r.run_profiles({str(root)!r}, include_path={str(tasks_dir)!r})")
    start = time.perf_counter()
    procs = [
        _start(lm_eval_cli + ["--model_args", f"pretrained={DUMMY_MODELS[0]}",
                              "--tasks", "router_toy"], base / "dummy_a.log", base),
        _start(lm_eval_cli + ["--model_args", f"pretrained={DUMMY_MODELS[1]}", "--tasks",
                              "toy_quiz,toy_arith,toy_capitals,toy_units,toy_cooking"],
               base / "dummy_b.log", base),
        _start([sys.executable, "-c", replay], base / "replay.log", base),
    ]
    for proc, log in procs:
        if proc.wait(timeout=600) != 0:
            tail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"lm-eval run failed ({log}):\n{tail}")
    return _collect(root, tasks_dir, start)


def _collect(root: Path, tasks_dir: Path, start: float) -> LMEvalRuns:
    runs = LMEvalRuns(root=root, tasks_dir=tasks_dir, seconds=time.perf_counter() - start)
    for path in sorted(root.glob("*/results_*.json")):
        data = json.loads(path.read_text())
        runs.results[data["model_name"]] = data
    return runs


FEWSHOT = 3


@pytest.fixture(scope="session")
def lmeval_fewshot_runs(lmeval_runs: LMEvalRuns,
                        tmp_path_factory: pytest.TempPathFactory) -> LMEvalRuns:
    """The ``router_toy`` tasks run by lm-eval with ``--num_fewshot 3`` (org/Fake-A through
    the CLI, the four replay profiles in-process), on the same task copy as ``lmeval_runs``."""
    base = tmp_path_factory.mktemp("lmeval_fewshot")
    root = base / "runs"
    tasks_dir = lmeval_runs.tasks_dir
    replay = ("import lmeval_replay as r; "
              f"r.run_profiles({str(root)!r}, include_path={str(tasks_dir)!r}, "
              f"num_fewshot={FEWSHOT})")
    start = time.perf_counter()
    procs = [
        _start([sys.executable, "-m", "lm_eval", "--include_path", str(tasks_dir),
                "--output_path", str(root), "--log_samples", "--model", "dummy",
                "--model_args", f"pretrained={DUMMY_MODELS[0]}", "--tasks", "router_toy",
                "--num_fewshot", str(FEWSHOT)], base / "dummy_a.log", base),
        _start([sys.executable, "-c", replay], base / "replay.log", base),
    ]
    for proc, log in procs:
        if proc.wait(timeout=600) != 0:
            tail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"lm-eval run failed ({log}):\n{tail}")
    return _collect(root, tasks_dir, start)


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., Any]:
    """Run ``lm-router ARGS`` in-process (Click's CliRunner); ``--store`` defaults to a tmp dir.

    Returns the click ``Result`` (``exit_code``, ``stdout``, ``stderr``, ``output``).
    """
    from click.testing import CliRunner

    from lm_router_plugin.cli.commands import main

    store = tmp_path / "store"

    def run(*args: str | Path, store_dir: Path | None = None) -> Any:
        argv = [str(a) for a in args]
        if argv and argv[0] in {"ingest", "info", "recommend", "route", "evaluate"} \
                and "--store" not in argv:
            argv += ["--store", str(store_dir or store)]
        return CliRunner().invoke(main, argv, catch_exceptions=False)

    run.store = store  # type: ignore[attr-defined]
    return run


def one_error(result: Any) -> str:
    """The single "Error: ..." line of a failed CLI call (exit code 1, no traceback)."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def assert_unreadable_parquet_is_one_error(cli: Any, root: Path, bad: Path, damage: str,
                                           store: Path) -> None:
    """Damage ``bad`` ("truncated": its first half; "garbage": text) and check that ingesting
    ``root`` is one error naming it, with nothing stored."""
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not parquet\n" * 9)
    message = one_error(cli("ingest", "lm-eval", root, store_dir=store))
    assert str(bad) in message and "not a readable Parquet file" in message
    assert not Store(store).table_path.exists()


def file_bytes(path: Path) -> bytes | None:
    """The bytes of ``path``, or None when it does not exist (store unchanged checks)."""
    return path.read_bytes() if path.exists() else None


# -- older lm-eval layouts, derived from a real 0.4.13 run ------------------------------
_NEW_KEYS = ("filter", "metrics", "doc_hash", "prompt_hash", "target_hash")


def to_legacy_array_run(runs: LMEvalRuns, model: str, out: Path) -> Path:
    """Rewrite one model's run as lm-eval 0.4.0-0.4.2 wrote it: ``results.json`` plus
    ``<model_args>_<task>.jsonl`` files that hold one indented JSON array, with
    ``arguments`` as a list of lists, no filter key (one entry per doc and filter) and no hashes.
    """
    out.mkdir(parents=True, exist_ok=True)
    results = json.loads(runs.results_file(model).read_text())
    model_args = f"pretrained={model}"
    legacy_results = {k: results[k] for k in ("results", "configs", "versions", "n-shot")}
    legacy_results["config"] = {"model": "dummy", "model_args": model_args, "batch_size": 1}
    (out / "results.json").write_text(json.dumps(legacy_results, indent=2))
    prefix = model_args.replace("/", "__").replace("=", "__")
    for task in results["configs"]:
        samples = []
        for line in read_jsonl(runs.samples_file(model, task)):
            sample = {k: v for k, v in line.items() if k not in _NEW_KEYS}
            sample["arguments"] = [list(a.values()) for a in line["arguments"].values()]
            samples.append(sample)
        (out / f"{prefix}_{task}.jsonl").write_text(json.dumps(samples, indent=2))
    return out


def to_json_array_run(runs: LMEvalRuns, model: str, out: Path) -> Path:
    """Rewrite one model's run as git-main lm-eval wrote it in mid-2024: results_<date>.json
    plus ``samples_<task>_<date>.json`` JSON arrays (gen_args arguments, hashes)."""
    folder = out / runs.model_dir(model).name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(runs.results_file(model), folder)
    for path in runs.model_dir(model).glob("samples_*.jsonl"):
        (folder / (path.stem + ".json")).write_text(json.dumps(read_jsonl(path)))
    return out
