"""plan-labels and recommend --labeled (labels.py), on runs made by lm-eval itself: the
samples file plan-labels writes (a seeded random sample, stratified over the task's leaf
tasks) is fed to lm-eval's own CLI (``--samples``), and its sample logs come back as the
labels of the next recommend / plan-labels call, run as plan-labels printed them."""

from __future__ import annotations

import json
import re
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
from lm_router_plugin.router.persistence import fit_or_load
from lm_router_plugin.router.pool import rows_by_task
from lm_router_plugin.router.stacking import fit_switch
from lm_router_plugin.settings import load_settings
from lm_router_plugin.task.labels import (
    PLAN_VERSION,
    TaskDocs,
    check_labelled,
    labelled_matrix,
    load_plan,
    new_plan,
    stratified_sample,
    verdict,
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


def test_rounds_add_docs_and_the_plan_is_saved_atomically(tmp_path):
    docs = _docs()
    plan = new_plan(docs, None, None)
    plan.add_round(np.array([1, 5]), seed=3, requested=2, n_labelled=0, samples_file="x")
    plan.add_round(np.array([0]), seed=3, requested=1, n_labelled=2, samples_file="x")
    assert plan.docs == [0, 1, 5] and plan.n == 3 and len(plan.rounds) == 2
    assert [r["docs"] for r in plan.rounds] == [[1, 5], [0]]
    assert [r["labelled_before"] for r in plan.rounds] == [0, 2]
    path = tmp_path / "p.plan.json"
    plan.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["p.plan.json"]  # no .tmp left
    data = json.loads(path.read_text())
    assert data["version"] == PLAN_VERSION == 2 and data["n"] == 3
    assert not {"inclusion", "leaders", "weights"} & set(data)  # retired with version 2
    again = load_plan(path, docs)
    assert again.docs == plan.docs and again.rounds == plan.rounds


# -- the draw: a seeded random sample, stratified over the leaf tasks ----------------------
LEAVES = [("a", 10), ("b", 30), ("c", 20)]


def _leaf_counts(drawn: np.ndarray, leaves=LEAVES) -> list[int]:
    bounds = np.cumsum([0] + [size for _, size in leaves])
    return [int(((drawn >= lo) & (drawn < hi)).sum()) for lo, hi in zip(bounds[:-1], bounds[1:])]


def test_each_leaf_gets_its_proportional_share():
    none = np.zeros(60, dtype=bool)
    drawn = stratified_sample(LEAVES, 12, none, np.random.default_rng(0))
    assert len(drawn) == 12 and len(set(drawn.tolist())) == 12
    assert drawn.tolist() == sorted(drawn.tolist()) and drawn.dtype == np.int64
    assert _leaf_counts(drawn) == [2, 6, 4]  # 12 x 10/60, 30/60, 20/60
    # shares that are not whole: floors plus the largest remainders (7 x 1/6, 1/2, 1/3)
    for seed in range(20):
        counts = _leaf_counts(stratified_sample(LEAVES, 7, none, np.random.default_rng(seed)))
        assert counts == [1, 4, 2]  # remainders .17, .5, .33: b gets the extra doc
    # equal remainders: the extra doc goes to either leaf, at random
    seen = {tuple(_leaf_counts(stratified_sample([("x", 5), ("y", 5)], 3, np.zeros(10, bool),
                                                 np.random.default_rng(s)),
                               [("x", 5), ("y", 5)])) for s in range(30)}
    assert seen == {(1, 2), (2, 1)}


def test_excluded_docs_are_never_drawn_and_shares_follow_the_available_docs():
    exclude = np.zeros(60, dtype=bool)
    exclude[10:35] = True  # 25 of b's 30 docs labelled or planned before
    exclude[[0, 2, 4]] = True
    for seed in range(10):
        drawn = stratified_sample(LEAVES, 8, exclude, np.random.default_rng(seed))
        assert not exclude[drawn].any() and len(drawn) == 8
        assert _leaf_counts(drawn) == [2, 1, 5]  # available 7, 5, 20 of 32
    # a whole leaf excluded: none from it
    exclude = np.zeros(60, dtype=bool)
    exclude[:10] = True
    drawn = stratified_sample(LEAVES, 10, exclude, np.random.default_rng(1))
    assert _leaf_counts(drawn) == [0, 6, 4]


def test_the_draw_is_seeded_and_never_more_than_available():
    exclude = np.zeros(60, dtype=bool)
    exclude[::3] = True
    one = stratified_sample(LEAVES, 9, exclude, np.random.default_rng([3, 1]))
    assert one.tolist() == stratified_sample(LEAVES, 9, exclude,
                                             np.random.default_rng([3, 1])).tolist()
    others = {tuple(stratified_sample(LEAVES, 9, exclude, np.random.default_rng([s, 1])))
              for s in range(5)}
    assert len(others) > 1  # another seed, another draw
    # n larger than what is left: every available doc, once
    every = stratified_sample(LEAVES, 1000, exclude, np.random.default_rng(0))
    assert every.tolist() == np.flatnonzero(~exclude).tolist()
    assert stratified_sample(LEAVES, 5, np.ones(60, bool), np.random.default_rng(0)).size == 0


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


def test_a_plan_of_another_kind_folder_or_with_docs_out_of_range_is_an_error(tmp_path):
    path = tmp_path / "p.plan.json"
    docs = TaskDocs("quiz", "lm-eval", [("quiz_a", 3), ("quiz_b", 4)], ["t"] * 7,
                    include_path=str(tmp_path / "tasks"))
    new_plan(docs, docs.include_path, None).save(path)
    assert load_plan(path, docs).include_path == docs.include_path
    for other, message in [(None, "made with --include-path .*tasks, not \\(none\\)"),
                           (str(tmp_path / "tasks2"), "not .*tasks2: another folder")]:
        with pytest.raises(InputError, match=message):
            load_plan(path, TaskDocs("quiz", "lm-eval", docs.leaves, docs.texts,
                                     include_path=other))
    prompts = TaskDocs("quiz", "prompts", [("quiz", 7)], ["t"] * 7)
    with pytest.raises(InputError, match="made for an lm-eval task .*not a prompts file"):
        load_plan(path, prompts)
    data = json.loads(path.read_text())
    for bad in ([7], [-1]):  # -1 would wrap to the last doc
        data["docs"] = bad
        path.write_text(json.dumps(data))
        with pytest.raises(InputError, match=f"'docs' holds {bad[0]}, not a doc index in "
                                             r"\[0, 7\)"):
            load_plan(path, docs)


def _logged(doc_id: int, doc: dict, hashed: bool = False) -> str:
    """A sample log line as lm-eval writes it (with the doc, or only lm-eval's doc_hash)."""
    from lm_eval.utils import handle_non_serializable, hash_string

    line = {"doc_id": doc_id, "filter": "none", "acc": 1.0}
    if hashed:
        line["doc_hash"] = hash_string(json.dumps(doc, indent=2, ensure_ascii=False,
                                                  default=handle_non_serializable))
    else:
        line["doc"] = doc
    return json.dumps(line) + "\n"


def test_labels_of_another_version_of_the_task_are_an_error(tmp_path):
    """A labelled line's doc (else its doc_hash) must be the task's doc at its doc_id."""
    pytest.importorskip("lm_eval")
    docs_a = [{"q": f"question {i}", "n": i} for i in range(3)]
    docs = TaskDocs("quiz", "lm-eval", [("quiz_a", 3)], ["t"] * 3, docs=docs_a)
    log = tmp_path / "samples_quiz_a_2024.jsonl"
    rows = _rows([("quiz_a", "0", "m0", 1), ("quiz_a", "2", "m0", 0)])
    rows["origin"] = str(log)
    for hashed in (False, True):
        log.write_text(_logged(0, docs_a[0], hashed) + _logged(2, docs_a[2], hashed))
        docs.checked.clear()
        assert check_labelled(rows, docs).tolist() == [0, 2]
        # the task's data reordered since the runs: doc 2 is now another doc
        log.write_text(_logged(0, docs_a[0], hashed) + _logged(2, docs_a[1], hashed))
        docs.checked.clear()
        with pytest.raises(InputError, match=f"{log} line 2: --labeled: doc_id 2 is another "
                                             "doc than doc 2 of task 'quiz_a'.*another "
                                             "version of the task"):
            check_labelled(rows, docs)
    with pytest.raises(InputError, match="logged q=\"question 1\", the task's \"question 2\""):
        docs.checked.clear()
        log.write_text(_logged(2, docs_a[1]))
        check_labelled(rows, docs)


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

    from lm_router_plugin.cli.commands import main

    base = tmp_path_factory.mktemp("plan")
    root = base / "runs"
    for model in REPLAY_MODELS:
        shutil.copytree(lmeval_runs.model_dir(model), root / model.replace("/", "__"))
    for path in root.glob(f"*/samples_{HELD_OUT}_*.jsonl"):
        path.unlink()
    store = base / "store"
    result = CliRunner().invoke(main, ["ingest", "lm-eval", str(root), "--store", str(store)])
    assert result.exit_code == 0, result.output
    # 5 lm-eval tasks are fewer than the stacked switch needs (MIN_STACK_TASKS = 6): two
    # more reference tasks of the same models from a results table, so the default decision
    # is the stacked switch itself (a store may hold tasks from several harnesses)
    rng = np.random.default_rng(11)
    skill = {m: rng.uniform(0.2, 0.9, 2) for m in REPLAY_MODELS}
    table = pd.DataFrame([
        {"task": task, "instance_id": str(i), "model": m,
         "input_text": f"{task.replace('_', ' ')} question {i}: which of {i} and {i + 7}?",
         "correct": int(rng.random() < skill[m][t])}
        for t, task in enumerate(("extra_logic", "extra_trivia")) for i in range(20)
        for m in REPLAY_MODELS])
    table.to_csv(base / "extra.csv", index=False)
    result = CliRunner().invoke(main, ["ingest", "table", str(base / "extra.csv"),
                                       "--store", str(store)])
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


def seed_config(folder: Path, seed: int = 3) -> Path:
    """A --config YAML that sets the research constant ``decision.seed``."""
    path = folder / f"seed{seed}.yaml"
    path.write_text(f"decision: {{seed: {seed}}}\n")
    return path


def printed_command(stdout: str, key: str) -> list[str]:
    """The words of the ``key: lm-router ...`` line plan-labels printed, without
    "lm-router" (shell words, as a shell would split them)."""
    (line,) = [x for x in stdout.splitlines() if x.startswith(f"{key}: ")]
    words = shlex.split(line[len(key) + 2:])
    assert words[0] == "lm-router", line
    return words[1:]


def printed_lm_eval(stdout: str) -> list[str]:
    return [x.strip() for x in stdout.splitlines() if x.strip().startswith("lm_eval ")]


def run_printed(words: list[str]):
    """Run an ``lm-router`` line as printed (in this process, in the current directory)."""
    from click.testing import CliRunner

    from lm_router_plugin.cli.commands import main

    return CliRunner().invoke(main, words, catch_exceptions=False)


@pytest.mark.slow
def test_plan_run_with_lm_eval_recommend_and_plan_again(cli, ref_store, lmeval_runs, tmp_path,
                                                         monkeypatch):
    """The whole loop with relative paths, every next step run exactly as printed."""
    monkeypatch.chdir(tmp_path)
    tasks = lmeval_runs.tasks_dir
    config = seed_config(Path("."))
    base = ["--task", HELD_OUT, "--include-path", tasks, "--store", ref_store]
    result = cli("plan-labels", *base, "--config", config, "--n", "8", "--out", "units")
    assert result.exit_code == 0, result.output
    assert "a random sample, stratified over the task's subtasks; seed 3" in result.stdout
    assert "lm_eval --model hf --model_args pretrained=toy/math-whiz-7b" in result.stdout
    samples = json.loads(Path("units.samples.json").read_text())
    assert list(samples) == [HELD_OUT] and len(samples[HELD_OUT]) == 8
    assert samples[HELD_OUT] == sorted(set(samples[HELD_OUT]))
    plan = json.loads(Path("units.plan.json").read_text())
    assert plan["task"] == HELD_OUT and plan["n_docs"] == 30 and plan["version"] == 2
    assert plan["docs"] == samples[HELD_OUT] and plan["lm_router_version"]
    assert [r["seed"] for r in plan["rounds"]] == [3] and plan["output_path"] == "units-runs"
    assert not {"inclusion", "leaders", "weights"} & set(plan)
    assert not list(tmp_path.rglob("*.tmp"))  # both files written atomically

    # the same call again: refuses to overwrite the plan; with another --out the same docs
    # (seeded); another seed, another draw
    error = one_error(cli("plan-labels", *base, "--config", config, "--n", "8",
                          "--out", "units"))
    assert "a plan already exists here" in error and "--plan" in error
    again = cli("plan-labels", *base, "--config", config, "--n", "8", "--out", "again",
                "--json")
    assert json.loads(again.stdout)["samples"] == samples
    other = cli("plan-labels", *base, "--config", seed_config(Path("."), 4), "--n", "8",
                "--out", "other", "--json")
    assert json.loads(other.stdout)["seed"] == 4
    assert json.loads(other.stdout)["samples"] != samples

    # lm-eval itself runs the printed commands (replay model for hf) on exactly those docs
    commands = printed_lm_eval(result.stdout)
    assert len(commands) == len(REPLAY_MODELS)
    _run_printed_commands(commands, RUN_MODELS, tmp_path)
    runs = Path("units-runs")
    for model in RUN_MODELS:
        assert _logged_doc_ids(runs, model) == samples[HELD_OUT]

    # the printed `then:` line runs as printed: the labels are read, 8 docs
    then = printed_command(result.stdout, "then")
    assert then[:3] == ["recommend", "--task", HELD_OUT]
    assert then[then.index("--labeled") + 1] == "units-runs"
    assert then[then.index("--config") + 1] == str(config)
    shown = run_printed(then)
    assert shown.exit_code == 0, shown.output
    assert "label posterior: zero-label prediction + 8 labelled docs" in shown.stdout
    assert "P(best)" in shown.stdout and "expected gain of 10 more labels" in shown.stdout
    assert "(stacked switch, measured leave-one-task-out" in shown.stdout
    result_json = run_printed(then + ["--json"])
    assert result_json.exit_code == 0, result_json.output
    rec = json.loads(result_json.stdout)
    assert rec["n_labelled_docs"] == 8 and rec["score"] == "stack"
    assert {"choice", "bma", "fallback", "models", "estimates", "expected_gain"} <= set(rec)
    est = {e["model"]: e for e in rec["estimates"]}
    assert set(est) == set(REPLAY_MODELS)
    assert sum(e["p_best"] for e in est.values()) == pytest.approx(1.0)
    assert all(e["low"] <= e["acc"] <= e["high"] for e in est.values())
    assert {m: est[m]["n_labels"] for m in est} == {
        m: 8 if m in RUN_MODELS else 0 for m in REPLAY_MODELS}
    # the stacked switch fitted for 8 labels decides (or finds on the reference tasks that
    # 8 labels do not pay); the models: its choice first, then by predicted gain
    assert "8 labelled docs" in rec["reason"] and 0 <= rec["p_choice_beats_bma"] <= 1
    assert rec["models"][0]["model"] == rec["choice"]
    gains = [m["stack"] for m in rec["models"]]
    assert gains[1:] == sorted(gains[1:], reverse=True) and 0.0 in gains  # BMA's gain is 0
    assert [m["score"] for m in rec["models"]] == gains
    # the expected gain of the default decision: its switch for 8 + N labels against the
    # one for 8, each as it gained leave-one-task-out on the reference tasks (seed 3)
    assert rec["expected_gain_by"] == "stack" and set(rec["expected_gain"]) == {"10", "30"}
    router = fit_or_load(Store(ref_store), **load_settings(config).router_params())
    assert router.seed == 3
    rows_of = rows_by_task(np.asarray(router.task_of_), len(router.task_names_))

    def measured(n):
        return fit_switch(router.calibration_, np.ones(len(router.models_), bool),
                          sigma=router.sigma, n_labels=n, Y=router.Y_, rows_of=rows_of,
                          seed=router.seed).expected_gain

    assert rec["n_inputs"] == 30 - 8  # the unlabelled docs: 30 more labels cannot be had
    assert rec["expected_gain"]["30"] is None
    assert rec["expected_gain"]["10"] == pytest.approx(measured(8 + 10) - measured(8))
    # the paper's S3 with the same labels: the same posterior report, its own gain source
    s3 = json.loads(run_printed(then + ["--score", "s3", "--json"]).stdout)
    assert s3["score"] == s3["decided_by"] == "s3" and s3["choice"] in est
    assert s3["estimates"] == rec["estimates"] and s3["expected_gain_by"] == "posterior"
    assert s3["n_labelled_docs"] == 8

    # round 2: the printed `more:` line (as many docs as this round, here asked for 6 instead
    # of 8): the labelled docs are excluded, the plan grows
    more = printed_command(result.stdout, "more")
    assert more[:1] == ["plan-labels"] and more[more.index("--n") + 1] == "8"
    assert more[more.index("--plan") + 1] == "units.plan.json"
    assert more[more.index("--labeled") + 1] == "units-runs"
    more[more.index("--n") + 1] = "6"
    second = run_printed(more)
    assert second.exit_code == 0, second.output
    assert "round 2 for toy_units: 6 of the 22 docs left to label (30 in the task" in second.stdout
    assert "8 labelled and 8 planned before" in second.stdout
    plan2 = json.loads(Path("units.plan.json").read_text())
    docs2 = plan2["rounds"][1]["docs"]
    assert len(plan2["rounds"]) == 2 and len(docs2) == 6
    assert not set(docs2) & set(samples[HELD_OUT])
    assert plan2["docs"] == sorted(plan["docs"] + docs2)
    assert [r["seed"] for r in plan2["rounds"]] == [3, 3]
    assert plan2["output_path"] == "units-runs"
    # round 2 has its own samples file; round 1's, named in the plan, is kept
    assert json.loads(Path("units.samples.json").read_text()) == samples
    assert json.loads(Path("units.samples.round2.json").read_text()) == {HELD_OUT: docs2}
    assert [r["samples_file"] for r in plan2["rounds"]] == [
        "units.samples.json", "units.samples.round2.json"]
    assert all("--samples units.samples.round2.json" in c for c in printed_lm_eval(
        second.stdout))
    assert not list(tmp_path.rglob("*.tmp"))
    assert printed_command(second.stdout, "then") == then

    # round 2 run into the same output folder: every run counts (not only the newest)
    _run_printed_commands(printed_lm_eval(second.stdout), RUN_MODELS[:1], tmp_path)
    rec2 = json.loads(run_printed(printed_command(second.stdout, "then") + ["--json"]).stdout)
    est = {e["model"]: e for e in rec2["estimates"]}
    assert est[RUN_MODELS[0]]["n_labels"] == 14 and est[RUN_MODELS[1]]["n_labels"] == 8
    assert rec2["n_labelled_docs"] == 14


@pytest.mark.slow
def test_a_group_task_is_drawn_per_subtask(cli, ref_store, lmeval_runs, tmp_path):
    """toy_quiz (conftest's group of toy_history and toy_science, 30 docs each): each
    subtask gets its share; a labelled subtask is left out."""
    base = ["--task", "toy_quiz", "--include-path", lmeval_runs.tasks_dir, "--store",
            ref_store]
    result = cli("plan-labels", *base, "--n", "10", "--out", tmp_path / "quiz", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {leaf: len(ids) for leaf, ids in out["samples"].items()} == {
        "toy_history": 5, "toy_science": 5}
    assert all(0 <= i < 30 for ids in out["samples"].values() for i in ids)
    assert all("--tasks toy_history,toy_science" in c for c in out["commands"])
    plan = json.loads((tmp_path / "quiz.plan.json").read_text())
    assert plan["leaves"] == [{"task": "toy_history", "n_docs": 30},
                              {"task": "toy_science", "n_docs": 30}]
    odd = json.loads(cli("plan-labels", *base, "--n", "7", "--out", tmp_path / "odd",
                         "--json").stdout)
    assert sorted(len(ids) for ids in odd["samples"].values()) == [3, 4]
    # every toy_science doc labelled already: all 7 come from toy_history
    science = lmeval_runs.samples_file(REPLAY_MODELS[0], "toy_science")
    result = cli("plan-labels", *base, "--n", "7", "--labeled", science, "--out",
                 tmp_path / "rest", "--json")
    assert result.exit_code == 0, result.output
    rest = json.loads(result.stdout)
    assert list(rest["samples"]) == ["toy_history"] and len(rest["samples"]["toy_history"]) == 7
    assert rest["n_labelled"] == 30


@pytest.mark.slow
def test_bad_inputs_give_one_clear_error(cli, ref_store, lmeval_runs, tmp_path):
    tasks = lmeval_runs.tasks_dir
    base = ["--task", HELD_OUT, "--include-path", tasks, "--store", ref_store]
    result = cli("plan-labels", *base, "--n", "0")
    assert result.exit_code == 2 and "--n" in result.output and "Traceback" not in result.output
    # retired options and names are usage errors (exit 2)
    assert cli("plan-labels", *base, "--n", "3", "--seed", "3").exit_code == 2
    assert cli("recommend", *base, "--plan", tmp_path).exit_code == 2  # a folder
    result = cli("recommend", *base, "--score", "post")
    assert result.exit_code == 2 and "Unknown decider 'post'" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("decision: {seed: -1}\n")
    result = cli("plan-labels", *base, "--n", "3", "--config", bad, "--out", tmp_path / "b")
    assert result.exit_code == 2 and "seed" in result.output
    assert not (tmp_path / "b.plan.json").exists()
    # a plan of another task
    prefix = tmp_path / "pct"
    result = cli("plan-labels", "--task", "toy_percent", "--include-path", tasks, "--store",
                 ref_store, "--n", "3", "--out", prefix)
    assert result.exit_code == 0, result.output
    error = one_error(cli("plan-labels", *base, "--n", "3", "--plan", f"{prefix}.plan.json"))
    assert "the plan is for task 'toy_percent', not 'toy_units'" in error
    other = lmeval_runs.samples_file(REPLAY_MODELS[0], HELD_OUT)
    error = one_error(cli("recommend", *base, "--labeled", other, "--plan",
                          f"{prefix}.plan.json"))
    assert "the plan is for task 'toy_percent', not 'toy_units'" in error
    result = cli("recommend", *base, "--plan", f"{prefix}.plan.json")  # a usage error
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--plan: it reports on the --labeled runs, and none were given" in result.output
    # a labelled run of another task, in recommend and in plan-labels
    other = lmeval_runs.samples_file(REPLAY_MODELS[0], "toy_arith")
    error = one_error(cli("recommend", *base, "--labeled", other))
    assert "holds task 'toy_arith', not 'toy_units'" in error and other.name in error
    error = one_error(cli("plan-labels", *base, "--n", "3", "--labeled", other,
                          "--out", tmp_path / "x"))
    assert "holds task 'toy_arith'" in error
    assert not (tmp_path / "x.plan.json").exists()


@pytest.mark.slow
def test_labels_from_another_version_of_the_task_are_one_error(cli, ref_store, lmeval_runs,
                                                                tmp_path):
    """lm-eval's logs of the task, and the task's JSONL reordered since: its doc_ids now name
    other docs, so the labels would join the wrong docs. A plan is kept to its folder."""
    tasks = tmp_path / "tasks"
    shutil.copytree(lmeval_runs.tasks_dir, tasks)
    data = tasks / "router_toy" / f"{HELD_OUT}.jsonl"
    data.write_text("".join(reversed(data.read_text().splitlines(keepends=True))))
    log = lmeval_runs.samples_file(REPLAY_MODELS[0], HELD_OUT)
    for command in (["plan-labels", "--n", "3", "--out", tmp_path / "p"], ["recommend"]):
        error = one_error(cli(*command, "--task", HELD_OUT, "--include-path", tasks,
                              "--store", ref_store, "--labeled", log))
        assert re.search(rf"{re.escape(str(log))} line \d+: --labeled: doc_id \d+ is "
                         "another doc than doc", error), error
        assert "the logs come from another version of the task" in error
    assert not (tmp_path / "p.plan.json").exists()
    # the task the logs were run on: every labelled doc is its own
    from lm_router_plugin.api import read_labeled
    from lm_router_plugin.task.labels import task_docs

    rows = read_labeled(Store(ref_store), [log])
    assert sorted(set(check_labelled(rows, task_docs(HELD_OUT, lmeval_runs.tasks_dir)))) == \
        list(range(30))
    ok = cli("plan-labels", "--task", HELD_OUT, "--include-path", lmeval_runs.tasks_dir,
             "--store", ref_store, "--n", "3", "--out", tmp_path / "q")
    assert ok.exit_code == 0, ok.output
    error = one_error(cli("plan-labels", "--task", HELD_OUT, "--include-path", tasks,
                          "--store", ref_store, "--n", "3", "--plan", tmp_path / "q.plan.json"))
    assert f"the plan was made with --include-path {lmeval_runs.tasks_dir}, not {tasks}" \
        in error


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
