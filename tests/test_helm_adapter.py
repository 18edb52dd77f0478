"""HELM adapter: real run folders (tests/data/helm, made by make_helm_fixtures.sh with
helm-run, and ../shared/fixtures/helm_real when present) through the real CLI."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import one_error
from lm_router_plugin.adapters.helm import HELMAdapter, task_name

from lm_router_plugin.cli.commands import main
from lm_router_plugin.errors import InputError
from lm_router_plugin.registry import adapters
from lm_router_plugin.store.store import Store
from lm_router_plugin.store.thresholds import Thresholds

SUITE = Path(__file__).parent / "data" / "helm" / "fixture-suite"
REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "helm_real"
MCQA_B = "simple_mcqa:model=mock_model-b"
TRIALS = "simple_mcqa:num_train_trials=3,model=mock_model-b"
PERTURBED = "simple_mcqa,data_augmentation=lower:model=mock_model-b"

needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/fixtures/helm_real absent")


# -- helpers ---------------------------------------------------------------------------
def _ingest(store: Path, *paths: Path | str, extra: tuple[str, ...] = ()):
    return CliRunner().invoke(main, ["ingest", "helm", *map(str, paths), "--store", str(store),
                                     *extra])


def _info(store: Path) -> dict:
    result = CliRunner().invoke(main, ["info", "--store", str(store), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _table(store: Path) -> pd.DataFrame:
    return pd.read_parquet(Store(store).table_path)


def _load(path: Path):
    return json.loads(path.read_text())


def _stat_mean(run: Path, metric: str, split: str) -> float:
    """The aggregate ``mean`` of ``metric`` in stats.json (given split, no perturbation)."""
    for stat in _load(run / "stats.json"):
        name = stat["name"]
        if name["name"] == metric and name.get("split") == split and "perturbation" not in name:
            return stat["mean"]
    raise AssertionError(f"no {metric}/{split} in {run}/stats.json")


def _model(run: Path) -> str:
    return _load(run / "run_spec.json")["adapter_spec"]["model"]


def _task(run: Path) -> str:
    return task_name(_load(run / "run_spec.json")["name"])


def _copy_run(run: Path, dest_root: Path, name: str | None = None) -> Path:
    dest = dest_root / (name or run.name)
    shutil.copytree(run, dest)
    for f in dest.iterdir():
        f.chmod(0o644)
    return dest


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


# -- registration and names ------------------------------------------------------------
def test_entry_point_resolves():
    assert adapters.get("helm") is HELMAdapter


@pytest.mark.parametrize("run_name, task", [
    ("mmlu:subject=philosophy,method=multiple_choice_joint,model=openai_gpt2",
     "mmlu:subject=philosophy,method=multiple_choice_joint"),
    ("narrative_qa:model=openai_gpt2", "narrative_qa"),
    ("narrative_qa:model=openai_gpt2,data_augmentation=canonical",
     "narrative_qa:data_augmentation=canonical"),
    ("simple_mcqa,data_augmentation=lower:model=mock_model-b",
     "simple_mcqa,data_augmentation=lower"),
    ("bbq:subject=all,method=multiple_choice_joint,model=meta_llama-3-8b-chat,"
     "model_deployment=together_llama-3-8b-chat,max_train_instances=0",
     "bbq:subject=all,method=multiple_choice_joint,max_train_instances=0"),
    ("gsm:model=org_name_with_underscores", "gsm"),
])
def test_task_name(run_name, task):
    assert task_name(run_name) == task


# -- accuracy equals HELM's own aggregates ---------------------------------------------
def test_fixture_accuracies_equal_stats_json(store):
    result = _ingest(store, SUITE.parent)
    assert result.exit_code == 0, result.output
    info = _info(store)
    runs = [r for r in sorted(SUITE.iterdir()) if r.name != TRIALS]
    assert len(runs) == 7
    for run in runs:
        acc = info["accuracy"][_task(run)][_model(run)]
        assert acc == pytest.approx(_stat_mean(run, "exact_match", "test"), abs=1e-12), run.name
        assert info["counts"][_task(run)][_model(run)] == 5
    # the fixture models really differ per instance
    assert info["accuracy"]["simple_mcqa"] == {"mock/model-b": 0.8, "mock/model-c": 0.8,
                                               "simple/model1": 0.0}
    table = _table(store)
    assert set(table["source"]) == {"helm"}
    assert set(table["benchmark"]) == {"fixture-suite"}
    assert set(table["metric"]) == {"exact_match"}
    b = table[(table["task"] == "simple_mcqa") & (table["model"] == "mock/model-b")]
    c = table[(table["task"] == "simple_mcqa") & (table["model"] == "mock/model-c")]
    assert dict(zip(b["instance_id"], b["correct"], strict=True)) != \
        dict(zip(c["instance_id"], c["correct"], strict=True))


def _own_text(instance: dict) -> str:
    """The instance's input with its options (multiple_choice_joint), as the adapter stores it."""
    options = [f"{chr(65 + i)}. {ref['output']['text']}"
               for i, ref in enumerate(instance["references"])]
    return "\n".join([instance["input"]["text"], *options])


