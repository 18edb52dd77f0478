"""The EEE (Every Eval Ever, schema 0.3.0) adapter on EEE datastores written by a small
converter of our own (below) from real HELM runs (tests/data/helm) and real lm-eval logs
(the session fixture ``lmeval_runs``): ``ingest eee`` gives the harnesses' own accuracies
and the same ones as ``ingest helm`` / ``ingest lm-eval``; broken inputs are one error each.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import LMEvalRuns, file_bytes, one_error, read_jsonl

from lm_router_plugin.adapters.eee import EEEAdapter, schema_problem
from lm_router_plugin.adapters.helm import task_name
from lm_router_plugin.errors import InputError
from lm_router_plugin.registry import adapters
from lm_router_plugin.store.store import Store

SUITE = Path(__file__).parent / "data" / "helm" / "fixture-suite"
TRIALS = "simple_mcqa:num_train_trials=3,model=mock_model-b"
HELM_METRICS = ("exact_match", "quasi_exact_match", "prefix_exact_match",
                "quasi_prefix_exact_match")
VERSION = "0.3.0"


# -- a minimal EEE writer (what every_eval_ever's converters write, schema 0.3.0) ------
def _uuid(*parts: str) -> str:
    return str(uuid.UUID(hashlib.md5("/".join(parts).encode()).hexdigest(), version=4))


def write_eee(root: Path, collection: str, model: str, library: str, task: str,
              results: list[dict[str, Any]], samples: list[dict[str, Any]]) -> Path:
    """Write ``data/<collection>/<developer>/<model>/<uuid>.json`` + ``_samples.jsonl``.

    ``results``: {id, metric, score, score_type, lower_is_better}; ``samples``: {sample_id,
    result (id), score, is_correct, raw, formatted, reference, output}.
    """
    developer, _, name = model.partition("/")
    folder = root / "data" / collection / developer / (name or developer)
    file_uuid = _uuid(collection, model, task)
    evaluation_id = f"{task}/{model}/1750000000"
    lines = []
    for s in samples:
        lines.append(json.dumps({
            "schema_version": VERSION, "evaluation_id": evaluation_id, "model_id": model,
            "evaluation_name": task, "evaluation_result_id": s["result"],
            "sample_id": s["sample_id"], "interaction_type": "single_turn",
            "input": {"raw": s["raw"], "formatted": s["formatted"],
                      "reference": s["reference"]},
            "output": {"raw": [s["output"]]},
            "answer_attribution": [{"turn_idx": 0, "source": "output.raw",
                                    "extracted_value": s["output"],
                                    "extraction_method": "exact_match", "is_terminal": True}],
            "evaluation": {"score": s["score"], "is_correct": s["is_correct"]},
        }, ensure_ascii=False))
    content = ("\n".join(lines) + "\n").encode()
    aggregate = {
        "schema_version": VERSION, "evaluation_id": evaluation_id,
        "retrieved_timestamp": "1750000000",
        "source_metadata": {"source_name": library, "source_type": "evaluation_run",
                            "source_organization_name": "lm-router tests",
                            "evaluator_relationship": "third_party"},
        "eval_library": {"name": library, "version": "unknown"},
        "model_info": {"name": name or model, "id": model, "developer": developer,
                       "additional_details": {"deployment_type": "self_deployed",
                                              "model_availability": "unknown"}},
        "evaluation_results": [{
            "evaluation_result_id": r["id"], "evaluation_name": task,
            "source_data": {"dataset_name": collection, "source_type": "other"},
            "metric_config": {"metric_id": r["metric"], "lower_is_better": r["lower_is_better"],
                              "score_type": r["score_type"], "min_score": 0, "max_score": 1},
            "score_details": {"score": r["score"]},
        } for r in results],
        "detailed_evaluation_results": {
            "format": "jsonl",
            "file_path": f"data/{collection}/{folder.parent.name}/{folder.name}/"
                         f"{file_uuid}_samples.jsonl",
            "hash_algorithm": "sha256", "checksum": hashlib.sha256(content).hexdigest(),
            "total_rows": len(lines)},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{file_uuid}_samples.jsonl").write_bytes(content)
    path = folder / f"{file_uuid}.json"
    path.write_text(json.dumps(aggregate, indent=2))
    return path


def _helm_runs() -> list[Path]:
    return [r for r in sorted(SUITE.iterdir()) if r.name != TRIALS]


def helm_to_eee(run: Path, root: Path) -> Path:
    """One HELM run folder -> one EEE run: a sample line per (instance, core metric), as
    EEE's HELM converter writes them; unperturbed instances of the test split only."""
    spec = json.loads((run / "run_spec.json").read_text())
    model, task = spec["adapter_spec"]["model"], task_name(spec["name"])
    states = {s["instance"]["id"]: s for s in
              json.loads((run / "scenario_state.json").read_text())["request_states"]
              if not s["instance"].get("perturbation")}
    samples, means = [], {}
    for entry in json.loads((run / "per_instance_stats.json").read_text()):
        if entry.get("perturbation"):
            continue
        state = states[entry["instance_id"]]
        refs = [r["output"]["text"] for r in state["instance"]["references"]
                if "correct" in r["tags"]]
        for stat in entry["stats"]:
            name = stat["name"]
            if name["name"] not in HELM_METRICS or name.get("perturbation"):
                continue
            result = f"{name['name']}:{name['split']}"
            means.setdefault(result, []).append(stat["mean"])
            samples.append({"sample_id": entry["instance_id"], "result": result,
                            "score": stat["mean"], "is_correct": stat["mean"] > 0,
                            "raw": state["instance"]["input"]["text"],
                            "formatted": state["request"]["prompt"], "reference": refs,
                            "output": state["result"]["completions"][0]["text"]})
    results = [{"id": rid, "metric": rid.split(":")[0], "score": sum(v) / len(v),
                "score_type": "continuous", "lower_is_better": False}
               for rid, v in means.items()]
    return write_eee(root, SUITE.name, model, "helm", task, results, samples)


