"""The helm and eee adapters read in work units (one per HELM run folder, one per EEE
aggregate with its samples file): the store, the adapters' log lines (in order) and the
errors are the same whether the units are read in this process (LM_ROUTER_WORKERS=1), by
2 worker processes, or by Ray tasks (``--engine ray``, last in this module: no process is
forked while Ray's driver threads run). Real inputs: the committed HELM suite
(tests/data/helm), ../shared/fixtures/helm_real when present, and EEE files converted from
the HELM suite by test_eee_adapter's writer."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES, TESTS, one_error
from test_eee_adapter import _helm_runs, helm_to_eee, write_eee

from lm_router_plugin.adapters.eee import EEEAdapter
from lm_router_plugin.adapters.helm import HELMAdapter
from lm_router_plugin.adapters.lmeval import LMEvalAdapter
from lm_router_plugin.store.ingest import largest_first, read_arrow
from lm_router_plugin.store.store import Store

SUITE = TESTS / "data" / "helm" / "fixture-suite"
EXAMPLES = TESTS.parent / "examples" / "runs"  # lm-eval logs of four models
REAL = FIXTURES / "helm_real"
PERTURBED = "simple_mcqa,data_augmentation=lower:model=mock_model-b"


# -- helpers ---------------------------------------------------------------------------
def _adapter_logs(output: str) -> list[str]:
    """The adapters' log lines in the order given (a progress bar may precede one)."""
    return re.findall(r"(?:INFO|WARNING) lm_router_plugin\.adapters[^\n\r]*", output)


def _ingest(cli, monkeypatch, workers: int, store: Path, *args, engine: str = "local"):
    monkeypatch.setenv("LM_ROUTER_WORKERS", str(workers))
    extra = ("--engine", "ray") if engine == "ray" else ()
    return cli("ingest", *args, *extra, store_dir=store)


def assert_same_store(a: Path, b: Path) -> None:
    """Same Parquet bytes, same Arrow table with its dictionaries, same model metadata."""
    sa, sb = Store(a), Store(b)
    assert sa.table_path.read_bytes() == sb.table_path.read_bytes()
    ta, tb = sa.read_arrow(), sb.read_arrow()
    assert ta.equals(tb)
    for name in ta.column_names:
        for ca, cb in zip(ta.column(name).chunks, tb.column(name).chunks):
            assert ca.equals(cb), name
    assert sa.read_models() == sb.read_models()


def same_everywhere(cli, monkeypatch, tmp_path: Path, *args, engines=(("local", 2),)
                    ) -> tuple[Path, list[str]]:
    """Ingest ``args`` in this process and with each (engine, workers); same store, same
    log lines in the same order, same last stdout line. Returns (store, log lines)."""
    base = tmp_path / "one"
    first = _ingest(cli, monkeypatch, 1, base, *args)
    assert first.exit_code == 0, first.output
    for engine, workers in engines:
        other = tmp_path / f"{engine}{workers}"
        result = _ingest(cli, monkeypatch, workers, other, *args, engine=engine)
        assert result.exit_code == 0, result.output
        assert _adapter_logs(result.output) == _adapter_logs(first.output)
        assert result.stdout.splitlines()[-1].replace(str(other), "") == \
            first.stdout.splitlines()[-1].replace(str(base), "")
        assert_same_store(base, other)
    return base, _adapter_logs(first.output)


def same_error(cli, monkeypatch, tmp_path: Path, *args, engines=(("local", 2),)) -> str:
    """Ingest ``args`` in this process and with each (engine, workers): one error, the same
    one, after the same adapter log lines; nothing stored. Returns the error line."""
    base = tmp_path / "e-one"
    first = _ingest(cli, monkeypatch, 1, base, *args)
    message = one_error(first)
    for engine, workers in engines:
        other = tmp_path / f"e-{engine}{workers}"
        result = _ingest(cli, monkeypatch, workers, other, *args, engine=engine)
        assert one_error(result) == message
        assert _adapter_logs(result.output) == _adapter_logs(first.output)
        assert not other.exists()
    assert not base.exists()
    return message


