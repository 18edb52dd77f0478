"""plan-labels and recommend --labeled --plan (labels.py), on runs made by lm-eval itself:
the samples file plan-labels writes is fed to lm-eval's own CLI (``--samples``), and its
sample logs come back as the labels of the next recommend / plan-labels call."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TESTS, offline_env, one_error
from lm_router_plugin import Store
from lm_router_plugin.errors import InputError
from lm_router_plugin.persistence import fit_or_load
from lm_router_plugin.pool import rows_by_task
from lm_router_plugin.stacking import fit_switch
from lm_router_plugin.labels import (
    TaskDocs, check_labelled, labelled_matrix, load_plan, new_plan, verdict,
)

HELD_OUT = "toy_units"
REPLAY_MODELS = ("toy/math-whiz-7b", "toy/geo-buff-7b", "toy/generalist-70b", "toy/tiny-1b")
RUN_MODELS = ("toy/math-whiz-7b", "toy/generalist-70b")  # the candidates we "run" on the plan


# -- no lm-eval needed -------------------------------------------------------------------
def _docs() -> TaskDocs:
    return TaskDocs("quiz", "lm-eval", [("quiz_a", 3), ("quiz_b", 4)], [f"t{i}" for i in range(7)])


def _rows(records: list[tuple[str, str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame([{"task": t, "instance_id": i, "model": m, "correct": c,
                          "origin": f"runs/{t}.jsonl"} for t, i, m, c in records])


def test_samples_are_sorted_per_leaf_task():
    docs = _docs()
    assert docs.samples(np.array([6, 0, 2, 4])) == {"quiz_a": [0, 2], "quiz_b": [1, 3]}
    assert docs.index("quiz_b", 0) == 3 and docs.index("quiz_b", 4) is None
    assert docs.index("other", 0) is None


def test_labelled_rows_map_to_doc_positions():
    rows = _rows([("quiz_b", "1", "m1", 1), ("quiz_a", "2", "m0", 0), ("quiz_b", "1", "m0", 0),
                  ("quiz_a", "2", "unknown-model", 1)])
    docs, Y = labelled_matrix(rows, _docs(), ["m0", "m1"])
    assert docs.tolist() == [2, 4]
    np.testing.assert_array_equal(Y, [[0, np.nan], [0, 1]])


def test_labelled_rows_of_another_task_or_doc_are_errors():
    with pytest.raises(InputError, match=r"runs/toy_arith.jsonl: --labeled: holds task "
                                         r"'toy_arith', not 'quiz'"):
        check_labelled(_rows([("toy_arith", "0", "m0", 1)]), _docs())
    with pytest.raises(InputError, match="doc '5' of task 'quiz_a' is not among its 3 docs"):
        check_labelled(_rows([("quiz_a", "5", "m0", 1)]), _docs())


def test_rounds_keep_the_inclusion_probability_of_the_round_that_drew_a_doc(tmp_path):
    docs = _docs()
    plan = new_plan(docs, None, None)
    plan.add_round(np.array([1, 5]), np.array([.2, .6, .2, .3, .3, .6, .2]) * 1.0, seed=0,
                   requested=2, leaders=["m0"], n_labelled=0, samples_file="x")
    plan.add_round(np.array([0]), np.array([.5, 0, .1, .1, .1, 0, .2]), seed=0, requested=1,
                   leaders=["m0"], n_labelled=2, samples_file="x")
    assert plan.docs == [0, 1, 5] and len(plan.rounds) == 2
    assert plan.inclusion[1] == pytest.approx(.6) and plan.inclusion[5] == pytest.approx(.6)
    assert plan.inclusion[0] == pytest.approx(.5)
    # a labelled doc outside the plan: weighted at the plan's average rate (3 of 7 docs)
    assert plan.weights(np.array([1, 0, 3])) == pytest.approx([1 / .6, 1 / .5, 7 / 3])
    path = tmp_path / "p.plan.json"
    plan.save(path)
    again = load_plan(path, docs)
    assert again.docs == plan.docs and again.inclusion == plan.inclusion
    assert json.loads(path.read_text())["leaders"] == ["m0"]


def test_a_plan_of_another_task_or_size_is_an_error(tmp_path):
    path = tmp_path / "p.plan.json"
    new_plan(_docs(), None, None).save(path)
    other = TaskDocs("quiz2", "lm-eval", [("quiz_a", 3), ("quiz_b", 4)], ["t"] * 7)
    with pytest.raises(InputError, match="the plan is for task 'quiz', not 'quiz2'"):
        load_plan(path, other)
    smaller = TaskDocs("quiz", "lm-eval", [("quiz_a", 3), ("quiz_b", 2)], ["t"] * 5)
    with pytest.raises(InputError, match="made for 7 docs"):
        load_plan(path, smaller)
    (tmp_path / "s.json").write_text('{"quiz": [1, 2]}')
    with pytest.raises(InputError, match="not an lm-router plan file"):
        load_plan(tmp_path / "s.json", _docs())


def test_verdict_rule():
    assert verdict({"10": 0.006, "30": 0.01}).endswith("worth it (10 more add >= 0.5 points)")
    assert "only with 30 more" in verdict({"10": 0.001, "30": 0.02})
    assert "not worth it" in verdict({"10": 0.0, "30": 0.004})
    assert "not worth it" in verdict({"10": -0.01, "30": -0.002})  # measured: may be < 0
    line = verdict({"10": float("nan"), "30": float("nan")}, by="stacked switch")
    assert "not measurable (stacked switch)" in line


# -- real lm-eval runs -------------------------------------------------------------------
@pytest.fixture(scope="module")
def ref_store(lmeval_runs, tmp_path_factory) -> Path:
    """A store of the replay models' runs without the held-out task."""
    from click.testing import CliRunner

    from lm_router_plugin.cli import main

    base = tmp_path_factory.mktemp("plan")
    root = base / "runs"
    for model in REPLAY_MODELS:
        shutil.copytree(lmeval_runs.model_dir(model), root / model.replace("/", "__"))
    for path in root.glob(f"*/samples_{HELD_OUT}_*.jsonl"):
        path.unlink()
    store = base / "store"
    result = CliRunner().invoke(main, ["ingest", "lm-eval", str(root), "--store", str(store)])
    assert result.exit_code == 0, result.output
    return store