# lm-eval: the metric and filter the lm-eval adapter reads by default (test_lmeval_adapter.py)
LMEVAL_KEY = {"toy_arith": "acc,none", "toy_capitals": "exact_match,none",
              "toy_cooking": "token_f1,none", "toy_history": "acc,none",
              "toy_science": "acc,none", "toy_units": "exact_match,strict"}


def lmeval_to_eee(runs: LMEvalRuns, model: str, root: Path) -> list[Path]:
    """One lm-eval run (results + samples files, one model) -> one EEE run per task."""
    results = runs.results[model]
    out = []
    for task, key in LMEVAL_KEY.items():
        if task not in results["results"]:
            continue
        metric, filt = key.split(",")
        agg = [{"id": k, "metric": k.split(",")[0], "score": v,
                "score_type": "binary" if k.startswith("acc,") else "continuous",
                "lower_is_better": not results["higher_is_better"][task][k.split(",")[0]]}
               for k, v in results["results"][task].items()
               if "," in k and "_stderr" not in k and isinstance(v, (int, float))]
        samples = [{"sample_id": str(line["doc_id"]), "result": key,
                    "score": float(line[metric]), "is_correct": float(line[metric]) == 1.0,
                    "raw": line["arguments"]["gen_args_0"]["arg_0"],
                    "formatted": line["arguments"]["gen_args_0"]["arg_0"],
                    "reference": [str(line["target"])], "output": str(line["filtered_resps"])}
                   for line in read_jsonl(runs.samples_file(model, task))
                   if line["filter"] == filt]
        out.append(write_eee(root, task, model, "lm_eval", task, agg, samples))
    return out


# -- helpers ---------------------------------------------------------------------------
def _info(cli, store: Path) -> dict:
    result = cli("info", "--json", store_dir=store)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _table(store: Path) -> pd.DataFrame:
    return pd.read_parquet(Store(store).table_path)


@pytest.fixture
def helm_eee(tmp_path: Path) -> Path:
    root = tmp_path / "eee"
    for run in _helm_runs():
        helm_to_eee(run, root)
    return root


def _stat_mean(run: Path, metric: str) -> float:
    for stat in json.loads((run / "stats.json").read_text()):
        name = stat["name"]
        if name["name"] == metric and name.get("split") == "test" and "perturbation" not in name:
            return stat["mean"]
    raise AssertionError(f"no {metric} in {run}/stats.json")


# -- HELM through EEE ------------------------------------------------------------------
def test_registered():
    assert adapters.get("eee") is EEEAdapter


