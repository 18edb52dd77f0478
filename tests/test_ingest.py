"""Ingest into the store: merge, idempotence, conflicts naming both files, atomicity, model
metadata, thresholds applied to rows, and `lm-router info`."""

from __future__ import annotations

import json

import pytest
from conftest import file_bytes, one_error

from lm_router_plugin.store.store import Store


def write_table(path, rows, header="task,instance_id,model,input_text,score,metric"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture
def results(tmp_path):
    return write_table(tmp_path / "results.csv", [
        "qa,1,m1,What is 2+2?,0.9,f1_score", "qa,2,m1,Capital of Peru?,0.2,f1_score",
        "qa,1,m2,What is 2+2?,0.4,f1_score", "qa,2,m2,Capital of Peru?,0.7,f1_score",
        "mc,1,m1,Sky colour?,1,acc", "mc,1,m2,Sky colour?,0,acc",
    ])


def test_ingest_info_and_idempotence(cli, results):
    result = cli("ingest", "table", results)
    assert result.exit_code == 0, result.output
    assert "6 rows read: 6 added" in result.stdout
    before = file_bytes(Store(cli.store).table_path)
    again = cli("ingest", "table", results)
    assert "0 added, 6 already stored" in again.stdout
    assert file_bytes(Store(cli.store).table_path) == before  # nothing rewritten
    info = json.loads(cli("info", "--json").stdout)
    assert info["n_rows"] == 6 and info["models"] == ["m1", "m2"]
    assert info["tasks"] == ["mc", "qa"]
    # f1_score is continuous: correct when > 0.5 (shipped default)
    assert info["accuracy"] == {"mc": {"m1": 1.0, "m2": 0.0}, "qa": {"m1": 0.5, "m2": 0.5}}
    assert info["counts"]["qa"] == {"m1": 2, "m2": 2}
    human = cli("info")
    assert human.exit_code == 0 and "qa" in human.stdout and "0.5000" in human.stdout


def test_rows_keep_metric_score_threshold_correct(cli, results):
    import pandas as pd

    cli("ingest", "table", results)
    table = pd.read_parquet(Store(cli.store).table_path)
    row = table[(table.task == "qa") & (table.instance_id == "1") & (table.model == "m2")].iloc[0]
    assert (row.metric, row.score, row.threshold, row.correct) == ("f1_score", 0.4, 0.5, 0)
    binary = table[(table.task == "mc") & (table.model == "m1")].iloc[0]
    assert pd.isna(binary.threshold) and binary.correct == 1
    assert row.origin == str(results)


def test_thresholds_file_changes_correctness(cli, results, tmp_path):
    th = tmp_path / "th.yaml"
    th.write_text("tasks:\n  qa: {threshold: 0.3}\n")
    assert cli("ingest", "table", results, "--thresholds", th).exit_code == 0
    info = json.loads(cli("info", "--json").stdout)
    assert info["accuracy"]["qa"] == {"m1": 0.5, "m2": 1.0}


def test_conflict_names_both_files_and_keeps_store(cli, results, tmp_path):
    assert cli("ingest", "table", results).exit_code == 0
    before = file_bytes(Store(cli.store).table_path)
    newer = write_table(tmp_path / "rerun.csv", ["qa,1,m2,What is 2+2?,0.8,f1_score"])
    error = one_error(cli("ingest", "table", newer))
    assert str(results) in error and str(newer) in error and "--replace" in error
    assert file_bytes(Store(cli.store).table_path) == before
    replaced = cli("ingest", "table", newer, "--replace")
    assert "1 replaced" in replaced.stdout
    info = json.loads(cli("info", "--json").stdout)
    assert info["accuracy"]["qa"]["m2"] == 1.0 and info["n_rows"] == 6


def test_bad_thresholds_file_keeps_store(cli, results, tmp_path):
    assert cli("ingest", "table", results).exit_code == 0
    before = file_bytes(Store(cli.store).table_path)
    th = tmp_path / "th.yaml"
    th.write_text("metrics:\n  f1_scor: 0.4\n")
    error = one_error(cli("ingest", "table", results, "--thresholds", th))
    assert "Unknown metric 'f1_scor'. Did you mean: f1_score" in error and str(th) in error
    assert file_bytes(Store(cli.store).table_path) == before


def test_model_metadata_file(cli, results, tmp_path):
    models = tmp_path / "models.yaml"
    models.write_text("m1: {params: 7B, cost_per_1m: 0.2}\nm2: {params: 1.5e9}\n")
    assert cli("ingest", "table", results, "--models", models).exit_code == 0
    meta = json.loads(cli("info", "--json").stdout)["model_metadata"]
    assert meta["m1"] == {"params": 7_000_000_000, "cost_per_1m": 0.2}
    assert meta["m2"]["params"] == 1_500_000_000
    models.write_text("m1: {params: seven}\n")
    error = one_error(cli("ingest", "table", results, "--models", models))
    assert "m1.params: cannot read a parameter count from 'seven'" in error


@pytest.mark.parametrize("spec, expected", [
    ("{params: [7]}", "m1.params: cannot read a parameter count from [7]"),
    ("{params: {a: 1}}", "m1.params: cannot read a parameter count from {'a': 1}"),
    ("{params: .nan}", "m1.params: cannot read a parameter count from nan"),
    ("{cost_per_1m: [1]}", "m1.cost_per_1m: expected a finite number >= 0"),
    ("{cost_per_1m: {a: 1}}", "m1.cost_per_1m: expected a finite number >= 0"),
    ("{cost_per_1m: .nan}", "m1.cost_per_1m: expected a finite number >= 0 (USD per 1M "
                            "tokens), got nan"),
    ("{cost_per_1m: .inf}", "m1.cost_per_1m: expected a finite number >= 0"),
])
def test_models_file_rejects_non_numbers_naming_model_and_key(cli, results, tmp_path, spec,
                                                             expected):
    models = tmp_path / "models.yaml"
    models.write_text("m1: {params: 7B, cost_per_1m: 0.2}\n")
    assert cli("ingest", "table", results, "--models", models).exit_code == 0
    before = Store(cli.store).models_path.read_bytes()
    models.write_text(f"m1: {spec}\n")
    error = one_error(cli("ingest", "table", results, "--models", models))
    assert str(models) in error and expected in error, error
    after = Store(cli.store).models_path.read_bytes()
    assert after == before and json.loads(after)["m1"]["cost_per_1m"] == 0.2  # valid JSON


def test_binary_metric_outside_0_1_warns_once_per_task_and_metric(cli, tmp_path):
    rows = [f"{task},{i},{model},q{i},{value},acc" for task in ("mc", "tf")
            for model in ("m1", "m2") for i, value in enumerate((0.7, 0.2, 1, 0))]
    table = write_table(tmp_path / "probs.csv", rows + ["qa,1,m1,q,0.7,f1_score"])
    result = cli("ingest", "table", table)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "is binary" in line]
    assert [w[w.index("task"):] for w in warnings] == [
        f"task {task}: metric 'acc' is binary, but 4 value(s) are outside {{0, 1}}; they were "
        f"thresholded at 0.5 (set an eta with --thresholds tasks: {{{task}: {{metric: acc, "
        "threshold: X}})" for task in ("mc", "tf")]
    again = write_table(tmp_path / "binary.csv", ["mc,1,m3,q,1,acc", "mc,2,m3,q,0,acc"])
    assert "is binary" not in cli("ingest", "table", again).output


