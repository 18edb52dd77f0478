"""The shipped HELM metric table (helm_metrics.yaml) against the installed crfm-helm: its
scenario names are HELM run specs, its metric names are HELM's, and HELM's own main metric of
each listed scenario is among ours. Also: safety runs ingest with either metric naming.

crfm-helm is read as files only (run-spec sources and schema_*.yaml), never imported, so
``pip install --no-deps crfm-helm`` suffices (.ci/run does that)."""

from __future__ import annotations

import json
import re
import shutil
from importlib import resources
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lm_router_plugin.cli.commands import main
from lm_router_plugin.store.store import Store
from lm_router_plugin.store.thresholds import Thresholds

SUITE = Path(__file__).parent / "data" / "helm" / "fixture-suite"
# HELM main metrics that exist only as aggregates, never per instance (FORMATS.md 3.4):
# the table lists a per-instance metric for these scenarios instead.
AGGREGATE_ONLY = {"bbq_accuracy", "classification_macro_f1", "classification_micro_f1",
                  "perplexity", "bits_per_byte", "logprob_per_byte"}


def shipped() -> dict:
    text = resources.files("lm_router_plugin").joinpath("helm_metrics.yaml").read_text()
    return yaml.safe_load(text)


def listed(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@pytest.fixture(scope="module")
def helm():
    """(version, run-spec names, metric names, {run group: main metric names}) of crfm-helm."""
    try:
        dist = distribution("crfm-helm")
    except PackageNotFoundError:
        pytest.skip("crfm-helm is not installed (pip install --no-deps crfm-helm==0.5.16)")
    files = [Path(dist.locate_file(f)) for f in dist.files or []]
    specs: set[str] = set()
    metrics: set[str] = set()
    main_names: dict[str, set[str]] = {}
    for path in files:
        text_path = str(path)
        if "/benchmark/run_specs/" in text_path and path.suffix == ".py":
            specs |= set(re.findall(r'run_spec_function\(\s*"([^"]+)"', path.read_text()))
        elif "/benchmark/metrics/" in text_path and path.suffix == ".py":
            metrics |= set(re.findall(r'MetricName\(\s*f?"([^"{}]+)"', path.read_text()))
        elif re.search(r"/static/schema_[^/]*\.yaml$", text_path):
            schema = yaml.safe_load(path.read_text()) or {}
            metrics |= {m["name"] for m in schema.get("metrics") or []}
            for group in schema.get("run_groups") or []:
                main = (group.get("environment") or {}).get("main_name")
                if main:
                    main_names.setdefault(group["name"], set()).add(main)
    assert len(specs) > 100 and len(metrics) > 100, "crfm-helm's files were not found"
    return dist.version, specs, metrics, main_names


def test_scenarios_are_helm_run_specs(helm):
    version, specs, _, _ = helm
    unknown = sorted(set(shipped()["scenarios"]) - specs)
    assert not unknown, f"not run specs of crfm-helm {version}: {unknown}"


def test_metric_names_are_helms_own(helm):
    version, _, metrics, _ = helm
    table = shipped()
    legacy = set(table["legacy_metrics"])
    ours = {m for v in table["scenarios"].values() for m in listed(v)} | set(table["fallback"])
    unknown = sorted(ours - metrics - legacy)
    assert not unknown, f"metrics unknown to crfm-helm {version}: {unknown}"
    # a legacy name is one HELM no longer writes, and it stays listed for its scenario
    assert not legacy & metrics, "a legacy metric is current again: move it out of legacy"
    for metric, scenario in table["legacy_metrics"].items():
        assert metric in listed(table["scenarios"][scenario])


def test_helm_main_metric_is_among_ours(helm):
    version, _, _, main_names = helm
    table = shipped()["scenarios"]
    missing = {}
    for scenario, ours in table.items():
        helms = main_names.get(scenario, set()) - AGGREGATE_ONLY
        if helms and not helms & set(listed(ours)):
            missing[scenario] = sorted(helms)
    assert not missing, f"crfm-helm {version} main metrics not in the table: {missing}"
    for scenario in ("harm_bench", "simple_safety_tests", "anthropic_red_team", "xstest"):
        assert listed(table[scenario])[0] in main_names[scenario]


def test_every_listed_metric_has_a_threshold():
    thresholds = Thresholds.load()
    table = shipped()
    ours = {m for v in table["scenarios"].values() for m in listed(v)} | set(table["fallback"])
    assert not sorted(m for m in ours if not thresholds.is_known(m))


@pytest.mark.parametrize("metric", ["harm_bench_score", "safety_score"])
def test_safety_runs_ingest_with_old_and_new_metric_names(tmp_path, metric):
    """A harm_bench run as HELM Safety v1.0 (2024) wrote it, and as crfm-helm 0.5.16 does:
    a real fixture run renamed, its match stats replaced by the judge metric."""
    source = SUITE / "simple_mcqa:model=mock_model-b"
    run = tmp_path / "v1" / "harm_bench:model=mock_model-b"
    shutil.copytree(source, run)
    spec = json.loads((run / "run_spec.json").read_text())
    spec["name"] = "harm_bench:model=mock_model-b"
    (run / "run_spec.json").write_text(json.dumps(spec))
    entries = json.loads((run / "per_instance_stats.json").read_text())
    judged = [0.0, 0.5, 1.0, 1.0, 0.5]
    for i, entry in enumerate(entries):
        keep = [s for s in entry["stats"] if "match" not in s["name"]["name"]]
        name = {**entry["stats"][0]["name"], "name": metric}
        value = judged[i % len(judged)]
        keep.append({"name": name, "count": 1, "sum": value, "sum_squared": value ** 2,
                     "min": value, "max": value, "mean": value, "variance": 0.0,
                     "stddev": 0.0})
        entry["stats"] = keep
    (run / "per_instance_stats.json").write_text(json.dumps(entries))
    store = tmp_path / "store"
    result = CliRunner().invoke(main, ["ingest", "helm", str(run), "--store", str(store)])
    assert result.exit_code == 0, result.output
    table = Store(store).read_table()
    assert set(table["metric"]) == {metric} and set(table["threshold"]) == {0.5}
    assert table["correct"].tolist() == [int(s > 0.5) for s in table["score"]]