def test_helm_accuracies_equal_stats_json_and_ingest_helm(cli, helm_eee: Path, tmp_path: Path):
    result = cli("ingest", "eee", helm_eee / "data")
    assert result.exit_code == 0, result.output
    info = _info(cli, cli.store)
    helm_store = tmp_path / "helm-store"
    assert cli("ingest", "helm", SUITE, store_dir=helm_store).exit_code == 0
    helm_info = _info(cli, helm_store)
    for run in _helm_runs():
        spec = json.loads((run / "run_spec.json").read_text())
        task, model = task_name(spec["name"]), spec["adapter_spec"]["model"]
        assert info["accuracy"][task][model] == pytest.approx(_stat_mean(run, "exact_match"),
                                                              abs=1e-12), run.name
        assert info["counts"][task][model] == 5
    trials = task_name(TRIALS)  # a 3-trial run: not converted (one score per instance)
    assert info["accuracy"] == {t: a for t, a in helm_info["accuracy"].items() if t != trials}
    assert info["counts"] == {t: n for t, n in helm_info["counts"].items() if t != trials}
    table, helm_table = _table(cli.store), _table(helm_store)
    helm_table = helm_table[helm_table.task != trials]
    assert set(table.source) == {"eee"} and set(table.metric) == {"exact_match"}
    assert set(table.benchmark) == {SUITE.name}
    key = ["task", "instance_id", "model"]
    merged = table.merge(helm_table, on=key, suffixes=("", "_helm"))
    assert len(merged) == len(table) == len(helm_table)
    assert (merged.correct == merged.correct_helm).all()
    # input.raw is the question; the HELM adapter appends a multiple-choice run's options
    assert all(h == e or h.startswith(e + "\n") for e, h in
               zip(merged.input_text, merged.input_text_helm, strict=True))
    assert (merged.prompt_hash == merged.prompt_hash_helm).all()  # input.formatted: the prompt


def test_single_file_and_its_samples_file(cli, helm_eee: Path):
    aggregate = sorted(helm_eee.rglob("*.json"))[0]
    samples = aggregate.with_name(aggregate.stem + "_samples.jsonl")
    rows = list(EEEAdapter().read([aggregate]))
    assert len(rows) == 5 and {r.metric for r in rows} == {"exact_match"}
    assert rows == list(EEEAdapter().read([samples]))
    assert cli("ingest", "eee", aggregate).exit_code == 0


def test_thresholds_choose_another_metric(helm_eee: Path, tmp_path: Path):
    from lm_router_plugin.store.thresholds import Thresholds

    config = tmp_path / "t.yaml"
    config.write_text("tasks:\n  simple_mcqa: {metric: quasi_exact_match}\n")
    rows = list(EEEAdapter(thresholds=Thresholds.load(config)).read([helm_eee]))
    metrics = {r.task: r.metric for r in rows}
    assert metrics["simple_mcqa"] == "quasi_exact_match"
    assert metrics["simple_classification"] == "exact_match"


def test_reingest_adds_nothing(cli, helm_eee: Path):
    assert cli("ingest", "eee", helm_eee).exit_code == 0
    before = file_bytes(Store(cli.store).table_path)
    result = cli("ingest", "eee", helm_eee)
    assert result.exit_code == 0 and " 0 added" in result.stdout
    assert file_bytes(Store(cli.store).table_path) == before


# -- bad inputs: one error each, the store unchanged -----------------------------------
def _broken(cli, helm_eee: Path, break_it) -> tuple[str, Path]:
    """Ingest ``helm_eee``, break one run with ``break_it(aggregate, samples)``, ingest
    again: one error, the store's bytes unchanged. (message, the broken file)."""
    assert cli("ingest", "eee", helm_eee).exit_code == 0
    before = file_bytes(Store(cli.store).table_path)
    aggregate = sorted(helm_eee.rglob("*.json"))[2]
    samples = aggregate.with_name(aggregate.stem + "_samples.jsonl")
    broken = break_it(aggregate, samples)
    message = one_error(cli("ingest", "eee", helm_eee))
    assert str(broken) in message, message
    assert file_bytes(Store(cli.store).table_path) == before
    return message, broken


def _rewrite(samples: Path, aggregate: Path, edit) -> None:
    """Change the samples' lines with ``edit(records)`` and keep checksum/total_rows right."""
    records = read_jsonl(samples)
    edit(records)
    content = "".join(json.dumps(r) + "\n" for r in records).encode()
    samples.write_bytes(content)
    data = json.loads(aggregate.read_text())
    data["detailed_evaluation_results"].update(
        checksum=hashlib.sha256(content).hexdigest(), total_rows=len(records))
    aggregate.write_text(json.dumps(data))


