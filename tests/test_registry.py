"""Registries: did-you-mean messages, lazy entry points, fakes, and our own entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from lm_router_plugin import registry
from lm_router_plugin.errors import UnknownNameError
from lm_router_plugin.registry import Registry, adapters, predictors, unknown_name_message
from lm_router_plugin.router.predictors import CorrectnessPredictor, KNNPredictor


def test_unknown_name_message_exact():
    assert unknown_name_message("router", "knnn", ["knn", "task-score"]) == (
        "Unknown router 'knnn'. Did you mean: knn? Available: knn, task-score")
    assert unknown_name_message("adapter", "zzz", ["helm", "lm-eval"]) == (
        "Unknown adapter 'zzz'. Available: helm, lm-eval")
    assert unknown_name_message("model", "x", []) == "Unknown model 'x'. Available: none"


def test_unknown_name_message_lists_at_most_20():
    names = [f"model-{i:02d}" for i in range(25)]
    message = unknown_name_message("model", "model-99", names)
    assert message.endswith("model-19 (and 5 more)")
    assert "model-20" not in message


class FakePredictor(CorrectnessPredictor):
    def fit(self, X, Y):
        return self

    def predict_proba(self, Q):
        return Q


@pytest.fixture
def fake():
    predictors.register("fake-test", FakePredictor)
    yield "fake-test"
    predictors.unregister("fake-test")


def test_register_get_unregister(fake):
    assert predictors.get(fake) is FakePredictor
    assert fake in predictors.names()
    predictors.register(fake, FakePredictor)  # the same target again is fine
    with pytest.raises(ValueError, match="predictor 'fake-test' already registered"):
        predictors.register(fake, KNNPredictor)
    predictors.unregister(fake)
    assert fake not in predictors.names()
    with pytest.raises(UnknownNameError):
        predictors.get(fake)


def test_registering_over_a_builtin_names_both():
    with pytest.raises(ValueError, match="predictor 'knn' already registered.*KNNPredictor"):
        predictors.register("knn", FakePredictor)


def test_unknown_name_error(fake):
    with pytest.raises(UnknownNameError) as info:
        predictors.get("fake-tset")
    message = str(info.value)
    assert message.startswith("Unknown predictor 'fake-tset'. Did you mean: fake-test")
    assert "Available: " in message and "knn" in message
    assert isinstance(info.value, KeyError)
    assert not message.startswith('"')  # no KeyError quoting


def _fake_entry_points(eps):
    def entry_points(group):
        return [ep for ep in eps if ep.group == group]
    return entry_points


def test_entry_points_load_lazily(monkeypatch):
    ep = EntryPoint("knn2", "lm_router_plugin.router.predictors:KNNPredictor", "test.group")
    broken = EntryPoint("broken", "no_such_module_xyz:Thing", "test.group")
    monkeypatch.setattr(registry, "entry_points", _fake_entry_points([ep, broken]))
    reg: Registry = Registry("predictor", "test.group")
    assert reg.names() == ["broken", "knn2"]  # discovered without importing anything
    assert reg.get("knn2") is KNNPredictor
    with pytest.raises(ImportError):
        reg.get("broken")


def test_conflicting_entry_points(monkeypatch):
    eps = [EntryPoint("knn", "pkg_a:KNN", "test.group"), EntryPoint("knn", "pkg_b:KNN",
                                                                      "test.group")]
    monkeypatch.setattr(registry, "entry_points", _fake_entry_points(eps))
    with pytest.raises(ValueError, match="registered twice: pkg_a:KNN and pkg_b:KNN"):
        Registry("predictor", "test.group").names()
    # the same target declared twice (editable + regular install) is not a conflict
    same = [EntryPoint("knn", "pkg_a:KNN", "test.group")] * 2
    monkeypatch.setattr(registry, "entry_points", _fake_entry_points(same))
    assert Registry("predictor", "test.group").names() == ["knn"]


# -- our own entry points ---------------------------------------------------------------------
def test_builtin_predictor_entry_point_resolves():
    assert "knn" in predictors.names()
    assert predictors.get("knn") is KNNPredictor


@pytest.mark.parametrize("name", ["lm-eval", "helm", "table"])
def test_builtin_adapter_entry_points(name):
    assert name in adapters.names()
    try:
        cls = adapters.get(name)
    except ImportError as exc:  # the adapter module is still being written
        pytest.skip(f"adapter '{name}' does not import yet: {exc}")
    from lm_router_plugin.adapters.base import Adapter

    assert issubclass(cls, Adapter)
    assert cls.name == name