def test_input_text_is_the_instance_input(store):
    assert _ingest(store, SUITE / MCQA_B).exit_code == 0
    table = _table(store).set_index("instance_id")
    state = _load(SUITE / MCQA_B / "scenario_state.json")
    assert len(table) == len(state["request_states"]) == 5
    for rs in state["request_states"]:
        row = table.loc[rs["instance"]["id"]]
        assert row["input_text"] == _own_text(rs["instance"])
        # the prompt the model saw (instructions + in-context examples) is kept as its hash
        assert row["prompt_hash"] == hashlib.sha256(rs["request"]["prompt"].encode()).hexdigest()
        assert rs["request"]["prompt"].startswith("Answer the following questions")
    assert set(table["text_rule"]) == {"helm:input+options"}
    assert not table["input_text"].str.contains("Answer the following").any()


@needs_real
def test_real_five_shot_texts_are_the_instances_own(store):
    """The real 5-shot runs: texts pairwise distinct, none holds an in-context example."""
    assert _ingest(store, REAL).exit_code == 0
    table = _table(store)
    for task, group in table.groupby("task"):
        texts = list(group["input_text"])
        assert len(set(texts)) == len(texts), task
    n_with_examples = 0
    for run in REAL.iterdir():
        run_spec = _load(run / "run_spec.json")
        spec = run_spec["adapter_spec"]
        states = _load(run / "scenario_state.json")["request_states"]
        rows = table[(table["model"] == spec["model"])
                     & (table["task"] == task_name(run_spec["name"]))].set_index("instance_id")
        assert len(rows) >= 4
        for rs in states:
            if rs["instance"]["id"] not in rows.index:  # another split than the main one
                continue
            text = rows.loc[rs["instance"]["id"], "input_text"]
            prompt = rs["request"]["prompt"]
            assert text.startswith(rs["instance"]["input"]["text"])
            # the in-context part: everything before this instance's input in the prompt
            head = prompt[: prompt.rindex(rs["instance"]["input"]["text"])]
            examples = [part for part in head.split(spec["instance_prefix"] or "\n\n")
                        if len(part) > 40]
            n_with_examples += bool(examples)
            assert not any(part.strip() in text for part in examples), run.name
            if spec["instructions"].strip():
                assert spec["instructions"].strip() not in text
    assert n_with_examples >= 19  # mmlu and hellaswag prompts hold in-context examples


