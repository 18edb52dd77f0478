"""What a plugin that breaks its contract does to recommend, evaluate and ingest: a decider
returning a choice outside the candidates or raising, a predictor returning g of another
shape or outside [0, 1], an adapter yielding malformed rows, a decider that fails to load or
takes a name of evaluate's own rows. Each is one error naming the plugin (or, in evaluate,
a warning and the plugin's row left out), never a silently wrong table. Also the option
checks of evaluate (--tasks-by / --tasks-file, --alpha) and valid JSON (no bare NaN).
Fakes registered in the registries (as a plugin's entry point would), the real static
embedder."""

from __future__ import annotations

import json
import logging
import re
from importlib.metadata import EntryPoint

import numpy as np
import pandas as pd
import pytest
from test_api_arguments import _store

from lm_router_plugin import api
from lm_router_plugin.adapters.base import Adapter, Row
from lm_router_plugin.errors import InvalidParameterError, PluginOutputError
from lm_router_plugin.evaluation.protocol import regroup_tasks
from lm_router_plugin.registry import adapters, deciders, predictors
from lm_router_plugin.router.deciders import Decider, Decision
from lm_router_plugin.router.predictors import CorrectnessPredictor

STATIC = {"embedder": {"name": "static"}}


class BadDecider(Decider):
    """Chooses per ``mode``: a model not allowed, an index out of range, or raises."""

    name = ""  # as a careless plugin: recommend reports the name it was asked by
    mode = "notallowed"

    def decide(self, view):
        bma = view.bma
        if self.mode == "raise":
            raise RuntimeError("plugin bug")
        choice = {"notallowed": int(np.flatnonzero(~view.allowed)[0]) if (~view.allowed).any()
                  else 0, "oob": len(view.models), "neg": -1}[self.mode]
        return Decision(choice=choice, best_by_score=choice, bma=bma, fallback=False,
                        p_beats_bma=0.5, scores=np.zeros(len(view.models)))


class BadPredictor(CorrectnessPredictor):
    """Each model's mean reference accuracy for every input, damaged per ``mode``."""

    mode = "range"

    def fit(self, X, Y):
        self.mean_ = np.nanmean(Y, axis=0)
        return self

    def predict_proba(self, Q):
        g = np.tile(self.mean_, (len(Q), 1))
        return {"range": g * 3 - 1, "shape": g[:, :-1], "allnan": np.full_like(g, np.nan)
                }[self.mode]


class BadAdapter(Adapter):
    """Rows from nothing, damaged per ``mode``."""

    name = "bad-adapter"
    mode = "dict"

    def read(self, paths):
        for i in range(3):
            row = Row("plugin", "", "t", str(i), f"text {i}", "m", "acc", 1.0, None, "x")
            if self.mode == "dict":
                yield row._asdict()
            elif self.mode == "none_text":
                yield row._replace(input_text=None)
            elif self.mode == "nan_score":
                yield row._replace(score=float("nan"))
            else:
                yield row


@pytest.fixture
def registered():
    """Register fakes; remove them afterwards (the registries are process-wide)."""
    names: list[tuple[object, str]] = []

    def add(registry, name, target):
        registry.register(name, target)
        names.append((registry, name))

    yield add
    for registry, name in names:
        registry.unregister(name)


def test_a_decider_choosing_outside_the_candidates_is_one_error(cli, tmp_path, registered,
                                                                monkeypatch):
    store = _store(cli, tmp_path)
    registered(deciders, "bad", BadDecider)
    for mode, message in [("notallowed", "a model not allowed"), ("oob", "outside 0..2"),
                          ("neg", "outside 0..2"), ("raise", "failed: RuntimeError: plugin bug")]:
        monkeypatch.setattr(BadDecider, "mode", mode)
        with pytest.raises(PluginOutputError, match=f"decider 'bad' .*{message}"):
            api.recommend(store, prompts=["arith question"], score="bad",
                          candidates=["org/big-70b", "org/math-8b"], settings=STATIC)
        with pytest.raises(PluginOutputError, match="decider 'bad'"):
            api.evaluate(store, candidates=["org/big-70b", "org/math-8b"], settings=STATIC)


def test_a_decider_is_reported_under_the_name_it_was_asked_by(cli, tmp_path, registered):
    store = _store(cli, tmp_path)

    class Plain(Decider):  # sets no name
        def decide(self, view):
            return Decision(choice=view.bma, best_by_score=view.bma, bma=view.bma,
                            fallback=False, p_beats_bma=0.5,
                            scores=np.asarray(view.cal.mean_accuracy, float))

    registered(deciders, "plain", Plain)
    rec = api.recommend(store, prompts=["geo question"], score="plain", settings=STATIC)
    assert rec.score == rec.decided_by == "plain"


def test_a_predictor_breaking_its_contract_is_one_error(cli, tmp_path, registered,
                                                        monkeypatch):
    store = _store(cli, tmp_path)
    registered(predictors, "badpred", BadPredictor)
    settings = {**STATIC, "predictor": {"name": "badpred"}}
    for mode, message in [("range", "outside \\[0, 1\\]"), ("shape", "of shape"),
                          ("allnan", "no prediction at all")]:
        monkeypatch.setattr(BadPredictor, "mode", mode)
        with pytest.raises(PluginOutputError, match=f"predictor .*{message}"):
            api.recommend(store, prompts=["arith question", "units question"],
                          settings=settings)


