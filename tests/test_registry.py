"""Registries: did-you-mean messages, lazy entry points, fakes, and our own entry points."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint

import pytest
from conftest import one_error

from lm_router_plugin import registry
from lm_router_plugin.errors import LMRouterError, UnknownNameError
from lm_router_plugin.registry import (
    PluginError,
    Registry,
    adapters,
    predictors,
    unknown_name_message,
)
from lm_router_plugin.router.predictors import CorrectnessPredictor, KNNPredictor


def test_unknown_name_message_exact():
    assert unknown_name_message("router", "knnn", ["knn", "task-score"]) == (
        "Unknown router 'knnn'. Did you mean: knn? Available: knn, task-score")
    assert unknown_name_message("adapter", "zzz", ["helm", "lm-eval"]) == (
        "Unknown adapter 'zzz'. Available: helm, lm-eval")
    assert unknown_name_message("model", "x", []) == "Unknown model 'x'. Available: none"


@pytest.mark.parametrize("name", [5, None, ["a", "b"]])
def test_a_name_that_is_not_a_string_is_an_unknown_name_error(name):
    """A YAML `name: 5` / `kind: null` / `name: [a, b]`: one message, no TypeError."""
    assert unknown_name_message("index", name, ["auto", "exact"]) == (
        f"The index name must be a string, got {name!r}. Available: auto, exact")
    with pytest.raises(UnknownNameError, match="predictor name must be a string"):
        predictors.get(name)


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
                                                                      "test.group"),
           EntryPoint("knn2", "lm_router_plugin.router.predictors:KNNPredictor", "test.group")]
    monkeypatch.setattr(registry, "entry_points", _fake_entry_points(eps))
    reg: Registry = Registry("predictor", "test.group")
    assert reg.names() == ["knn", "knn2"]  # listing works; the clash shows when asked for
    with pytest.raises(PluginError, match="predictor 'knn' is declared by several installed "
                                          "packages: .*pkg_a:KNN.*pkg_b:KNN"):
        reg.get("knn")
    assert reg.get("knn2") is KNNPredictor  # other names keep working
    # the same target declared twice (editable + regular install) is not a conflict
    same = [EntryPoint("knn", "pkg_a:KNN", "test.group")] * 2
    monkeypatch.setattr(registry, "entry_points", _fake_entry_points(same))
    assert Registry("predictor", "test.group").names() == ["knn"]


# -- crafted plugin packages on sys.path ------------------------------------------------------
def _install(root, dist: str, entry_points: str, modules: dict[str, str]) -> None:
    """A plugin "installed" in ``root``: its modules plus the dist-info declaring them."""
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    for name, code in modules.items():
        (root / f"{name}.py").write_text(code)


@pytest.fixture
def plugin_root(tmp_path, monkeypatch):
    """A folder on sys.path for crafted plugins; the global registries rediscover and are
    put back afterwards."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    for reg in (adapters, predictors):
        monkeypatch.setattr(reg, "_discovered", False)
        monkeypatch.setattr(reg, "_targets", dict(reg._targets))
        monkeypatch.setattr(reg, "_clashes", {})
    yield root
    for name in ("lr_broken_plugin", "lr_plain_module"):
        sys.modules.pop(name, None)


def test_a_plugin_that_fails_to_import_is_one_error(plugin_root, cli, tmp_path):
    _install(plugin_root, "lr-broken", "[lm_router.adapters]\n"
             "exploding = lr_broken_plugin:Adapter\n"
             "missing = lr_no_such_module_xyz:Adapter\n"
             "noattr = lr_plain_module:Nope\n", {
                 "lr_broken_plugin": 'raise RuntimeError("plugin exploded on import")\n',
                 "lr_plain_module": "x = 1\n"})
    cases = {"exploding": "RuntimeError: plugin exploded on import",
             "missing": "ModuleNotFoundError: No module named 'lr_no_such_module_xyz'",
             "noattr": "AttributeError"}
    for name, cause in cases.items():
        with pytest.raises(PluginError) as info:
            adapters.get(name)
        message = str(info.value)
        assert message.startswith(f"cannot load the adapter '{name}' (entry point "
                                  f"[lm_router.adapters] {name} = ")
        assert "(from lr-broken 0.1)" in message and cause in message, message
        assert isinstance(info.value, LMRouterError) and isinstance(info.value, ImportError)
    assert adapters.get("table").name == "table"  # the built-ins still load
    # through the CLI: one error line, no traceback
    data = tmp_path / "r.csv"
    data.write_text("task,instance_id,model,input_text,score,metric\nqa,1,m,q,1,acc\n")
    message = one_error(cli("ingest", "exploding", data))
    assert "[lm_router.adapters] exploding = lr_broken_plugin:Adapter" in message
    assert "RuntimeError: plugin exploded on import" in message


def test_a_plugin_reusing_a_builtin_name_breaks_only_that_name(plugin_root, cli, tmp_path):
    _install(plugin_root, "lr-dup", "[lm_router.adapters]\ntable = lr_dup_plugin:Table\n", {})
    assert "table" in adapters.names() and "lm-eval" in adapters.names()
    with pytest.raises(PluginError) as info:
        adapters.get("table")
    message = str(info.value)
    assert message.startswith("adapter 'table' is declared by several installed packages")
    assert "[lm_router.adapters] table = lr_dup_plugin:Table (from lr-dup 0.1)" in message
    assert "lm_router_plugin" in message  # the built-in side of the clash
    assert adapters.get("lm-eval").name == "lm-eval"  # other names keep working
    data = tmp_path / "r.csv"
    data.write_text("task,instance_id,model,input_text,score,metric\nqa,1,m,q,1,acc\n")
    assert "lr_dup_plugin:Table" in one_error(cli("ingest", "table", data))


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