@needs_real
def test_real_runs_match_stats_json(store):
    result = _ingest(store, REAL)
    assert result.exit_code == 0, result.output
    info = _info(store)
    table = _table(store)
    eta = Thresholds.load().metrics["f1_score"]
    checked = 0
    for run in sorted(REAL.iterdir()):
        task, model = _task(run), _model(run)
        rows = table[(table["task"] == task) & (table["model"] == model)]
        splits = {rs["instance"]["split"]
                  for rs in _load(run / "scenario_state.json")["request_states"]}
        split = "test" if "test" in splits else "valid"  # hellaswag has valid only
        if run.name.startswith("narrative_qa"):
            # continuous metric: the raw scores average to HELM's mean, eta decides correct
            assert set(rows["metric"]) == {"f1_score"}
            assert rows["score"].mean() == pytest.approx(_stat_mean(run, "f1_score", split))
            assert (rows["threshold"] == eta).all()
            assert (rows["correct"] == (rows["score"] > eta).astype(int)).all()
            assert info["accuracy"][task][model] == pytest.approx(rows["correct"].mean())
        else:
            assert set(rows["metric"]) == {"exact_match"}
            assert info["accuracy"][task][model] == pytest.approx(
                _stat_mean(run, "exact_match", split), abs=1e-12)
            assert rows["threshold"].isna().all()
        ids = {rs["instance"]["id"] for rs in _load(run / "scenario_state.json")
               ["request_states"] if rs["instance"]["split"] == split}
        assert info["counts"][task][model] == len(ids) == len(rows)
        assert set(rows["instance_id"]) == ids
        checked += 1
    assert checked == 3
    assert set(table["benchmark"]) == {"helm_real"}
    # the folder names use '-' for ':'; the task comes from run_spec.json's name
    assert "mmlu:subject=philosophy,method=multiple_choice_joint" in info["tasks"]
    assert "openai/gpt2" in info["models"]


# -- folder naming and layout ----------------------------------------------------------
def test_colon_and_dash_folder_names_give_the_same_rows(tmp_path):
    colon = tmp_path / "colon" / "v1"
    dash = tmp_path / "dash" / "v1"
    colon.mkdir(parents=True)
    dash.mkdir(parents=True)
    _copy_run(SUITE / MCQA_B, colon)
    _copy_run(SUITE / MCQA_B, dash, MCQA_B.replace(":", "-"))
    stores = []
    for root in (colon, dash):
        st = tmp_path / f"store-{root.parent.name}"
        assert _ingest(st, root).exit_code == 0
        stores.append(_table(st).drop(columns="origin"))
    pd.testing.assert_frame_equal(stores[0], stores[1])
    assert set(stores[0]["task"]) == {"simple_mcqa"}


def test_benchmark_output_folder_skips_eval_cache_and_incomplete_runs(tmp_path, store, caplog):
    suite = tmp_path / "benchmark_output" / "runs" / "v1"
    suite.mkdir(parents=True)
    _copy_run(SUITE / MCQA_B, suite)
    (suite / "eval_cache").mkdir()
    (suite / "eval_cache" / "run_spec.json").write_text("not json")  # never read
    broken = _copy_run(SUITE / "simple_mcqa:model=mock_model-c", suite)
    (broken / "per_instance_stats.json").unlink()  # run still in progress
    (tmp_path / "benchmark_output" / "scenarios").mkdir()
    with caplog.at_level(logging.INFO, logger="lm_router_plugin"):
        runs = HELMAdapter().find_runs([tmp_path / "benchmark_output"])
    assert runs == [suite / MCQA_B]
    assert "incomplete" in caplog.text and "eval_cache" in caplog.text
    result = _ingest(store, tmp_path / "benchmark_output")
    assert result.exit_code == 0, result.output
    assert _info(store)["models"] == ["mock/model-b"]
    assert set(_table(store)["benchmark"]) == {"v1"}


def test_a_file_of_a_run_means_its_folder(store):
    assert _ingest(store, SUITE / MCQA_B / "run_spec.json").exit_code == 0
    assert _info(store)["n_rows"] == 5


# -- merging, perturbations, train trials ----------------------------------------------
def test_several_entries_per_instance_are_merged(tmp_path):
    run = _copy_run(SUITE / MCQA_B, tmp_path / "v1")
    entries = _load(run / "per_instance_stats.json")
    split = []
    for entry in entries:  # one entry per Metric class, as harm_bench writes them
        half = len(entry["stats"]) // 2
        split.append({**entry, "stats": entry["stats"][:half]})
        split.append({**entry, "stats": entry["stats"][half:]})
    assert all(not any(s["name"]["name"] == "exact_match" for s in e["stats"])
               for e in split[1::2]) or all(
        not any(s["name"]["name"] == "exact_match" for s in e["stats"]) for e in split[::2])
    (run / "per_instance_stats.json").write_text(json.dumps(split))
    merged = list(HELMAdapter().read([run]))
    original = list(HELMAdapter().read([SUITE / MCQA_B]))
    assert [(r.instance_id, r.score) for r in merged] == \
        [(r.instance_id, r.score) for r in original]
    assert len(merged) == 5