def _helm_two_suites(root: Path) -> tuple[Path, Path]:
    """runs/a: the committed suite; runs/b: a copy of its first run under another name (the
    same task and model in two run folders). Returns (a, the copied run)."""
    a = root / "a"
    shutil.copytree(SUITE, a)
    first = sorted(SUITE.iterdir())[0]
    copy = root / "b" / ("again-" + first.name)
    shutil.copytree(first, copy)
    return a, copy


def _continuous_runs(root: Path, collection: str = "coll", models=("org/a", "org/b", "org/c"),
                     ids=range(6)) -> Path:
    """EEE runs of one task whose continuous metric has no threshold (the adapter cuts it
    at the middle of [min, max] and warns once per task and metric)."""
    for i, model in enumerate(models):
        samples = [{"sample_id": str(k), "result": "r", "score": 0.1 * int(k) + 0.05 * i,
                    "is_correct": False, "raw": f"q{k}", "formatted": f"Q{k}",
                    "reference": ["x"], "output": "y"} for k in ids]
        write_eee(root, collection, model, "custom", "mytask",
                  [{"id": "r", "metric": "my_score", "score": 0.3, "score_type": "continuous",
                    "lower_is_better": False}], samples)
    return root


@pytest.fixture
def eee_root(tmp_path: Path) -> Path:
    root = tmp_path / "eee"
    for run in _helm_runs():
        helm_to_eee(run, root)
    _continuous_runs(tmp_path / "eee" / "continuous")
    return root


# -- units -----------------------------------------------------------------------------
def test_one_unit_per_run_folder_and_per_aggregate(eee_root: Path):
    units = HELMAdapter().plan([SUITE])
    assert [u.folder for u in units] == sorted(SUITE.iterdir())
    assert all(u.error is None for u in units)
    assert EEEAdapter().plan([eee_root]) == sorted(eee_root.rglob("*-*-*-*-*[0-9a-f].json"))


def test_the_pool_starts_the_largest_units_first(eee_root: Path):
    """ingest.largest_first: the adapter's unit_cost (bytes) decides which unit a worker
    starts first (ties in plan order); adapters without it (EEE) keep the plan order."""
    helm = HELMAdapter()
    units = helm.plan([SUITE])
    costs = [helm.unit_cost(u) for u in units]
    assert costs == [sum(f.stat().st_size for f in u.folder.iterdir()) for u in units]
    order = largest_first(helm, units)
    assert sorted(order) == list(range(len(units)))
    assert [costs[i] for i in order] == sorted(costs, reverse=True)
    ties = [i for i in order if costs[i] == costs[order[0]]]
    assert ties == sorted(ties)
    lmeval = LMEvalAdapter()
    tasks = lmeval.plan([EXAMPLES])
    assert len(tasks) > 1
    for unit in tasks:
        assert lmeval.unit_cost(unit) == sum(sf.path.stat().st_size for sf in unit) > 0
    eee = EEEAdapter()
    assert largest_first(eee, eee.plan([eee_root])) == list(range(len(eee.plan([eee_root]))))


