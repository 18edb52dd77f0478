"""The lm-eval adapter against sample logs written by lm-eval itself (tests/conftest.py) and
against real files of other lm-eval versions (../shared/fixtures, skipped when absent)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import (
    DUMMY_MODELS,
    FIXTURES,
    TASK_CONFIGS,
    LMEvalRuns,
    file_bytes,
    offline_env,
    one_error,
    read_jsonl,
    to_json_array_run,
    to_legacy_array_run,
    write_jsonl,
)
from lm_router_plugin.adapters.lmeval import (
    LMEvalAdapter,
    get_file_task_name,
    model_from_model_args,
)

from lm_router_plugin.errors import InputError
from lm_router_plugin.registry import adapters
from lm_router_plugin.store.store import Store

pytestmark = pytest.mark.slow  # the session fixture runs lm-eval (about 20 s)

TASKS = ["toy_arith", "toy_capitals", "toy_cooking", "toy_history", "toy_science", "toy_units"]
# metric and filter the adapter picks by default, as named in results[task]
DEFAULT_KEY = {"toy_arith": "acc,none", "toy_capitals": "exact_match,none",
               "toy_cooking": "token_f1,none", "toy_history": "acc,none",
               "toy_science": "acc,none", "toy_units": "exact_match,strict"}
needs_shared = pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared/fixtures absent")


def _info(cli, store: Path | None = None) -> dict:
    result = cli("info", "--json", store_dir=store)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _table(cli) -> pd.DataFrame:
    return pd.read_parquet(Store(cli.store).table_path)


def _copy_run(runs: LMEvalRuns, model: str, dest: Path) -> Path:
    folder = dest / runs.model_dir(model).name
    shutil.copytree(runs.model_dir(model), folder)
    return folder


# -- the real thing: lm-eval output in, the same accuracies out --------------------------
def test_adapter_is_registered() -> None:
    assert adapters.get("lm-eval") is LMEvalAdapter


def test_runs_took_reasonable_time(lmeval_runs: LMEvalRuns) -> None:
    assert set(lmeval_runs.results) == {*DUMMY_MODELS, "toy/math-whiz-7b", "toy/geo-buff-7b",
                                        "toy/generalist-70b", "toy/tiny-1b"}
    assert lmeval_runs.seconds < 300, f"lm-eval fixture runs took {lmeval_runs.seconds:.0f} s"


def test_ingest_accuracy_equals_lm_eval_aggregates(cli, lmeval_runs: LMEvalRuns) -> None:
    result = cli("ingest", "lm-eval", lmeval_runs.root)
    assert result.exit_code == 0, result.output
    info = _info(cli)
    assert sorted(info["models"]) == sorted(lmeval_runs.results)
    assert info["tasks"] == TASKS
    table = _table(cli)
    checked = 0
    for model, results in lmeval_runs.results.items():
        for task in TASKS:
            aggregate = results["results"][task][DEFAULT_KEY[task]]
            assert info["counts"][task][model] == results["n-samples"][task]["effective"]
            if task == "toy_cooking":  # continuous: lm-eval reports the mean token F1
                rows = table[(table.task == task) & (table.model == model)]
                assert rows.score.mean() == pytest.approx(aggregate, abs=1e-12)
                samples = read_jsonl(lmeval_runs.samples_file(model, task))
                expected = sum(s["token_f1"] > 0.5 for s in samples) / len(samples)
                assert info["accuracy"][task][model] == pytest.approx(expected)
                assert set(rows.threshold) == {0.5}
            else:
                assert info["accuracy"][task][model] == pytest.approx(aggregate, abs=1e-12), \
                    (model, task)
            checked += 1
    assert checked == 6 * 6
    # the replay profiles differ by topic, so routing has something to learn
    acc = info["accuracy"]
    assert acc["toy_arith"]["toy/math-whiz-7b"] > acc["toy_arith"]["toy/geo-buff-7b"]
    assert acc["toy_capitals"]["toy/geo-buff-7b"] > acc["toy_capitals"]["toy/math-whiz-7b"]


def test_rows_carry_prompt_metric_direction_and_group(cli, lmeval_runs: LMEvalRuns) -> None:
    assert cli("ingest", "lm-eval", lmeval_runs.root).exit_code == 0
    table = _table(cli)
    line = read_jsonl(lmeval_runs.samples_file("org/Fake-A", "toy_arith"))[3]
    row = table[(table.task == "toy_arith") & (table.model == "org/Fake-A")
                & (table.instance_id == "3")].iloc[0]
    assert row.input_text == line["arguments"]["gen_args_0"]["arg_0"]
    assert row.score == line["acc"] and row.metric == "acc" and row.source == "lm-eval"
    assert row.origin == str(lmeval_runs.samples_file("org/Fake-A", "toy_arith"))
    # Fake-B ran the group toy_quiz = [toy_science, toy_history]: its rows name it
    fake_b = table[table.model == "org/Fake-B"].groupby("task").benchmark.first().to_dict()
    assert fake_b["toy_science"] == fake_b["toy_history"] == "toy_quiz"
    assert fake_b["toy_arith"] == ""
    assert set(table[table.model == "org/Fake-A"].benchmark) == {""}
    models = json.loads((Store(cli.store).models_path).read_text())
    assert models["toy/generalist-70b"]["params"] == 70_000_000_000
    assert models["org/Fake-A"]["params"] is None


def test_reingest_adds_nothing(cli, lmeval_runs: LMEvalRuns) -> None:
    assert cli("ingest", "lm-eval", lmeval_runs.root).exit_code == 0
    before = file_bytes(Store(cli.store).table_path)
    result = cli("ingest", "lm-eval", lmeval_runs.root)
    assert result.exit_code == 0, result.output
    assert " 0 added" in result.stdout and "0 replaced" in result.stdout
    assert file_bytes(Store(cli.store).table_path) == before


def test_thresholds_choose_filter_and_metric(cli, lmeval_runs: LMEvalRuns, tmp_path: Path) -> None:
    config = tmp_path / "thresholds.yaml"
    config.write_text("tasks:\n  toy_units: {filter: first-number}\n"
                      "  toy_arith: {metric: acc_norm}\n")
    model = "toy/generalist-70b"
    result = cli("ingest", "lm-eval", lmeval_runs.model_dir(model), "--thresholds", config)
    assert result.exit_code == 0, result.output
    info = _info(cli)
    results = lmeval_runs.results[model]["results"]
    assert info["accuracy"]["toy_units"][model] == pytest.approx(
        results["toy_units"]["exact_match,first-number"])
    assert info["accuracy"]["toy_arith"][model] == pytest.approx(
        results["toy_arith"]["acc_norm,none"])
    assert set(_table(cli).query("task == 'toy_arith'").metric) == {"acc_norm"}


def test_other_filters_are_logged_once(cli, lmeval_runs: LMEvalRuns) -> None:
    result = cli("ingest", "lm-eval", lmeval_runs.root)
    assert result.exit_code == 0
    assert result.stderr.count("skipped the lines of filter(s) 'first-number'") == 1


def test_single_files(cli, lmeval_runs: LMEvalRuns) -> None:
    samples = lmeval_runs.samples_file("toy/tiny-1b", "toy_history")
    result = cli("ingest", "lm-eval", samples)
    assert result.exit_code == 0, result.output
    info = _info(cli)
    assert info["tasks"] == ["toy_history"] and info["models"] == ["toy/tiny-1b"]
    # a results file stands for its whole run
    result = cli("ingest", "lm-eval", lmeval_runs.results_file("org/Fake-B"))
    assert result.exit_code == 0, result.output
    assert "org/Fake-B" in _info(cli)["models"]


def test_samples_without_results_file_use_the_folder(cli, lmeval_runs: LMEvalRuns,
                                                     tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "org__Lonely-1B"
    folder.mkdir(parents=True)
    shutil.copy(lmeval_runs.samples_file("org/Fake-A", "toy_science"), folder)
    result = cli("ingest", "lm-eval", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert _info(cli)["models"] == ["org/Lonely-1B"]


def test_newest_run_wins(cli, lmeval_runs: LMEvalRuns, tmp_path: Path) -> None:
    model = "org/Fake-A"
    old = _copy_run(lmeval_runs, model, tmp_path / "old")
    new = _copy_run(lmeval_runs, model, tmp_path / "new")
    date = lmeval_runs.results_file(model).stem.split("_", 1)[1]
    later = "2099-01-01T00-00-00.000001"
    for path in list(new.iterdir()):
        if path.name.startswith("samples_toy_arith"):
            lines = read_jsonl(path)
            for line in lines:  # the newer run got every arith doc right
                line["acc"] = 1.0
            write_jsonl(path, lines)
        path.rename(path.with_name(path.name.replace(date, later)))
    result = cli("ingest", "lm-eval", tmp_path / "new", tmp_path / "old")
    assert result.exit_code == 0, result.output
    assert "task toy_arith, model org/Fake-A: 2 runs found; using the newest" in result.stderr
    info = _info(cli)
    assert info["accuracy"]["toy_arith"][model] == 1.0
    assert info["counts"]["toy_arith"][model] == 36
    assert info["accuracy"]["toy_history"][model] == pytest.approx(
        lmeval_runs.results[model]["results"]["toy_history"]["acc,none"])
    assert old.exists()


def test_doc_hash_mismatch_is_reported(cli, lmeval_runs: LMEvalRuns, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _copy_run(lmeval_runs, "org/Fake-A", runs)
    other = runs / "org__Fake-C"
    other.mkdir()
    lines = read_jsonl(lmeval_runs.samples_file("org/Fake-B", "toy_arith"))
    lines[5]["doc_hash"] = "0" * 64  # as if Fake-C ran another version of the task
    write_jsonl(other / lmeval_runs.samples_file("org/Fake-B", "toy_arith").name, lines)
    result = cli("ingest", "lm-eval", runs)
    assert result.exit_code == 0, result.output
    assert "task toy_arith, doc 5: doc_hash differs between models" in result.stderr
    assert "org/Fake-A" in result.stderr and "org/Fake-C" in result.stderr
    assert "doc_hash differs" not in cli("ingest", "lm-eval", lmeval_runs.root).stderr


# -- malformed input: exit code 1, one message naming file and line, store unchanged ----
def _corrupt(kind: str, folder: Path) -> tuple[Path, int | None]:
    """Damage one file of a copied run; (file named in the error, line or None)."""
    path = next(folder.glob("samples_toy_science_*.jsonl"))
    lines = path.read_text().splitlines(keepends=True)
    record = json.loads(lines[6])
    if kind == "truncated":  # an interrupted write: the last line stops half-way
        lines[-1] = lines[-1][: len(lines[-1]) // 2]
        path.write_text("".join(lines))
        return path, len(lines)
    if kind == "garbled":
        lines[6] = lines[6].replace('"doc_id"', "doc_id", 1)
    elif kind == "missing_doc_id":
        del record["doc_id"]
    elif kind == "missing_arguments":
        del record["arguments"]
    elif kind == "missing_metric":
        del record["acc"]
    elif kind == "non_numeric":
        record["acc"] = "abc"
    if kind != "garbled":
        lines[6] = json.dumps(record) + "\n"
    path.write_text("".join(lines))
    return path, 7


BAD_LINES = {"truncated": "not valid JSON", "garbled": "not valid JSON",
             "missing_doc_id": "missing key 'doc_id'",
             "missing_arguments": "missing key 'arguments'",
             "missing_metric": "missing key 'acc'", "non_numeric": "non-numeric score acc='abc'"}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_bad_line_is_one_clear_error(cli, lmeval_runs: LMEvalRuns, tmp_path: Path,
                                     kind: str) -> None:
    assert cli("ingest", "lm-eval", lmeval_runs.model_dir("toy/tiny-1b")).exit_code == 0
    before = file_bytes(Store(cli.store).table_path)
    folder = _copy_run(lmeval_runs, "org/Fake-A", tmp_path / "bad")
    path, line = _corrupt(kind, folder)
    result = cli("ingest", "lm-eval", tmp_path / "bad")
    assert f"{path} line {line}: {BAD_LINES[kind]}" in one_error(result)
    assert file_bytes(Store(cli.store).table_path) == before


@pytest.mark.parametrize("kind", ["empty", "unrecognisable", "results_only"])
def test_folder_without_sample_logs(cli, lmeval_runs: LMEvalRuns, tmp_path: Path,
                                    kind: str) -> None:
    assert cli("ingest", "lm-eval", lmeval_runs.model_dir("toy/tiny-1b")).exit_code == 0
    before = file_bytes(Store(cli.store).table_path)
    folder = tmp_path / kind
    folder.mkdir()
    if kind == "unrecognisable":
        (folder / "notes.txt").write_text("hello\n")
        write_jsonl(folder / "data.jsonl", [{"question": "2+2?", "answer": "4"}])
        (folder / "config.json").write_text("{}")
    elif kind == "results_only":
        shutil.copy(lmeval_runs.results_file("org/Fake-A"), folder)
    error = one_error(cli("ingest", "lm-eval", folder))
    expected = ("found lm-eval results files but no per-sample logs" if kind == "results_only"
                else f"no lm-eval results_*.json / samples_* files under {folder}")
    assert f"Error: {folder}: {expected}" in error
    assert file_bytes(Store(cli.store).table_path) == before


def test_first_ingest_that_fails_creates_no_store(cli, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert cli("ingest", "lm-eval", tmp_path / "empty").exit_code == 1
    assert not (Store(cli.store).table_path).exists()


# -- older layouts ------------------------------------------------------------------------
def test_legacy_json_array_layout(cli, lmeval_runs: LMEvalRuns, tmp_path: Path) -> None:
    model = "org/Fake-A"
    legacy = to_legacy_array_run(lmeval_runs, model, tmp_path / "legacy")
    assert (legacy / "pretrained__org__Fake-A_toy_units.jsonl").read_text().startswith("[")
    result = cli("ingest", "lm-eval", legacy)
    assert result.exit_code == 0, result.output
    info = _info(cli)
    assert info["models"] == [model] and info["tasks"] == TASKS
    results = lmeval_runs.results[model]["results"]
    for task in TASKS:
        if task != "toy_cooking":
            assert info["accuracy"][task][model] == pytest.approx(results[task][DEFAULT_KEY[task]])
    table = _table(cli)
    line = read_jsonl(lmeval_runs.samples_file(model, "toy_capitals"))[0]
    assert table.query("task == 'toy_capitals' and instance_id == '0'").input_text.iloc[0] \
        == line["arguments"]["gen_args_0"]["arg_0"]
    # the same run in the modern layout gives the very same rows: re-ingest adds nothing
    again = cli("ingest", "lm-eval", lmeval_runs.model_dir(model))
    assert again.exit_code == 0 and " 0 added" in again.stdout


def test_mid_2024_json_array_layout(cli, lmeval_runs: LMEvalRuns, tmp_path: Path) -> None:
    model = "toy/math-whiz-7b"
    out = to_json_array_run(lmeval_runs, model, tmp_path / "arrays")
    assert not list(out.glob("*/*.jsonl"))
    result = cli("ingest", "lm-eval", out)
    assert result.exit_code == 0, result.output
    info = _info(cli)
    assert info["models"] == [model]
    assert info["accuracy"]["toy_arith"][model] == pytest.approx(
        lmeval_runs.results[model]["results"]["toy_arith"]["acc,none"])


def test_output_path_ending_in_json(cli, lmeval_runs: LMEvalRuns, tmp_path: Path) -> None:
    """``--output_path out/eval.json`` (0.4.9+): ``out/eval_<date>.json`` + samples, no model
    folder; the results file names the model."""
    model = "toy/geo-buff-7b"
    out = tmp_path / "out"
    shutil.copytree(lmeval_runs.model_dir(model), out)
    results = lmeval_runs.results_file(model)
    (out / results.name).rename(out / results.name.replace("results_", "eval_"))
    result = cli("ingest", "lm-eval", out)
    assert result.exit_code == 0, result.output
    info = _info(cli)
    assert info["models"] == [model]
    assert info["model_metadata"][model]["params"] == 7_000_000_000


def test_same_files_reached_twice_are_read_once(cli, lmeval_runs: LMEvalRuns) -> None:
    folder = lmeval_runs.model_dir("org/Fake-A")
    result = cli("ingest", "lm-eval", folder, folder.parent, next(folder.glob("samples_*")))
    assert result.exit_code == 0, result.output
    assert _info(cli)["counts"]["toy_arith"]["org/Fake-A"] == 36


def test_pre_0_4_3_lines_without_filter_first_line_wins(tmp_path: Path,
                                                        lmeval_runs: LMEvalRuns) -> None:
    folder = tmp_path / "org__Old"
    lines = []
    for line in read_jsonl(lmeval_runs.samples_file("org/Fake-B", "toy_units")):
        lines.append({k: v for k, v in line.items() if k not in ("filter", "metrics")})
    date = "2024-07-01T10-00-00.000000"
    write_jsonl(folder / f"samples_toy_units_{date}.jsonl", lines)
    rows = list(LMEvalAdapter().read([tmp_path]))
    assert len(rows) == 30 and {r.metric for r in rows} == {"exact_match"}
    strict = {str(x["doc_id"]): x["exact_match"] for x in lines[:30]}
    assert {r.instance_id: r.score for r in rows} == strict
    assert {r.model for r in rows} == {"org/Old"}


# -- real files of other lm-eval versions -------------------------------------------------
@needs_shared
def test_real_lm_eval_0_4_9(cli) -> None:
    result = cli("ingest", "lm-eval", FIXTURES / "lm_eval_0.4.9")
    assert result.exit_code == 0, result.output
    info = _info(cli)
    model = "RylanSchaeffer/mem_Qwen3-93M_minerva_math_rep_0_sbst_1.0000_epch_1_ot_1"
    assert info["models"] == [model] and info["tasks"] == ["math_perturbed_full"]
    assert info["counts"]["math_perturbed_full"][model] == 10
    assert info["model_metadata"][model]["params"] == 93069280
    assert _table(cli).input_text.iloc[0].startswith("Problem: ")


@needs_shared
def test_real_lm_eval_0_4_10_list_metric_is_skipped(cli) -> None:
    result = cli("ingest", "lm-eval", FIXTURES / "lm_eval_0.4.10")
    assert result.exit_code == 1
    assert "no scalar per-sample metric" in result.stderr and "f1 (list)" in result.stderr
    assert not (Store(cli.store).table_path).exists()
    # beside a readable run, the task is skipped with a warning and the rest is ingested
    result = cli("ingest", "lm-eval", FIXTURES / "lm_eval_0.4.10", FIXTURES / "lm_eval_0.4.9")
    assert result.exit_code == 0, result.output
    assert "WARNING" in result.stderr and "masakhaner_luo_prompt_1" in result.stderr
    assert _info(cli)["tasks"] == ["math_perturbed_full"]


@needs_shared
def test_real_pre_0_4_files(cli) -> None:
    result = cli("ingest", "lm-eval", FIXTURES / "lm_eval_pre_0.4")
    assert result.exit_code == 0, result.output
    info = _info(cli)
    assert info["tasks"] == ["trivia_qa_unfiltered.nocontext", "winogrande"]
    assert info["counts"]["winogrande"]["EleutherAI/pythia-2.8b"] == 4
    assert info["counts"]["trivia_qa_unfiltered.nocontext"]["EleutherAI/pythia-2.8b"] == 2
    # `_winogrande.jsonl` was written without model_args: the folder names the model
    assert info["counts"]["winogrande"]["lm_eval_pre_0.4"] == 2
    table = _table(cli)
    trivia = table[table.task == "trivia_qa_unfiltered.nocontext"]
    assert set(trivia.metric) == {"acc"}  # "f1" holds a question id string: not a score
    assert trivia.input_text.iloc[0].startswith("Q:Who was President")


@needs_shared
def test_all_shared_fixtures_at_once(cli) -> None:
    result = cli("ingest", "lm-eval", FIXTURES)  # also holds HELM folders: ignored
    assert result.exit_code == 0, result.output
    assert len(_info(cli)["models"]) == 3


# -- helpers ----------------------------------------------------------------------------
def test_file_name_helpers() -> None:
    assert get_file_task_name("samples_mmlu_abstract_algebra_2026-11-28T02-58-12.139447") \
        == "mmlu_abstract_algebra"
    assert model_from_model_args("pretrained=org/x,dtype=bfloat16") == "org/x"
    assert model_from_model_args({"dtype": "x", "peft": "a/lora", "pretrained": "b"}) == "a/lora"
    assert model_from_model_args("dtype=float") is None


def test_legacy_names_split_model_args_and_task(tmp_path: Path) -> None:
    line = {"doc_id": 0, "arguments": [["Q: 1+1?\nA:", " 2"]], "acc": 1.0}
    for name in ("pretrained__EleutherAI__pythia-160m,dtype__float_hella_swag.jsonl",
                 "pretrained=org__my_model_arc_easy.jsonl", "pretrained=org__my_model_piqa.jsonl"):
        write_jsonl(tmp_path / name, [line])
    rows = {(r.model, r.task) for r in LMEvalAdapter().read([tmp_path])}
    assert rows == {("EleutherAI/pythia-160m", "hella_swag"), ("org/my_model", "arc_easy"),
                    ("org/my_model", "piqa")}


def test_unknown_metric_in_thresholds_names_the_file(tmp_path: Path,
                                                     lmeval_runs: LMEvalRuns) -> None:
    from lm_router_plugin.store.thresholds import Thresholds

    config = tmp_path / "t.yaml"
    config.write_text("tasks:\n  toy_arith: {metric: bleu}\n")
    adapter = LMEvalAdapter(thresholds=Thresholds.load(config))
    with pytest.raises(InputError, match=r"line 1: missing key 'bleu' .*this file has acc, "
                                         r"acc_norm"):
        list(adapter.read([lmeval_runs.samples_file("org/Fake-A", "toy_arith")]))


def test_streams_without_reading_ahead(lmeval_runs: LMEvalRuns) -> None:
    """Rows come out while a file is being read (generator), not after loading it all."""
    rows = LMEvalAdapter().read([lmeval_runs.samples_file("org/Fake-A", "toy_arith")])
    first = next(rows)
    assert first.instance_id == "0"
    assert len(list(rows)) == 35


def test_example_runs_match_their_aggregates(cli) -> None:
    """examples/runs (the quick start's data, made by examples/make_example.py) ingest cleanly."""
    runs = TASK_CONFIGS.parent / "examples" / "runs"
    result = cli("ingest", "lm-eval", runs, "--models", runs.parent / "models.yaml")
    assert result.exit_code == 0, result.output
    info = _info(cli)
    assert info["tasks"] == TASKS and len(info["models"]) == 4
    assert info["model_metadata"]["toy/generalist-70b"] == {"params": 70_000_000_000,
                                                            "cost_per_1m": 0.9}
    for path in runs.glob("*/results_*.json"):
        results = json.loads(path.read_text())
        for task in TASKS:
            if task != "toy_cooking":
                assert info["accuracy"][task][results["model_name"]] == pytest.approx(
                    results["results"][task][DEFAULT_KEY[task]])


def test_task_configs_validate_with_lm_eval() -> None:
    """``lm-eval validate`` accepts every task of task_configs/ (run from another CWD)."""
    tasks = ",".join(TASKS + ["toy_percent"])
    proc = subprocess.run(
        [sys.executable, "-m", "lm_eval", "validate", "--tasks", tasks, "--include_path",
         str(TASK_CONFIGS)], cwd=Path("/"), env=offline_env(), capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