def test_sample_breaking_the_schema_names_file_and_line(cli, helm_eee: Path):
    def break_it(aggregate, samples):
        _rewrite(samples, aggregate, lambda r: r[3]["evaluation"].update(score="high"))
        return samples
    message, _ = _broken(cli, helm_eee, break_it)
    assert " line 4:" in message and "evaluation.score" in message and "schema" in message


def test_sample_missing_a_required_key(cli, helm_eee: Path):
    def break_it(aggregate, samples):
        _rewrite(samples, aggregate, lambda r: r[0].pop("input"))
        return samples
    message, _ = _broken(cli, helm_eee, break_it)
    assert " line 1:" in message and "'input' is a required property" in message


def test_aggregate_breaking_the_schema(cli, helm_eee: Path):
    def break_it(aggregate, samples):
        data = json.loads(aggregate.read_text())
        data["model_info"]["additional_details"]["deployment_type"] = "cloud"
        aggregate.write_text(json.dumps(data))
        return aggregate
    message, _ = _broken(cli, helm_eee, break_it)
    assert "model_info.additional_details.deployment_type" in message


def test_wrong_checksum(cli, helm_eee: Path):
    def break_it(aggregate, samples):
        samples.write_text(samples.read_text().replace('"score": 1.0', '"score": 0.0', 1)
                           .replace('"score": 0.0', '"score": 1.0', 1))
        data = json.loads(aggregate.read_text())
        data["detailed_evaluation_results"]["checksum"] = "0" * 64
        aggregate.write_text(json.dumps(data))
        return samples
    message, _ = _broken(cli, helm_eee, break_it)
    assert "checksum" in message and "0" * 64 in message


def test_changed_samples_fail_the_checksum(cli, helm_eee: Path):
    def break_it(aggregate, samples):
        lines = samples.read_text().splitlines(keepends=True)
        record = json.loads(lines[0])
        record["evaluation"]["score"] = 1.0 - record["evaluation"]["score"]
        lines[0] = json.dumps(record) + "\n"
        samples.write_text("".join(lines))
        return samples
    message, _ = _broken(cli, helm_eee, break_it)
    assert "checksum" in message and "changed" in message


def test_wrong_total_rows(cli, helm_eee: Path):
    def break_it(aggregate, samples):
        data = json.loads(aggregate.read_text())
        data["detailed_evaluation_results"]["total_rows"] += 1
        aggregate.write_text(json.dumps(data))
        return samples
    message, _ = _broken(cli, helm_eee, break_it)
    assert "total_rows" in message and "says" in message


def test_unknown_schema_version(cli, helm_eee: Path):
    def break_it(aggregate, samples):
        data = json.loads(aggregate.read_text())
        data["schema_version"] = "0.9.0"
        aggregate.write_text(json.dumps(data))
        return aggregate
    message, _ = _broken(cli, helm_eee, break_it)
    assert "unknown EEE schema_version '0.9.0'" in message and "0.3.0" in message


def test_unknown_schema_version_on_a_sample_line(cli, helm_eee: Path):
    def break_it(aggregate, samples):
        _rewrite(samples, aggregate, lambda r: r[1].update(schema_version="1.0.0"))
        return samples
    message, _ = _broken(cli, helm_eee, break_it)
    assert " line 2:" in message and "unknown EEE schema_version '1.0.0'" in message


def test_truncated_samples_file(cli, helm_eee: Path):
    def break_it(aggregate, samples):
        data = samples.read_bytes()
        samples.write_bytes(data[: len(data) - 40])
        return samples
    message, _ = _broken(cli, helm_eee, break_it)
    assert "truncated" in message and " line " in message


def test_samples_cut_at_a_line_end(cli, helm_eee: Path):
    def break_it(aggregate, samples):
        lines = samples.read_bytes().splitlines(keepends=True)
        samples.write_bytes(b"".join(lines[:-2]))
        return samples
    message, _ = _broken(cli, helm_eee, break_it)
    assert "total_rows" in message


def test_sample_of_another_model(cli, helm_eee: Path):
    def break_it(aggregate, samples):
        _rewrite(samples, aggregate, lambda r: r[2].update(model_id="someone/else"))
        return samples
    message, _ = _broken(cli, helm_eee, break_it)
    assert " line 3:" in message and "model_id" in message


