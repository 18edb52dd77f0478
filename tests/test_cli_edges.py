"""Rough edges of the CLI: broken pipes, `info` columns and alignment, `route` options,
help texts, and malformed lm-eval results files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import file_bytes, one_error

from lm_router_plugin.store.store import Store

LONG = "organisation-with-a-long-name/an-extremely-long-model-name-70b-instruct-v2.5"


@pytest.fixture
def results(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("task,instance_id,model,input_text,score,metric\n" + "".join(
        f"judged,{i},{m},prompt {i},{s},judge_score\n"
        for i, s in enumerate([0, .25, .5, .75, 1, 1, .75, .75]) for m in ("m1", LONG))
        + "mc,1,m1,Sky colour?,1,acc\nmc,1," + LONG + ",Sky colour?,0,acc\n")
    th = tmp_path / "th.yaml"
    th.write_text("metrics:\n  judge_score: {threshold: 0.5, higher_is_better: true}\n")
    return path, th


def test_info_shows_metric_threshold_and_mean_score(cli, results):
    path, th = results
    assert cli("ingest", "table", path, "--thresholds", th).exit_code == 0
    info = json.loads(cli("info", "--json").stdout)
    # the old keys stay, the new ones say what acc is made of
    assert info["accuracy"]["judged"]["m1"] == 0.625  # 5 of 8 values > 0.5
    assert info["mean_score"]["judged"]["m1"] == pytest.approx(5 / 8)  # 0.625 too, by chance
    assert info["mean_score"]["judged"][LONG] == pytest.approx(0.625)
    assert info["metric"]["judged"]["m1"] == "judge_score"
    assert info["threshold"]["judged"]["m1"] == 0.5
    assert info["metric"]["mc"][LONG] == "acc" and info["threshold"]["mc"][LONG] is None
    human = cli("info").stdout.splitlines()
    rule = human[human.index(next(line for line in human if line.startswith("model"))) + 1]
    columns = [(m.start(), m.end()) for m in re.finditer(r"-+", rule)]
    rows = [line for line in human if line.startswith(("m1 ", LONG))]
    assert len(rows) == 4 and len(columns) == 7
    for line in rows:  # every cell sits inside its column, whatever the name lengths
        cells = [line[a:b] for a, b in columns]
        assert all(cell.strip() and " " not in cell.strip() for cell in cells), line
        assert all(line[b:b + 2] in ("  ", "") for _, b in columns), line
    judged = next(r for r in rows if r.startswith(LONG) and "judged" in r)
    assert judged.split()[2:] == ["judge_score", "0.5", "0.6250", "0.6250", "8"]
    assert any(line.startswith("acc: share of rows counted correct") for line in human)


def test_broken_pipe_exits_quietly(cli, results):
    path, th = results
    cli("ingest", "table", path, "--thresholds", th)
    for _ in range(2):  # the reader is gone before the command writes anything
        proc = subprocess.Popen([sys.executable, "-m", "lm_router_plugin.cli", "info",
                                 "--store", str(cli.store)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 0 and err == b""
    head = subprocess.run(f"'{sys.executable}' -m lm_router_plugin.cli info --store "
                          f"'{cli.store}' | head -1; exit ${{PIPESTATUS[0]}}", shell=True,
                          executable="/bin/bash", capture_output=True, text=True)
    assert head.returncode == 0 and head.stderr == "" and head.stdout.startswith("18 rows")


def test_help_lists_what_an_ordinary_user_needs(cli):
    """Research constants live in --config (docs/configuration.md), not in the options."""
    for command in ("recommend", "route", "plan-labels", "evaluate"):
        text = cli(command, "--help").stdout
        options = [line for line in text.splitlines() if line.startswith("  -")]
        # 19: recommend's --target (issue 20) says what the user's data means (0/1
        # correctness or raw metric values), a choice of the user's, not a research constant
        assert len(options) <= 19, (command, len(options))
        assert "--config" in text and "-q, --quiet" in text
        for option in ("--kappa", "--sigma", "--eta", "--seed", "--n-draws", "--nprobe",
                       "--nlist", "--index-threshold", "--predictor-param",
                       "--max-seq-length", "--label-selection", "--plan FILE  PREFIX"):
            assert option not in text
    assert cli("route", "--prompts", "p.txt", "--eta", "0.7").exit_code == 2
    assert "lm-router route --prompts" in cli("--help").stdout
    assert "split=main|all|NAME" in cli("ingest", "--help").stdout


@pytest.mark.parametrize("content, message", [
    ('{"results": "x", "config": 5, "model_name": 7}',
     "key 'results' should be an object {task: {metric: value}}, got a JSON string ('x')"),
    ('{"results": {}, "config": 5}', "key 'config' should be an object, got a JSON number (5)"),
    ('{"results": {}, "model_name": 7}', "key 'model_name' should be a string, got a JSON number"),
    ('{"results": {"t": 3}}', "key 'results.t' should be an object {metric: value}"),
    ('{"results": {}, "group_subtasks": {"g": "t"}}', "key 'group_subtasks.g' should be a list"),
    ('{"results": {}, "config": {"model_args": 3}}', "key 'config.model_args' should be"),
    ('[1, 2, 3]', "expected a JSON object (lm-eval results), got a JSON array"),
    ('"results"', "expected a JSON object (lm-eval results), got a JSON string"),
])
def test_malformed_lmeval_results_file_is_rejected(cli, tmp_path, content, message):
    run = tmp_path / "runs" / "org__m"
    run.mkdir(parents=True)
    results = run / "results_2024-01-01T00-00-00.json"
    results.write_text(content)
    (run / "samples_t_2024-01-01T00-00-00.jsonl").write_text(
        '{"doc_id": 0, "doc": {}, "target": "1", "arguments": {}, "resps": [], '
        '"filtered_resps": [], "filter": "none", "metrics": ["acc"], "acc": 1.0}\n')
    before = file_bytes(Store(cli.store).table_path)
    error = one_error(cli("ingest", "lm-eval", tmp_path / "runs"))
    assert str(results) in error and message in error, error
    assert file_bytes(Store(cli.store).table_path) == before and not cli.store.exists()


def test_quiet_after_the_command_silences_logs_and_progress(cli, results):
    """-q is accepted after the subcommand too, and then nothing but warnings reaches
    stderr (no INFO lines, no progress bars)."""
    path, th = results
    loud = cli("ingest", "table", path, "--thresholds", th, "--store", cli.store / "a")
    assert loud.exit_code == 0 and "INFO" in loud.stderr
    quiet = cli("ingest", "table", path, "--thresholds", th, "--store", cli.store / "b", "-q")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == "" and "rows read" in quiet.stdout


def test_binary_or_non_utf8_prompts_file_is_one_error_naming_it(cli, results, tmp_path):
    path, th = results
    assert cli("ingest", "table", path, "--thresholds", th).exit_code == 0
    binary = tmp_path / "prompts.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    for command in ("recommend", "route"):
        error = one_error(cli(command, "--prompts", binary, "-q"))
        assert str(binary) in error and "binary" in error
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café au lait\n".encode("latin-1"))
    error = one_error(cli("recommend", "--prompts", latin))
    assert f"{latin} line 1" in error and "UTF-8" in error


def test_plan_labels_rounds_keep_their_samples_files_and_json_has_the_next_lines(
        cli, results, tmp_path):
    """Round 2 writes its own samples file (round 1's, named in the plan, stays); --json
    carries the then: and more: lines the human output prints."""
    path, th = results
    assert cli("ingest", "table", path, "--thresholds", th).exit_code == 0
    prompts = tmp_path / "new.txt"
    prompts.write_text("".join(f"new question {i}?\n" for i in range(12)))
    base = ["plan-labels", "--prompts", prompts, "--store", cli.store, "--n", "3"]
    human = cli(*base, "--out", tmp_path / "h")
    assert human.exit_code == 0, human.output
    lines = dict(x.split(": ", 1) for x in human.stdout.splitlines()
                 if x.startswith(("then: ", "more: ")))
    one = json.loads(cli(*base, "--out", tmp_path / "p", "--json").stdout)
    assert one["next_command"] == lines["then"].replace(str(tmp_path / "h"), str(tmp_path / "p"))
    assert one["more_command"] == lines["more"].replace(str(tmp_path / "h"), str(tmp_path / "p"))
    assert one["next_command"].startswith("lm-router recommend --prompts ")
    plan = tmp_path / "p.plan.json"
    two = json.loads(cli(*base, "--plan", plan, "--json").stdout)
    assert one["samples_file"] == str(tmp_path / "p.samples.json")
    assert two["samples_file"] == str(tmp_path / "p.samples.round2.json")
    rounds = json.loads(plan.read_text())["rounds"]
    assert [r["samples_file"] for r in rounds] == [one["samples_file"], two["samples_file"]]
    for result, r in zip((one, two), rounds):  # each round's file still holds its docs
        assert json.loads(Path(result["samples_file"]).read_text()) == {"new": r["docs"]}
    assert not set(one["docs"]) & set(two["docs"])


def test_limit_below_1_and_plan_without_labeled_are_usage_errors(cli, results, tmp_path):
    path, th = results
    assert cli("ingest", "table", path, "--thresholds", th).exit_code == 0
    for command in (["plan-labels", "--n", "3"], ["recommend"]):
        for limit in ("0", "-2"):
            result = cli(*command, "--task", "any_task", "--limit", limit,
                         "--store", cli.store)
            assert result.exit_code == 2 and "--limit" in result.output, result.output
    prompts = tmp_path / "new.txt"
    prompts.write_text("a question?\nanother?\n")
    assert cli("plan-labels", "--prompts", prompts, "--store", cli.store, "--n", "1",
               "--out", tmp_path / "p").exit_code == 0
    result = cli("recommend", "--prompts", prompts, "--plan", tmp_path / "p.plan.json")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--plan: it reports on the --labeled runs, and none were given" in result.output


@pytest.mark.parametrize("config, key", [
    ("predictor: {name: 5}", "predictor.name: must be a string"),
    ("predictor: {name: [a, b]}", "predictor.name: must be a string"),
    ("index: {kind: null}", "index.kind: must be a string"),
    ('embedder: {device: "cuda:0,"}', "embedder.device: empty device name"),
    ("predictor: {params: {n_neighbors: 0}}", "predictor.params.n_neighbors: must be >= 1"),
    ('predictor: {params: {n_neighbors: "x"}}', "predictor.params.n_neighbors: must be an"),
    ("predictor: {target: 5}", "predictor.target: must be one of correct, score"),
])
def test_bad_config_values_are_usage_errors_naming_the_key(cli, results, tmp_path, config, key):
    """Checked before any embedding or fitting: exit 2, no traceback, the config key (not a
    CLI option the user did not give)."""
    path, th = results
    assert cli("ingest", "table", path, "--thresholds", th).exit_code == 0
    (tmp_path / "c.yaml").write_text(config + "\n")
    result = cli("evaluate", "--config", tmp_path / "c.yaml")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert f"Error: {key}" in result.output and "--target" not in result.output
    assert not (cli.store / "embeddings").exists()


def _fake_result(target: str = "correct", tasks=("t1", "cost $^$", "a $x$ b"), kappa=7):
    """An EvaluationResult's fields the plots read; --target score has no S2/S3."""
    from types import SimpleNamespace

    deciders = ["s1", "stack"] if target == "score" else ["s1", "s2", "s3", "stack"]
    names = deciders + (["s3_true_p"] if target == "correct" else []) + ["bma", "oracle"]
    per_task = [{"task": t, "n": 4, "u": 0.1 * i,
                 **{d: {"model": "m1", "acc": 0.5, "pearson": 0.2} for d in names}}
                for i, t in enumerate(tasks)]
    return SimpleNamespace(
        rows={d: {"acc": 0.5, "acc_std": 0.0} for d in names}, per_task=per_task,
        alpha_sweep=[], n_tasks=len(tasks), n_models=2, to_dict=lambda: {"fake": True},
        settings={"deciders": deciders, "default": "stack", "kappa": kappa, "target": target})


@pytest.mark.parametrize("target", ["correct", "score"])
def test_plots_of_score_target_dollar_task_names_and_actual_kappa(tmp_path, caplog,
                                                                  monkeypatch, target):
    """--target score has no S3 (left out, logged); task names are not mathtext; the u axis
    names the kappa the evaluation used."""
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    from lm_router_plugin.evaluation.plots import write_plots

    xlabels = []
    set_xlabel = Axes.set_xlabel
    monkeypatch.setattr(Axes, "set_xlabel",
                        lambda self, label, **kw: xlabels.append(label)
                        or set_xlabel(self, label, **kw))
    with caplog.at_level("INFO", logger="lm_router_plugin"):
        written = write_plots(_fake_result(target), tmp_path / "figs")
    assert [p.name for p in written] == ["accuracy_vs_alpha.png", "pearson_vs_u.png",
                                         "per_task_accuracy.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)
    assert any("to 7 nearest reference inputs" in label for label in xlabels), xlabels
    left_out = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(left_out) == (2 if target == "score" else 0), left_out
    assert all("no S3 results" in m and "--target score" in m for m in left_out)


@pytest.mark.parametrize("bad", ["file/sub", "/proc/lm-router-x"])
def test_plot_folder_that_cannot_be_made_fails_before_the_evaluation(cli, tmp_path, bad):
    pytest.importorskip("matplotlib")
    (tmp_path / "file").write_text("in the way\n")
    folder = tmp_path / bad if bad.startswith("file") else Path(bad)
    # an empty store: the evaluation would fail (exit 1) had it run first
    result = cli("evaluate", "--plot", folder, "--store", tmp_path / "empty")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert f"--plot: cannot create the folder {folder}" in result.output


def test_quiet_silences_the_wrote_lines_of_plot(cli, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from lm_router_plugin import api

    monkeypatch.setattr(api, "evaluate", lambda *a, **kw: _fake_result())
    loud = cli("evaluate", "--plot", tmp_path / "a", "--json")
    assert loud.exit_code == 0, loud.output
    assert f"INFO lm_router_plugin.cli.commands: wrote {tmp_path / 'a'}" in loud.stderr
    quiet = cli("evaluate", "--plot", tmp_path / "b", "--json", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == "", quiet.stderr
    assert len(list((tmp_path / "b").iterdir())) == 3