def test_perturbed_instances_are_ignored_by_default(store):
    run = SUITE / PERTURBED
    entries = _load(run / "per_instance_stats.json")
    assert sum("perturbation" in e for e in entries) == 5
    assert _ingest(store, run).exit_code == 0
    table = _table(store)
    assert len(table) == 5
    assert not table["instance_id"].str.contains("|", regex=False).any()
    assert table["correct"].mean() == pytest.approx(_stat_mean(run, "exact_match", "test"))
    # the text is the original (not lowercased) one
    assert all(text.startswith("Is ") for text in table["input_text"])


def test_include_perturbed_option():
    rows = list(HELMAdapter(include_perturbed=True).read([SUITE / PERTURBED]))
    assert len(rows) == 10
    perturbed = [r for r in rows if "|" in r.instance_id]
    assert len(perturbed) == 5
    assert all(r.instance_id.endswith("|lowercase:computed_on=perturbed") for r in perturbed)
    assert all(r.input_text.startswith("is ") for r in perturbed)
    want = {e["instance_id"]: s["mean"] for e in _load(SUITE / PERTURBED /
                                                       "per_instance_stats.json")
            if "perturbation" in e for s in e["stats"] if s["name"]["name"] == "exact_match"}
    assert {r.instance_id.split("|")[0]: r.score for r in perturbed} == want


def test_train_trials_are_averaged(store):
    run = SUITE / TRIALS
    per_trial: dict[str, list[float]] = {}
    for entry in _load(run / "per_instance_stats.json"):
        for s in entry["stats"]:
            if s["name"]["name"] == "exact_match":
                per_trial.setdefault(entry["instance_id"], []).append(s["mean"])
    assert {len(v) for v in per_trial.values()} == {3}
    assert _ingest(store, run).exit_code == 0
    table = _table(store).set_index("instance_id")
    for iid, values in per_trial.items():
        assert table.loc[iid, "score"] == pytest.approx(sum(values) / 3)
        assert table.loc[iid, "correct"] == int(sum(values) / 3 > 0.5)
    # HELM's aggregate is the mean over trials of the per-trial means
    assert table["score"].mean() == pytest.approx(_stat_mean(run, "exact_match", "test"))
    assert any(0 < s < 1 for s in table["score"])
    # the text does not depend on the trial (its in-context draw); the hash is trial 0's prompt
    first = [rs for rs in _load(run / "scenario_state.json")["request_states"]
             if rs["train_trial_index"] == 0]
    for rs in first:
        assert table.loc[rs["instance"]["id"], "input_text"] == _own_text(rs["instance"])
        assert table.loc[rs["instance"]["id"], "prompt_hash"] == hashlib.sha256(
            rs["request"]["prompt"].encode()).hexdigest()


def test_train_trials_first_option():
    run = SUITE / TRIALS
    first = {e["instance_id"]: s["mean"] for e in _load(run / "per_instance_stats.json")
             if e["train_trial_index"] == 0 for s in e["stats"]
             if s["name"]["name"] == "exact_match"}
    rows = list(HELMAdapter(train_trials="first").read([run]))
    assert {r.instance_id: r.score for r in rows} == first
    with pytest.raises(ValueError, match="train_trials"):
        HELMAdapter(train_trials="median")
    with pytest.raises(ValueError, match="unknown option"):
        HELMAdapter(perturbed=True)


# -- prompts for other adapter methods -------------------------------------------------
def _separate_run(tmp_path: Path) -> Path:
    """The mcqa run rewritten as multiple_choice_separate_original (one state per choice)."""
    run = _copy_run(SUITE / MCQA_B, tmp_path / "v1")
    spec = _load(run / "run_spec.json")
    spec["adapter_spec"]["method"] = "multiple_choice_separate_original"
    (run / "run_spec.json").write_text(json.dumps(spec))
    state = _load(run / "scenario_state.json")
    states = []
    for rs in state["request_states"]:
        question = f"Question: {rs['instance']['input']['text']}\nAnswer:"
        for i, ref in enumerate(rs["instance"]["references"]):
            states.append({**rs, "reference_index": i, "request_mode": "original",
                           "request": {**rs["request"],
                                       "prompt": f"{question} {ref['output']['text']}"}})
    state["request_states"] = states
    (run / "scenario_state.json").write_text(json.dumps(state))
    return run


