"""The ends of the labelling workflow a new user reaches: every doc of the new task
labelled (the accuracies are then known, not predicted), the last round of plan-labels (no
further round to print), fewer docs left than the "more labels" figures assume, a new task
whose own runs were ingested into the store, and an lm-eval line that only Python's json
reads (a lone surrogate: still a damaged line). Real stores (the example runs lm-eval wrote,
ingest table), the real static embedder."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from conftest import one_error
from test_api_arguments import _store

from lm_router_plugin import api
from lm_router_plugin.router.persistence import fit_or_load
from lm_router_plugin.store.store import Store

REPO = Path(__file__).resolve().parents[1]
STATIC = {"embedder": {"name": "static"}}
PROMPTS = ["arith question about sums", "units question about metres",
           "geo question about rivers"]


def _labels(models: list[str], n_docs: int, correct: dict[str, list[int]]) -> pd.DataFrame:
    """Labelled rows of prompts 0..n_docs-1 (instance_id = prompt index) for ``models``."""
    return pd.DataFrame([{"task": "prompts", "instance_id": str(i), "model": m,
                          "metric": "acc", "score": float(correct[m][i]),
                          "correct": correct[m][i]}
                         for m in models for i in range(n_docs)])


def test_every_doc_labelled_reports_the_measured_accuracies(cli, tmp_path):
    store = Store(_store(cli, tmp_path))
    router = fit_or_load(store, embedder="static")
    models = list(router.models_)
    correct = {"org/big-70b": [1, 0, 0], "org/math-8b": [1, 1, 1], "org/small-4b": [0, 0, 1]}
    rec = router.recommend(PROMPTS, labeled=_labels(models, 3, correct), store=store)
    assert rec.decided_by == "labels" and rec.choice == "org/math-8b"
    assert rec.n_inputs == 0 and rec.n_labelled_docs == 3
    assert [(e["model"], e["acc"], e["low"], e["high"]) for e in rec.estimates][0] == (
        "org/math-8b", 1.0, 1.0, 1.0)
    assert set(rec.expected_gain.values()) == {0.0}
    assert "every doc of the task is labelled (3): nothing left to label" == rec.labels_verdict
    assert "has the highest accuracy on them" in rec.reason
    # one doc unlabelled: a prediction again, and no gain of more labels than docs left
    rec = router.recommend(PROMPTS, labeled=_labels(models, 2, correct), store=store)
    assert rec.decided_by != "labels" and rec.n_inputs == 1
    assert rec.expected_gain["10"] is None and rec.expected_gain["30"] is None
    assert rec.labels_verdict == "only 1 docs of the task are left to label (fewer than 10)"


def test_the_last_round_of_plan_labels_prints_no_further_round(cli, tmp_path):
    store = _store(cli, tmp_path)
    prompts = tmp_path / "new.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    first = api.plan_labels(store, n=2, prompts_file=prompts, out=tmp_path / "p",
                            settings=STATIC)
    assert first.n_open == 3 and first.more_command
    last = api.plan_labels(store, n=2, prompts_file=prompts, plan=tmp_path / "p.plan.json",
                           settings=STATIC)
    assert last.n_open == 1 and last.docs == [i for i in range(3) if i not in first.docs]
    assert last.more_command == ""
    result = cli("plan-labels", "--prompts", prompts, "--n", "1", "--plan",
                 tmp_path / "p.plan.json", "--store", store)
    assert result.exit_code == 1 and "nothing left to plan" in result.output


def test_a_new_task_already_in_the_store_is_named(cli, tmp_path, caplog, monkeypatch):
    store = tmp_path / "store"
    assert cli("ingest", "lm-eval", REPO / "examples" / "runs", store_dir=store).exit_code == 0
    monkeypatch.setattr(logging.getLogger("lm_router_plugin"), "propagate", True)
    with caplog.at_level("WARNING", logger="lm_router_plugin"):
        api.recommend(store, task="toy_arith", include_path=REPO / "task_configs",
                      settings=STATIC)
    assert "toy_arith is in the store as reference task" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lm_router_plugin"):
        api.recommend(store, task="toy_percent", include_path=REPO / "task_configs",
                      settings=STATIC)
    assert "in the store as reference task" not in caplog.text


def test_a_lone_surrogate_is_still_a_damaged_line(cli, tmp_path):
    """Only a bare NaN / Infinity takes Python's json parser (lm-eval writes them); a lone
    surrogate escape, which that parser accepts, stays orjson's 'not valid JSON'."""
    runs = tmp_path / "runs"
    shutil.copytree(REPO / "examples" / "runs" / "toy__tiny-1b", runs / "toy__tiny-1b")
    (path,) = (runs / "toy__tiny-1b").glob("samples_toy_arith_*.jsonl")
    lines = path.read_text().splitlines()
    record = json.loads(lines[0])
    record.pop("prompt_hash", None)
    record["arguments"]["gen_args_0"]["arg_0"] += "\ud83d"
    lines[0] = json.dumps(record)  # writes the escape \ud83d, as Python does
    path.write_text("\n".join(lines) + "\n")
    message = one_error(cli("ingest", "lm-eval", runs))
    assert "line 1: not valid JSON" in message


def test_disjoint_models_of_a_regrouped_task_keep_their_instances_apart():
    from lm_router_plugin.evaluation.protocol import regroup_tasks

    table = pd.DataFrame({"task": ["A"] * 2 + ["B"] * 2, "instance_id": ["0", "1"] * 2,
                          "model": ["m0", "m0", "m1", "m1"], "group": "G",
                          "correct": [1, 0, 0, 1]})
    out = regroup_tasks(table, "group")
    assert sorted(out.instance_id) == ["A/0", "A/1", "B/0", "B/1"]
    assert np.array_equal(out.correct.to_numpy(), table.correct.to_numpy())


def test_a_switch_against_its_own_probability_says_so():
    """The switch's threshold (learned on realised gains) can be met while its P (from the
    spread of its errors) is not above 0.5: the reason says the two disagree."""
    from types import SimpleNamespace

    from lm_router_plugin.router.deciders import StackedSwitch

    switch = SimpleNamespace(describe=lambda: "threshold 0.01")
    view = SimpleNamespace(models=["a", "b"], n_labels=0,
                           settings=SimpleNamespace(target="correct"))
    low = StackedSwitch._reason(view, switch, np.array([0.0, 0.052]), 1, 0, False, 0.49)
    assert "switched to it (the threshold was learned" in low and "disagree" in low
    high = StackedSwitch._reason(view, switch, np.array([0.0, 0.052]), 1, 0, False, 0.8)
    assert "disagree" not in high
