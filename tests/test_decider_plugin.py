"""A decider installed from outside the package (tests/plugins: the module lr_margin_decider
plus the dist-info that declares its ``lm_router.deciders`` entry point) runs through
``recommend --score``, the strict evaluation (a row of its own, with and without labels)
and the plots, with no edit of lm_router_plugin."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_evaluation import _embeddings, make_data

from lm_router_plugin.registry import deciders
from lm_router_plugin.router.pool import build_pool

PLUGINS = Path(__file__).parent / "plugins"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def plugin_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setattr(deciders, "_discovered", False)  # rediscover entry points
    yield
    deciders.unregister("margin")


@pytest.fixture
def margin_decider(plugin_on_path):
    cls = deciders.get("margin")
    assert cls.__module__ == "lr_margin_decider" and cls.__name__ == "MarginDecider"
    return cls


@pytest.fixture(scope="module")
def example_store(tmp_path_factory) -> Path:
    from lm_router_plugin.store.ingest import ingest
    from lm_router_plugin.store.store import Store

    store = tmp_path_factory.mktemp("example") / "store"
    ingest("lm-eval", [REPO / "examples" / "runs"], Store(store),
           models_file=REPO / "examples" / "models.yaml")
    return store


def margin_rule(s1: dict[str, float], bma: str, margin: float) -> str:
    """The plugin's rule, written again: the highest S1 if it beats BMA's S1 by > margin."""
    best = max(s1, key=s1.get)
    return best if best == bma or s1[best] - s1[bma] > margin else bma


def test_the_entry_point_registers_the_decider(margin_decider):
    from lm_router_plugin.router.deciders import Decider

    assert issubclass(margin_decider, Decider)
    assert "margin" in deciders.names() and {"s1", "s2", "s3", "stack"} <= set(deciders.names())


@pytest.mark.slow
def test_recommend_with_the_plugin_decider(cli, margin_decider, example_store, monkeypatch):
    base = ["recommend", "--task", "toy_percent", "--include-path", REPO / "task_configs",
            "--store", example_store, "--score", "margin", "--json"]
    picks = {}
    for margin in (margin_decider.margin, -1.0, 2.0):  # its own, always S1's, never S1's
        monkeypatch.setattr(margin_decider, "margin", margin)
        result = cli(*base)
        assert result.exit_code == 0, result.output
        rec = json.loads(result.stdout)
        assert rec["score"] == rec["decided_by"] == "margin"
        s1 = {m["model"]: m["s1"] for m in rec["models"]}
        assert len(s1) == 4
        assert [m["score"] for m in rec["models"]] == [m["s1"] for m in rec["models"]]
        assert rec["models"][0]["model"] == rec["choice"]
        assert rec["choice"] == margin_rule(s1, rec["bma"], margin)
        assert rec["fallback"] == (rec["choice"] != max(s1, key=s1.get))
        assert rec["reason"] and rec["expected_gain_by"] == "posterior"
        picks[margin] = rec["choice"]
    assert picks[2.0] == rec["bma"] and picks[-1.0] == max(s1, key=s1.get)
    assert picks[2.0] != picks[-1.0]  # the example's top S1 is not BMA: both branches ran
    # the human table says what decided
    result = cli(*base[:-1])
    assert result.exit_code == 0, result.output
    assert "(the choice first, then by MARGIN)" in result.stdout


def test_an_unknown_score_is_a_usage_error_with_did_you_mean(cli, plugin_on_path, tmp_path):
    result = cli("recommend", "--prompts", REPO / "examples" / "prompts.txt", "--score",
                 "margn", "--store", tmp_path / "none")
    assert result.exit_code == 2, result.output
    assert "Unknown decider 'margn'" in result.output and "Did you mean: margin?" in result.output
    assert "Traceback" not in result.output


@pytest.fixture
def evaluated(margin_decider):
    from lm_router_plugin.evaluation.protocol import evaluate

    table, vectors = make_data(seed=2, n_tasks=6, n_per_task=30)
    X = _embeddings(build_pool(table), vectors)
    return evaluate(table, embeddings=X, alphas=[0, 0.2], label_counts=[5], repeats=2,
                    n_bootstrap=50)


def test_the_evaluation_scores_the_plugin_decider(evaluated, margin_decider):
    result = evaluated
    assert {"margin", "margin@0.2", "margin@5labels", "stack", "stack@5labels", "s3",
            "few_shot@5labels"} <= set(result.rows)
    assert "margin" in result.settings["deciders"] and result.settings["default"] == "stack"
    assert np.isfinite(result.rows["margin"]["acc"])
    assert np.isfinite(result.rows["margin@5labels"]["acc"])
    for task in result.per_task:  # zero labels: the plugin's rule on the held-out scores
        s1 = {m: v["s1"] for m, v in task["scores"].items() if np.isfinite(v["acc"])}
        assert task["margin"]["model"] == margin_rule(s1, task["bma"]["model"],
                                                      margin_decider.margin), task["task"]
        assert task["margin"]["fallback"] == (task["margin"]["model"] != max(s1, key=s1.get))
        draws = task.get("label_draws", [])
        assert draws and all("margin" in d["choice"] for d in draws)
    from lm_router_plugin.cli.display import print_evaluation

    print_evaluation(result)  # prints the plugin's rows beside the built-in ones


def test_the_plots_show_the_plugin_decider(evaluated, margin_decider, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    from lm_router_plugin.evaluation.plots import write_plots

    labels = []
    errorbar = Axes.errorbar

    def recording(self, *args, **kwargs):
        labels.append(kwargs.get("label"))
        return errorbar(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "errorbar", recording)
    written = write_plots(evaluated, tmp_path / "figs")
    assert [p.name for p in written] == ["accuracy_vs_alpha.png", "pearson_vs_u.png",
                                         "per_task_accuracy.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    assert margin_decider.title in labels and "stacked switch (default)" in labels


@pytest.mark.slow
def test_lm_router_evaluate_with_the_plugin(cli, plugin_on_path, example_store, tmp_path):
    result = cli("evaluate", "--store", example_store, "--labels", "5", "--repeats", "1",
                 "--plot", tmp_path / "figs", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {"margin", "margin@5labels"} <= set(out["rows"])
    assert "margin" in out["settings"]["deciders"] and out["settings"]["default"] == "stack"
    assert (tmp_path / "figs" / "accuracy_vs_alpha.png").exists()
    human = cli("evaluate", "--store", example_store, "--repeats", "1")
    assert human.exit_code == 0, human.output
    rows = [line.split()[0] for line in human.stdout.splitlines()[3:] if line.strip()]
    assert "margin" in rows and any(line.startswith("stack *")
                                    for line in human.stdout.splitlines())