def test_multiple_choice_separate_uses_the_bare_input(tmp_path):
    rows = list(HELMAdapter().read([_separate_run(tmp_path)]))
    assert len(rows) == 5
    for row in rows:  # the options are not part of the question here: one request each
        assert row.input_text.startswith("Is ") and row.input_text.endswith("even or odd?")
        assert row.text_rule == "helm:input"


def test_chat_messages_when_prompt_is_empty(tmp_path):
    run = _copy_run(SUITE / MCQA_B, tmp_path / "v1")
    state = _load(run / "scenario_state.json")
    for rs in state["request_states"]:
        rs["request"]["messages"] = [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": rs["request"]["prompt"]}]
        rs["request"]["prompt"] = ""
    (run / "scenario_state.json").write_text(json.dumps(state))
    rows = list(HELMAdapter().read([run]))
    assert all(r.input_text.startswith("Is ") for r in rows)
    messages = state["request_states"][0]["request"]["messages"]
    seen = "\n\n".join(m["content"] for m in messages)
    assert rows[0].prompt_hash == hashlib.sha256(seen.encode()).hexdigest() or any(
        r.prompt_hash == hashlib.sha256(seen.encode()).hexdigest() for r in rows)


def test_prompt_when_the_instance_has_no_input_text(tmp_path):
    run = _copy_run(SUITE / MCQA_B, tmp_path / "v1")
    state = _load(run / "scenario_state.json")
    for rs in state["request_states"]:
        rs["instance"]["input"] = {"multimedia_content": {}}
    (run / "scenario_state.json").write_text(json.dumps(state))
    rows = list(HELMAdapter().read([run]))
    assert {r.text_rule for r in rows} == {"helm:prompt"}
    assert all(r.input_text.startswith("Answer the following") for r in rows)


# -- metric choice ---------------------------------------------------------------------
def test_metric_from_table_fallback_and_override(tmp_path, store):
    # unknown scenario: the fallback order picks exact_match
    run = _copy_run(SUITE / MCQA_B, tmp_path / "v1", "my_scenario:model=mock_model-b")
    spec = _load(run / "run_spec.json")
    spec["name"] = "my_scenario:model=mock_model-b"
    (run / "run_spec.json").write_text(json.dumps(spec))
    assert {r.metric for r in HELMAdapter().read([run])} == {"exact_match"}
    # a per-task override in --thresholds
    user = tmp_path / "thresholds.yaml"
    user.write_text("tasks:\n  my_scenario: {metric: prefix_exact_match}\n")
    result = _ingest(store, run, extra=("--thresholds", str(user)))
    assert result.exit_code == 0, result.output
    assert set(_table(store)["metric"]) == {"prefix_exact_match"}


def test_override_naming_an_absent_metric_is_an_error(tmp_path, store):
    user = tmp_path / "thresholds.yaml"
    user.write_text("tasks:\n  simple_mcqa: {metric: f1_score}\n")
    message = one_error(_ingest(store, SUITE / MCQA_B, extra=("--thresholds", str(user))))
    assert "per_instance_stats.json" in message and "'f1_score'" in message
    assert "exact_match" in message  # lists what the run has


def test_run_without_its_metric_is_an_error(tmp_path, store):
    run = _copy_run(SUITE / MCQA_B, tmp_path / "v1")
    entries = _load(run / "per_instance_stats.json")
    for entry in entries:
        entry["stats"] = [s for s in entry["stats"] if "match" not in s["name"]["name"]]
    (run / "per_instance_stats.json").write_text(json.dumps(entries))
    message = one_error(_ingest(store, run))
    assert str(run / "per_instance_stats.json") in message
    assert "exact_match" in message and "--thresholds" in message


# -- bad input: one message, exit 1, store unchanged -----------------------------------
def _truncate(run: Path) -> str:
    path = run / "per_instance_stats.json"
    data = path.read_text()
    path.write_text(data[: len(data) // 2])
    return "line"


def _drop_instance_id(run: Path) -> str:
    path = run / "per_instance_stats.json"
    entries = _load(path)
    del entries[2]["instance_id"]
    path.write_text(json.dumps(entries))
    return "'instance_id'"


def _drop_model(run: Path) -> str:
    path = run / "run_spec.json"
    spec = _load(path)
    del spec["adapter_spec"]["model"]
    path.write_text(json.dumps(spec))
    return "'adapter_spec.model'"


def _non_numeric_mean(run: Path) -> str:
    path = run / "per_instance_stats.json"
    entries = _load(path)
    for s in entries[1]["stats"]:
        if s["name"]["name"] == "exact_match":
            s["mean"] = "one"
    path.write_text(json.dumps(entries))
    return "non-numeric mean 'one'"


def _request_states_missing(run: Path) -> str:
    path = run / "scenario_state.json"
    state = _load(path)
    del state["request_states"]
    path.write_text(json.dumps(state))
    return "'request_states'"


@pytest.mark.parametrize("break_run, filename", [
    (_truncate, "per_instance_stats.json"),
    (_drop_instance_id, "per_instance_stats.json"),
    (_drop_model, "run_spec.json"),
    (_non_numeric_mean, "per_instance_stats.json"),
    (_request_states_missing, "scenario_state.json"),
])
def test_bad_run_fails_cleanly_and_leaves_the_store(tmp_path, store, break_run, filename):
    assert _ingest(store, SUITE / "simple_mcqa:model=mock_model-c").exit_code == 0
    before = (Store(store).table_path).read_bytes()
    suite = tmp_path / "v1"
    _copy_run(SUITE / "simple_classification:model=mock_model-b", suite)
    run = _copy_run(SUITE / MCQA_B, suite)
    expected = break_run(run)
    message = one_error(_ingest(store, suite))
    assert str(run / filename) in message
    assert expected in message
    assert (Store(store).table_path).read_bytes() == before
    assert _info(store)["models"] == ["mock/model-c"]


def test_truncated_json_names_line_and_column(tmp_path):
    run = _copy_run(SUITE / MCQA_B, tmp_path / "v1")
    path = run / "per_instance_stats.json"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:40]))
    with pytest.raises(InputError, match=r"per_instance_stats\.json line \d+: not valid JSON "
                                         r"at column \d+") as err:
        list(HELMAdapter().read([run]))
    assert "re-run helm-run" in str(err.value)