@pytest.mark.parametrize("key", ["model_id", "evaluation_name", "sample_id"])
def test_empty_key_of_a_sample_names_file_and_line(cli, helm_eee: Path, key: str):
    """An empty model, task or sample id (strings to the schema) would become a row key."""
    def break_it(aggregate, samples):
        _rewrite(samples, aggregate, lambda r: r[1].update({key: ""}))
        return samples
    message, _ = _broken(cli, helm_eee, break_it)
    assert f" line 2: empty {key}" in message, message


def test_empty_model_info_id_names_the_aggregate(cli, helm_eee: Path):
    def break_it(aggregate, samples):
        _rewrite(samples, aggregate, lambda r: [x.update(model_id="") for x in r])
        data = json.loads(aggregate.read_text())
        data["model_info"]["id"] = ""
        aggregate.write_text(json.dumps(data))
        return aggregate
    message, _ = _broken(cli, helm_eee, break_it)
    assert "empty model_info.id" in message, message


def test_missing_samples_file(cli, helm_eee: Path):
    def break_it(aggregate, samples):
        samples.unlink()
        return aggregate
    message, _ = _broken(cli, helm_eee, break_it)
    assert "not beside the aggregate" in message


def test_aggregate_without_samples_is_one_error(cli, tmp_path: Path, helm_eee: Path):
    aggregate = sorted(helm_eee.rglob("*.json"))[0]
    data = json.loads(aggregate.read_text())
    del data["detailed_evaluation_results"]
    lonely = tmp_path / "only.json"
    lonely.write_text(json.dumps(data))
    message = one_error(cli("ingest", "eee", lonely))
    assert str(lonely) in message and "no instance-level results" in message
    assert not Store(cli.store).table_path.exists()


def test_same_run_twice_is_one_error(tmp_path: Path, helm_eee: Path):
    copy = tmp_path / "copy"
    shutil.copytree(helm_eee, copy)
    with pytest.raises(InputError, match="is also in"):
        list(EEEAdapter().read([helm_eee, copy]))


def test_shipped_schema_accepts_the_writer_and_rejects_nonsense(helm_eee: Path):
    aggregate = sorted(helm_eee.rglob("*.json"))[0]
    assert schema_problem(json.loads(aggregate.read_text()), "eval.schema.json") is None
    assert "required property" in schema_problem({"schema_version": VERSION},
                                                 "eval.schema.json")


# -- lm-eval through EEE ---------------------------------------------------------------
@pytest.mark.slow  # the session fixture runs lm-eval (about 20 s, shared with other tests)
def test_lmeval_accuracies_equal_lm_eval_and_ingest_lm_eval(cli, lmeval_runs: LMEvalRuns,
                                                            tmp_path: Path):
    root = tmp_path / "eee"
    for model in lmeval_runs.results:
        lmeval_to_eee(lmeval_runs, model, root)
    result = cli("ingest", "eee", root)
    assert result.exit_code == 0, result.output
    info = _info(cli, cli.store)
    lm_store = tmp_path / "lm-store"
    assert cli("ingest", "lm-eval", lmeval_runs.root, store_dir=lm_store).exit_code == 0
    lm_info = _info(cli, lm_store)
    assert info["accuracy"].keys() == lm_info["accuracy"].keys()
    for task, by_model in lm_info["accuracy"].items():
        assert info["accuracy"][task] == pytest.approx(by_model, abs=1e-12), task
    assert info["counts"] == lm_info["counts"]
    checked = 0
    for model, results in lmeval_runs.results.items():
        for task, key in LMEVAL_KEY.items():
            aggregate = results["results"][task][key]
            if task == "toy_cooking":  # continuous: token_f1 > 0.5 (thresholds.yaml)
                samples = read_jsonl(lmeval_runs.samples_file(model, task))
                expected = sum(s["token_f1"] > 0.5 for s in samples) / len(samples)
                assert info["accuracy"][task][model] == pytest.approx(expected)
            else:
                assert info["accuracy"][task][model] == pytest.approx(aggregate, abs=1e-12)
            checked += 1
    assert checked == len(lmeval_runs.results) * len(LMEVAL_KEY)
    table, lm_table = _table(cli.store), _table(lm_store)
    cooking = table[table.task == "toy_cooking"]
    assert set(cooking.threshold) == {0.5} and set(cooking.metric) == {"token_f1"}
    merged = table.merge(lm_table, on=["task", "instance_id", "model"], suffixes=("", "_lm"))
    assert len(merged) == len(table) == len(lm_table)
    assert (merged.correct == merged.correct_lm).all()
    assert (merged.score == merged.score_lm).all()