def test_units_are_read_by_worker_processes():
    """2 workers: the per-run log records come from processes other than this one, and the
    table equals the in-process read's."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger("lm_router_plugin.adapters.helm")
    handler, level = Keep(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        one, _ = read_arrow("helm", [SUITE], workers=1)
        n_here = len(records)
        two, _ = read_arrow("helm", [SUITE], workers=2)
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    assert one.equals(two)
    assert n_here == len(records) - n_here > 0
    assert {r.process for r in records[:n_here]} == {os.getpid()}
    assert os.getpid() not in {r.process for r in records[n_here:]}
    assert [r.getMessage() for r in records[:n_here]] == \
        [r.getMessage() for r in records[n_here:]]


# -- HELM: 1 worker vs 2 ---------------------------------------------------------------
def test_helm_same_store_and_logs(cli, monkeypatch, tmp_path):
    paths = [SUITE] + ([REAL] if REAL.is_dir() else [])
    store, logs = same_everywhere(cli, monkeypatch, tmp_path, "helm", *paths,
                                  "-o", "include_perturbed=true")
    n_runs = len(list(SUITE.iterdir())) + (len(list(REAL.iterdir())) if REAL.is_dir() else 0)
    assert sum(" instances, metric " in line for line in logs) == n_runs
    assert len(pq.read_table(Store(store).table_path)) > 40


def test_helm_same_run_in_two_folders_is_the_same_error(cli, monkeypatch, tmp_path):
    root = tmp_path / "runs"
    _, copy = _helm_two_suites(root)
    message = same_error(cli, monkeypatch, tmp_path, "helm", root)
    assert str(copy) in message and "were already read from" in message


def test_helm_error_after_a_runs_log_lines_is_the_same(cli, monkeypatch, tmp_path):
    # the perturbed run logs its ignored entries, then has no 'bleu_4' to use: the log
    # line reaches the user before the error from a worker too
    thresholds = tmp_path / "t.yaml"
    thresholds.write_text('tasks:\n  "simple_mcqa,data_augmentation=lower": {metric: bleu_4}\n')
    message = same_error(cli, monkeypatch, tmp_path, "helm", SUITE,
                         "--thresholds", thresholds)
    assert str(SUITE / PERTURBED / "per_instance_stats.json") in message
    assert "'bleu_4' set in the thresholds file is not in this run" in message


# -- EEE: 1 worker vs 2 ----------------------------------------------------------------
def test_eee_same_store_and_logs(cli, monkeypatch, tmp_path, eee_root):
    store, logs = same_everywhere(cli, monkeypatch, tmp_path, "eee", eee_root)
    warned = [line for line in logs if "continuous metric 'my_score'" in line]
    assert len(warned) == 1  # once for the task, not once per run or worker
    table = pq.read_table(Store(store).table_path).to_pandas()
    assert set(table[table.task == "mytask"].model) == {"org/a", "org/b", "org/c"}


def test_eee_same_run_twice_is_the_same_error(cli, monkeypatch, tmp_path, eee_root):
    copy = tmp_path / "copy"
    shutil.copytree(eee_root, copy)
    message = same_error(cli, monkeypatch, tmp_path, "eee", eee_root, copy)
    assert "is also in" in message and str(copy) in message


def test_eee_first_problem_in_row_order_wins(cli, monkeypatch, tmp_path):
    # a later run repeats sample 1 of org/a (row 2) and then its own sample 7 (row 4): the
    # sample of two runs is reported, as the serial read meets it first
    root = _continuous_runs(tmp_path / "runs")
    later = _continuous_runs(tmp_path / "later", "zcoll", models=("org/a",), ids=["7", "1",
                                                                                  "8", "7"])
    message = same_error(cli, monkeypatch, tmp_path, "eee", root, later)
    assert "sample 1 is also in" in message and str(later) in message
    (aggregate,) = later.rglob("*[0-9a-f].json")
    data = json.loads(aggregate.read_text())
    assert data["detailed_evaluation_results"]["total_rows"] == 4


# -- Ray: last in this module ----------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster (2 CPUs) for the module; the engine uses it and leaves it."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def test_ray_reads_helm_and_eee_units_as_the_local_engine(cli, monkeypatch, tmp_path,
                                                          ray_cluster, eee_root):
    paths = [SUITE] + ([REAL] if REAL.is_dir() else [])
    ray_only = (("ray", 1),)  # the local side in this process: no fork beside Ray's threads
    same_everywhere(cli, monkeypatch, tmp_path / "s-helm", "helm", *paths,
                    "-o", "include_perturbed=true", engines=ray_only)
    same_everywhere(cli, monkeypatch, tmp_path / "s-eee", "eee", eee_root, engines=ray_only)
    root = tmp_path / "runs"
    _helm_two_suites(root)
    assert "were already read from" in same_error(cli, monkeypatch, tmp_path, "helm", root,
                                                  engines=ray_only)