@pytest.mark.parametrize("content", ["empty", "unrelated"])
def test_folder_without_runs_fails_cleanly(tmp_path, store, content):
    assert _ingest(store, SUITE / MCQA_B).exit_code == 0
    before = (Store(store).table_path).read_bytes()
    folder = tmp_path / "nothing"
    folder.mkdir()
    if content == "unrelated":
        (folder / "notes.txt").write_text("hello")
        (folder / "sub").mkdir()
        (folder / "sub" / "results.json").write_text("{}")
    message = one_error(_ingest(store, folder))
    assert str(folder) in message and "no HELM run folder found" in message
    assert "run_spec.json" in message  # says what a run folder holds
    assert (Store(store).table_path).read_bytes() == before


def test_same_run_in_two_suites_is_an_error(tmp_path, store):
    for suite in ("v1", "v2"):
        _copy_run(SUITE / MCQA_B, tmp_path / "out" / suite)
    message = one_error(_ingest(store, tmp_path / "out"))
    assert "v1" in message and "v2" in message and "simple_mcqa" in message


def test_reingest_adds_nothing(store):
    assert _ingest(store, SUITE).exit_code == 0
    result = _ingest(store, SUITE)
    assert result.exit_code == 0
    assert "0 added" in result.output
    assert _info(store)["n_rows"] == 40


def test_lower_is_better_metrics_flip_direction(tmp_path):
    run = _copy_run(SUITE / MCQA_B, tmp_path / "v1")
    entries = _load(run / "per_instance_stats.json")
    for entry in entries:
        for s in entry["stats"]:
            if s["name"]["name"] == "exact_match":
                s["name"]["name"] = "wer_score"
                s["mean"] = 0.2
    (run / "per_instance_stats.json").write_text(json.dumps(entries))
    thresholds = Thresholds.load()
    thresholds.tasks["simple_mcqa"] = {"metric": "wer_score"}
    rows = list(HELMAdapter(thresholds).read([run]))
    assert {r.metric for r in rows} == {"wer_score"}
    assert {r.higher_is_better for r in rows} == {False}
    rule = thresholds.rule("simple_mcqa", "wer_score", False)
    assert rule.apply(0.2) == (0.5, 1)
    assert not math.isnan(rows[0].score)