def test_a_broken_or_misnamed_decider_plugin_leaves_evaluate_running(cli, tmp_path, registered,
                                                                     caplog, monkeypatch):
    store = _store(cli, tmp_path)
    broken = EntryPoint(name="broken", value="no_such_module_xyz:Decider",
                        group="lm_router.deciders")
    registered(deciders, "broken", broken)

    class Always(Decider):
        def decide(self, view):
            return Decision(choice=view.bma, best_by_score=view.bma, bma=view.bma,
                            fallback=False, p_beats_bma=0.5, scores=np.zeros(len(view.models)))

    registered(deciders, "bma", Always)
    registered(deciders, "few_shot", Always)
    # the CLI (the ingest above) stops the package's logger propagating to the root
    monkeypatch.setattr(logging.getLogger("lm_router_plugin"), "propagate", True)
    with caplog.at_level("WARNING", logger="lm_router_plugin"):
        result = api.evaluate(store, settings=STATIC, label_counts=[3], repeats=1)
    left_out = result.settings["deciders_left_out"]
    assert set(left_out) == {"broken", "bma", "few_shot"}
    assert "cannot load the decider 'broken'" in left_out["broken"]
    assert "one of evaluate's own rows" in left_out["bma"]
    assert {"s1", "s3", "stack"} <= set(result.settings["deciders"])
    assert "decider broken left out of the evaluation" in caplog.text
    assert "bma" not in result.settings["deciders"]
    # the rows are evaluate's own baselines, as without the plugins
    deciders.unregister("bma")
    deciders.unregister("few_shot")
    plain = api.evaluate(store, settings=STATIC, label_counts=[3], repeats=1)
    for row in ("bma", "few_shot@3labels", "oracle"):
        assert result.rows[row]["acc"] == plain.rows[row]["acc"]


@pytest.mark.parametrize("mode, message", [
    ("dict", "row 1 .*a dict, not an adapters.base.Row"),
    ("none_text", "input_text = None"),
    ("nan_score", "score = nan with correct None"),
])
def test_an_adapter_yielding_malformed_rows_is_one_error(cli, tmp_path, registered,
                                                         monkeypatch, mode, message):
    registered(adapters, "bad-adapter", BadAdapter)
    monkeypatch.setattr(BadAdapter, "mode", mode)
    (tmp_path / "in.txt").write_text("x")
    result = cli("ingest", "bad-adapter", tmp_path / "in.txt")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "adapter 'bad-adapter'" in result.output
    assert re.search(message, result.output), result.output
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").glob("*.parquet"))


def test_regrouping_tasks_keeps_instances_apart_and_checks_the_side_table(tmp_path):
    table = pd.DataFrame({"task": ["a", "a", "b", "b"], "instance_id": ["0", "1", "0", "1"],
                          "model": "m", "benchmark": "bench", "correct": [1, 0, 0, 1]})
    grouped = regroup_tasks(table, "benchmark")  # lm-eval doc ids repeat across tasks
    assert list(grouped.task) == ["bench"] * 4
    assert list(grouped.instance_id) == ["a/0", "a/1", "b/0", "b/1"]
    assert not grouped.duplicated(["task", "instance_id", "model"]).any()
    side = pd.DataFrame({"task": ["a", "a", "b", "b"], "instance_id": ["0", "1", "0", "1"],
                         "group": ["x", "y", "x", "y"]})
    assert list(regroup_tasks(table, "group", side).task) == ["x", "y", "x", "y"]
    # a column the store also has: the side table's wins (was a KeyError from the merge)
    side_bench = side.rename(columns={"group": "benchmark"})
    assert list(regroup_tasks(table, "benchmark", side_bench).task) == ["x", "y", "x", "y"]
    with pytest.raises(Exception, match="no 'instance_id' column"):
        regroup_tasks(table, "group", side.drop(columns="instance_id"), "side.csv")
    conflict = pd.concat([side, side.iloc[[0]].assign(group="z")])
    with pytest.raises(Exception, match="has several values of group"):
        regroup_tasks(table, "group", conflict, "side.csv")
    with pytest.raises(Exception, match="an empty group"):
        regroup_tasks(table, "group", side.assign(group=["x", "", "x", "y"]), "side.csv")
    with pytest.raises(InvalidParameterError, match="--tasks-file: .*add --tasks-by"):
        regroup_tasks(table, "task", side)


def test_evaluate_alpha_nan_is_refused_and_repeats_run_once(cli, tmp_path):
    store = _store(cli, tmp_path)
    with pytest.raises(InvalidParameterError, match="alpha values must be in"):
        api.evaluate(store, alphas=[float("nan")], settings=STATIC)
    result = api.evaluate(store, alphas=[0.1, 0.1], label_counts=[3, 3], repeats=1,
                          settings=STATIC)
    assert [(e["alpha"], e.get("labels")) for e in result.alpha_sweep].count((0.1, None)) == 1
    assert [e.get("labels") for e in result.alpha_sweep].count(3) == 1


def test_json_output_has_no_bare_nan(cli, tmp_path):
    store = _store(cli, tmp_path)
    config = tmp_path / "static.yaml"
    config.write_text("embedder: {name: static}\n")
    result = cli("evaluate", "--config", config, "--candidates", "org/big-70b", "--json",
                 store_dir=store)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["rows"]["stack"]["pearson"] is None  # one candidate: no correlation
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))