def _run_printed_commands(commands: list[str], models: tuple[str, ...], cwd: Path) -> None:
    """Run the printed ``lm_eval`` lines with the replay model in place of ``hf`` (lm-eval's
    own CLI, through tests/lmeval_replay.py which registers the model), in parallel."""
    procs = []
    for command in commands:
        args = shlex.split(command)
        model = args[args.index("--model_args") + 1].removeprefix("pretrained=")
        if model not in models:
            continue
        assert args[:3] == ["lm_eval", "--model", "hf"]
        argv = [sys.executable, str(TESTS / "lmeval_replay.py"), "--model", "replay"] + args[3:]
        procs.append(subprocess.Popen(argv, cwd=cwd, env=offline_env(),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    assert len(procs) == len(models)
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]


def _logged_doc_ids(runs: Path, model: str) -> list[int]:
    ids = set()
    for path in (runs / model.replace("/", "__")).glob(f"samples_{HELD_OUT}_*.jsonl"):
        ids |= {json.loads(line)["doc_id"] for line in path.read_text().splitlines()}
    return sorted(ids)


@pytest.mark.slow
def test_plan_run_with_lm_eval_recommend_and_plan_again(cli, ref_store, lmeval_runs, tmp_path):
    tasks = lmeval_runs.tasks_dir
    prefix = tmp_path / "units"
    base = ["--task", HELD_OUT, "--include-path", tasks, "--store", ref_store, "--seed", "3"]
    result = cli("plan-labels", *base, "--n", "8", "--out", prefix)
    assert result.exit_code == 0, result.output
    assert "lm_eval --model hf --model_args pretrained=toy/math-whiz-7b" in result.stdout
    assert f"then: lm-router recommend --task {HELD_OUT}" in result.stdout
    samples = json.loads(Path(f"{prefix}.samples.json").read_text())
    assert list(samples) == [HELD_OUT] and len(samples[HELD_OUT]) == 8
    assert samples[HELD_OUT] == sorted(set(samples[HELD_OUT]))
    plan = json.loads(Path(f"{prefix}.plan.json").read_text())
    assert plan["task"] == HELD_OUT and plan["n_docs"] == 30 and plan["seed"] == 3
    assert plan["docs"] == samples[HELD_OUT] and len(plan["inclusion"]) == 30
    assert sum(plan["inclusion"]) == pytest.approx(8)
    assert len(plan["leaders"]) == 3 and plan["lm_router_version"]

    # the same call again: same docs (seeded); refuses to overwrite the plan without --plan
    error = one_error(cli("plan-labels", *base, "--n", "8", "--out", prefix))
    assert "a plan already exists here" in error and "--plan" in error
    result = cli("plan-labels", *base, "--n", "8", "--out", tmp_path / "again", "--json")
    assert json.loads(result.stdout)["samples"] == samples

    # lm-eval itself runs the printed commands (replay model for hf) on exactly those docs
    commands = json.loads(result.stdout)["commands"]
    commands = [c.replace(str(tmp_path / "again"), str(prefix)) for c in commands]
    assert len(commands) == len(REPLAY_MODELS)
    _run_printed_commands(commands, RUN_MODELS, tmp_path)
    runs = Path(f"{prefix}-runs")
    for model in RUN_MODELS:
        assert _logged_doc_ids(runs, model) == samples[HELD_OUT]

    # recommend with the labels, weighted by the plan: estimates, P(best), expected gain
    result = cli("recommend", *base, "--labeled", runs, "--plan", f"{prefix}.plan.json",
                 "--json")
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout)
    assert {"choice", "bma", "fallback", "models", "estimates", "expected_gain"} <= set(rec)
    est = {e["model"]: e for e in rec["estimates"]}
    assert set(est) == set(REPLAY_MODELS)
    assert sum(e["p_best"] for e in est.values()) == pytest.approx(1.0)
    assert all(e["low"] <= e["acc"] <= e["high"] for e in est.values())
    assert {m: est[m]["n_labels"] for m in est} == {
        m: 8 if m in RUN_MODELS else 0 for m in REPLAY_MODELS}
    assert set(rec["expected_gain"]) == {"10", "30"} and rec["n_labelled_docs"] == 8
    assert rec["score"] == "stack"
    # the expected gain of the default decision: its switch for 8 + N labels against the
    # one for 8, each as it gained leave-one-task-out on the reference tasks
    assert rec["expected_gain_by"] == "stack"
    router = fit_or_load(Store(ref_store))
    rows_of = rows_by_task(np.asarray(router.task_of_), len(router.task_names_))

    def measured(n):
        return fit_switch(router.calibration_, np.ones(len(router.models_), bool),
                          sigma=router.sigma, n_labels=n, Y=router.Y_, rows_of=rows_of,
                          seed=router.seed).expected_gain

    for more in (10, 30):
        assert rec["expected_gain"][str(more)] == pytest.approx(measured(8 + more) - measured(8))
    # human output: the estimate table and the verdict with its rule
    result = cli("recommend", *base, "--labeled", runs, "--plan", f"{prefix}.plan.json")
    assert "P(best)" in result.stdout and "expected gain of 10 more labels" in result.stdout
    assert "(stacked switch, measured leave-one-task-out" in result.stdout
    # --score post decides with the posterior; the models are listed best estimate first
    result = cli("recommend", *base, "--labeled", runs, "--plan", f"{prefix}.plan.json",
                 "--score", "post", "--json")
    post = json.loads(result.stdout)
    assert post["score"] == "post" and post["choice"] in est
    assert [m["model"] for m in post["models"]] == [e["model"] for e in post["estimates"]]
    assert post["estimates"] == rec["estimates"]  # same seed, same numbers
    assert post["expected_gain_by"] == "posterior"
    # --score stack: the stacked switch fitted for 8 labels (or without them, if the inner
    # leave-one-task-out finds they do not pay); models listed by predicted gain
    result = cli("recommend", *base, "--labeled", runs, "--score", "stack", "--json")
    assert result.exit_code == 0, result.output
    stack = json.loads(result.stdout)
    assert stack["score"] == "stack" and stack["choice"] in est
    gains = [m["stack"] for m in stack["models"]]
    assert gains == sorted(gains, reverse=True) and 0.0 in gains  # BMA's gain is 0
    assert "with 8 labelled docs" in stack["reason"] and 0 <= stack["p_choice_beats_bma"] <= 1
    # the planned docs' accuracy is weighted by 1 / inclusion probability (when used)
    result = cli("recommend", *base, "--labeled", runs, "--plan", f"{prefix}.plan.json",
                 "--score", "stack", "--json")
    assert result.exit_code == 0, result.output
    reason = json.loads(result.stdout)["reason"]
    assert ("weighted by the plan's inclusion probabilities" in reason) != ("not used" in reason)

    # round 2: the labelled docs are excluded, the plan grows
    result = cli("plan-labels", *base, "--n", "6", "--labeled", runs, "--plan",
                 f"{prefix}.plan.json", "--json")
    assert result.exit_code == 0, result.output
    second = json.loads(result.stdout)
    assert second["round"] == 2 and second["n_labelled"] == 8 and len(second["docs"]) == 6
    assert not set(second["docs"]) & set(samples[HELD_OUT])
    plan2 = json.loads(Path(f"{prefix}.plan.json").read_text())
    assert len(plan2["rounds"]) == 2 and plan2["docs"] == sorted(plan["docs"] + second["docs"])
    assert plan2["output_path"] == second["output_path"] == str(runs)
    for doc in plan["docs"]:  # the first round's docs keep their round's probability
        assert plan2["inclusion"][doc] == pytest.approx(plan["inclusion"][doc])
    assert json.loads(Path(f"{prefix}.samples.json").read_text()) == {HELD_OUT: second["docs"]}

    # round 2 run into the same output folder: every run counts (not only the newest)
    _run_printed_commands(second["commands"], RUN_MODELS[:1], tmp_path)
    result = cli("recommend", *base, "--labeled", runs, "--plan", f"{prefix}.plan.json",
                 "--json")
    est = {e["model"]: e for e in json.loads(result.stdout)["estimates"]}
    assert est[RUN_MODELS[0]]["n_labels"] == 14 and est[RUN_MODELS[1]]["n_labels"] == 8