def test_cli_adapter_options(tmp_path):
    """`-o KEY=VALUE` reaches the adapter; an unknown option is a usage error (exit 2)."""
    from click.testing import CliRunner

    from lm_router_plugin.cli.commands import main

    suite = Path(__file__).resolve().parent / "data" / "helm" / "fixture-suite"
    runner = CliRunner()
    base = runner.invoke(main, ["ingest", "helm", str(suite), "--store", str(tmp_path / "a")])
    more = runner.invoke(main, ["ingest", "helm", str(suite), "-o", "include_perturbed=true",
                                "--store", str(tmp_path / "b")])
    assert base.exit_code == 0 and more.exit_code == 0
    n_rows = [int(r.stdout.split()[0]) for r in (base, more)]
    assert n_rows[1] > n_rows[0]  # the perturbed instances come in as rows of their own
    bad = runner.invoke(main, ["ingest", "helm", str(suite), "-o", "bogus=1",
                               "--store", str(tmp_path / "c")])
    assert bad.exit_code == 2 and "unknown option(s) ['bogus']" in bad.output
    assert not (Store(tmp_path / "c").table_path).exists()


# -- malformed values and empty reads: one error saying what and where ---------------------
def _set_request_null(state: dict) -> str:
    state["request_states"][1]["request"] = None
    return "request_states[1].request must be a JSON object, got null"


def _set_input_plain(state: dict) -> str:
    state["request_states"][1]["instance"]["input"] = "plain"
    return "request_states[1].instance.input must be a JSON object, got a JSON string 'plain'"


def _set_state_string(state: dict) -> str:
    state["request_states"][2] = "oops"
    return "request_states[2] must be a JSON object, got a JSON string 'oops'"


@pytest.mark.parametrize("damage", [_set_request_null, _set_input_plain, _set_state_string])
def test_wrong_json_type_in_scenario_state_names_the_key(tmp_path, store, damage):
    run = _copy_run(SUITE / MCQA_B, tmp_path / "v1")
    path = run / "scenario_state.json"
    state = _load(path)
    expected = damage(state)
    path.write_text(json.dumps(state))
    assert f"{path}: {expected}" in one_error(_ingest(store, run))
    assert not Store(store).has_table()


@pytest.mark.parametrize("value, expected", [
    (True, True), ("false", False), ("No", False), ("YES", True), (1, True), ("0", False)])
def test_include_perturbed_reads_booleans(value, expected):
    assert HELMAdapter(include_perturbed=value).include_perturbed is expected


def test_include_perturbed_typo_is_a_usage_error(tmp_path, store):
    result = _ingest(store, SUITE / MCQA_B, extra=("-o", "include_perturbed=flase"))
    assert result.exit_code == 2, result.output
    assert "include_perturbed must be true or false, got 'flase'" in result.output
    assert not Store(store).has_table()


def test_split_typo_names_the_splits_present(store):
    message = one_error(_ingest(store, SUITE / MCQA_B, extra=("-o", "split=tset")))
    assert "no instances in split(s) tset (splits present: test)" in message
    assert "-o split=NAME" in message and "right adapter" not in message


def test_empty_per_instance_stats_says_so(tmp_path, store):
    run = _copy_run(SUITE / MCQA_B, tmp_path / "v1")
    (run / "per_instance_stats.json").write_text("[]")
    message = one_error(_ingest(store, run))
    assert f"{run / 'per_instance_stats.json'} has no entries (an empty list)" in message
    assert "right adapter" not in message
    # beside a run with rows: skipped with a warning
    other = _copy_run(SUITE / "simple_mcqa:model=mock_model-c", tmp_path / "v1")
    result = _ingest(store, run.parent)
    assert result.exit_code == 0, result.output
    assert "no entries (an empty list); run skipped" in result.output
    assert _info(store)["models"] == [_model(other)]