def test_duplicate_key_names_the_files():
    import pyarrow as pa

    from lm_router_plugin.errors import SchemaError
    from lm_router_plugin.store.ingest import check_unique_keys

    table = pa.table({"task": ["t", "t", "t"], "instance_id": ["1", "2", "1"],
                      "model": ["m", "m", "m"], "origin": ["a.jsonl", "a.jsonl", "b.jsonl"]})
    with pytest.raises(SchemaError, match=r"duplicated key \{'task': 't', 'instance_id': '1', "
                                          r"'model': 'm'\} \(read from a\.jsonl and "
                                          r"b\.jsonl\)"):
        check_unique_keys(table, "runs/")


def test_missing_path_and_unknown_adapter(cli, tmp_path):
    assert "no such file or folder" in one_error(cli("ingest", "table", tmp_path / "nope.csv"))
    # an unknown adapter is bad usage: exit 2, one message, nothing read or written
    for args in (("lm_eval", tmp_path), ("foo", "x")):
        result = cli("ingest", *args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert f"Invalid value for ADAPTER: Unknown adapter '{args[0]}'." in result.output
        assert not Store(cli.store).has_table() and not cli.store.exists()
    assert "Did you mean: lm-eval?" in cli("ingest", "lm_eval", tmp_path).output


def test_info_on_empty_store(cli):
    assert "holds no results yet" in one_error(cli("info"))