@pytest.mark.slow
def test_bad_inputs_give_one_clear_error(cli, ref_store, lmeval_runs, tmp_path):
    tasks = lmeval_runs.tasks_dir
    base = ["--task", HELD_OUT, "--include-path", tasks, "--store", ref_store]
    result = cli("plan-labels", *base, "--n", "0")
    assert result.exit_code == 2 and "--n" in result.output and "Traceback" not in result.output
    # a plan of another task
    prefix = tmp_path / "pct"
    result = cli("plan-labels", "--task", "toy_percent", "--include-path", tasks, "--store",
                 ref_store, "--n", "3", "--out", prefix)
    assert result.exit_code == 0, result.output
    error = one_error(cli("plan-labels", *base, "--n", "3", "--plan", f"{prefix}.plan.json"))
    assert "the plan is for task 'toy_percent', not 'toy_units'" in error
    other = lmeval_runs.samples_file(REPLAY_MODELS[0], "toy_arith")
    error = one_error(cli("recommend", *base, "--labeled", other,
                          "--plan", f"{prefix}.plan.json"))
    assert "the plan is for task 'toy_percent'" in error
    # a labelled run of another task, in recommend and in plan-labels
    error = one_error(cli("recommend", *base, "--labeled", other))
    assert "holds task 'toy_arith', not 'toy_units'" in error and other.name in error
    error = one_error(cli("plan-labels", *base, "--n", "3", "--labeled", other,
                          "--out", tmp_path / "x"))
    assert "holds task 'toy_arith'" in error
    assert not (tmp_path / "x.plan.json").exists()


@pytest.mark.slow
def test_plan_labels_for_a_prompts_file(cli, ref_store, tmp_path):
    prompts = tmp_path / "new.txt"
    prompts.write_text("".join(f"Question: What is {i} plus {i + 3}?\nAnswer:\n".replace(
        "\nAnswer:\n", " Answer:\n") for i in range(12)))
    result = cli("plan-labels", "--prompts", prompts, "--n", "4", "--store", ref_store,
                 "--out", tmp_path / "new", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["commands"] == [] and len(out["docs"]) == 4 and max(out["docs"]) < 12
    assert json.loads((tmp_path / "new.samples.json").read_text()) == {"new": out["docs"]}
