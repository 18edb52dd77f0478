"""A predictor installed from outside the package (tests/plugins: a module plus the
dist-info that declares its ``lm_router.predictors`` entry point) runs through fit,
recommend, route and the whole strict evaluation with its own parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_evaluation import _embeddings, assert_matches_refit, make_data

from lm_router_plugin.registry import predictors
from lm_router_plugin.router.pool import build_pool
from lm_router_plugin.router.router import Router

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def plugin_on_path(monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setattr(predictors, "_discovered", False)  # rediscover entry points
    yield
    predictors.unregister("logistic")


def test_entry_point_predictor_gets_its_parameters(plugin_on_path):
    router = Router(predictor="logistic", predictor_params={"C": 0.25, "max_iter": 50})
    router.validate_params()
    predictor = router.make_predictor()
    assert type(predictor).__module__ == "lr_logistic_plugin"
    assert predictor.get_params() == {"C": 0.25, "max_iter": 50}
    clone = predictor.clone()
    assert clone is not predictor and clone.get_params() == predictor.get_params()
    with pytest.raises(ValueError, match="logistic has no parameter"):
        Router(predictor="logistic", predictor_params={"c": 1}).validate_params()


def test_entry_point_predictor_runs_the_strict_evaluation(plugin_on_path):
    from lm_router_plugin.evaluation.protocol import evaluate

    table, vectors = make_data(seed=2, n_tasks=5, n_per_task=30)
    X = _embeddings(build_pool(table), vectors)
    params = {"predictor": "logistic", "predictor_params": {"C": 0.5}}
    result = evaluate(table, embeddings=X, router=Router(**params), alphas=[0, 0.2],
                      label_counts=[5], repeats=2, n_bootstrap=50)
    assert result.settings["predictor"] == "logistic"
    assert result.settings["predictor_params"] == {"C": 0.5}
    assert {"s1@0.2", "s3@0.2", "few_shot@0.2", "s1@5labels"} <= set(result.rows)
    assert_matches_refit(table, X, result, **params)
    # its parameter matters: a different C gives different scores
    other = evaluate(table, embeddings=X, n_bootstrap=0,
                     router=Router(predictor="logistic", predictor_params={"C": 1e-4}))
    assert other.per_task[0]["scores"] != result.per_task[0]["scores"]


@pytest.mark.slow
def test_entry_point_predictor_through_the_cli(tmp_path):
    """A separate process with the plugin on PYTHONPATH: ingest, recommend, route, evaluate."""
    pytest.importorskip("sklearn")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get(
        "PYTHONPATH", "")]), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    store = tmp_path / "store"

    def run(*args):
        out = subprocess.run([sys.executable, "-m", "lm_router_plugin.cli", *map(str, args),
                              "--store", str(store)] if args[0] != "ingest" else
                             [sys.executable, "-m", "lm_router_plugin.cli", *map(str, args)],
                             capture_output=True, text=True, env=env, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return out.stdout

    run("ingest", "lm-eval", root / "examples" / "runs", "--store", store)
    (tmp_path / "c.yaml").write_text("predictor: {params: {C: 2}}\n")
    plugin = ["--predictor", "logistic", "--config", tmp_path / "c.yaml"]
    rec = json.loads(run("recommend", "--prompts", root / "examples" / "prompts.txt", *plugin,
                         "--json"))
    assert rec["choice"] and len(rec["models"]) == 4
    routes = run("route", "--prompts", root / "examples" / "prompts.txt", *plugin)
    assert len(routes.splitlines()) == len((root / "examples" / "prompts.txt").read_text()
                                           .splitlines())
    result = json.loads(run("evaluate", *plugin, "--alpha", "0,0.2", "--repeats", "2", "--json"))
    assert result["settings"]["predictor"] == "logistic"
    assert result["settings"]["predictor_params"] == {"C": 2}
    assert "s3@0.2" in result["rows"]
    assert np.isfinite(result["rows"]["s3"]["acc"])
