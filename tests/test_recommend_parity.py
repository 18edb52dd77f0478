"""One recommendation path: ``lm_router_plugin.recommend``, ``Router.recommend`` on the
store's router (``persistence.fit_or_load``) and ``lm-router recommend --json`` give the same
recommendation, field for field, on the same store, lm-eval task and labels: no labels,
labels of random docs and labels of the docs plan-labels drew (each set labelled by lm-eval
itself through tests/lmeval_replay.py), for the default decider and the paper's S3."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TESTS, offline_env
from test_plan_labels import (  # noqa: F401 - ref_store is a fixture
    HELD_OUT,
    REPLAY_MODELS,
    RUN_MODELS,
    _logged_doc_ids,
    ref_store,
)

from lm_router_plugin import Store
from lm_router_plugin.api import plan_labels, read_labeled, recommend
from lm_router_plugin.cli.display import _json_default
from lm_router_plugin.router.persistence import fit_or_load
from lm_router_plugin.task.labels import lm_eval_commands, task_docs

N_LABELS = 6
FIELDS = ("choice", "bma", "fallback", "p_choice_beats_bma", "reason", "models", "estimates",
          "expected_gain", "expected_gain_by", "n_labelled_docs", "score", "decided_by")


def _start_replay(command: str, cwd: Path) -> subprocess.Popen:
    """An ``lm_eval --model hf`` line run by lm-eval's CLI with the replay model."""
    args = shlex.split(command)
    assert args[:3] == ["lm_eval", "--model", "hf"]
    argv = [sys.executable, str(TESTS / "lmeval_replay.py"), "--model", "replay"] + args[3:]
    return subprocess.Popen(argv, cwd=cwd, env=offline_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def label_sets(ref_store, lmeval_runs, tmp_path_factory) -> dict[str, list[Path]]:
    """{"none": [], "random": [runs], "planned": [runs]}: RUN_MODELS run by lm-eval on
    N_LABELS random docs of HELD_OUT and on the N_LABELS docs plan-labels drew (all four
    runs in parallel)."""
    base = tmp_path_factory.mktemp("parity")
    tasks = lmeval_runs.tasks_dir
    ids = sorted(int(i) for i in np.random.default_rng(11).choice(30, N_LABELS, replace=False))
    random_file = base / "random.samples.json"
    random_file.write_text(json.dumps({HELD_OUT: ids}))
    commands = lm_eval_commands(list(RUN_MODELS), {HELD_OUT: ids}, random_file,
                                base / "random-runs", tasks)
    plan = plan_labels(ref_store, n=N_LABELS, task=HELD_OUT, include_path=tasks,
                       out=base / "planned", candidates=list(RUN_MODELS))
    commands += plan.commands
    assert len(commands) == 2 * len(RUN_MODELS)
    procs = [_start_replay(c, base) for c in commands]
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    drawn = {"random": ids, "planned": plan.samples[HELD_OUT]}
    runs = {"random": base / "random-runs", "planned": Path(plan.output_path)}
    for name, folder in runs.items():
        for model in RUN_MODELS:
            assert _logged_doc_ids(folder, model) == drawn[name]
    label_sets = {"none": [], **{name: [folder] for name, folder in runs.items()}}
    label_sets["plan"] = plan.plan_file  # the plan the "planned" docs were drawn for
    return label_sets


@pytest.fixture(scope="module")
def router(ref_store):
    return fit_or_load(Store(ref_store))


def _canonical(data: dict) -> dict:
    """A JSON round trip (as the CLI prints it): floats and NaN compare exactly."""
    return json.loads(json.dumps(data, default=_json_default))


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN == NaN


@pytest.mark.slow
@pytest.mark.parametrize("score", ["stack", "s3"])
@pytest.mark.parametrize("labels", ["none", "random", "planned"])
def test_api_router_and_cli_give_the_same_recommendation(labels, score, label_sets, router,
                                                          ref_store, lmeval_runs, cli):
    tasks = lmeval_runs.tasks_dir
    paths = label_sets[labels]
    plan = label_sets["plan"] if labels == "planned" else None
    store = Store(ref_store)
    by_api = _canonical(recommend(ref_store, task=HELD_OUT, include_path=tasks,
                                  labeled=paths, plan=plan, score=score).to_dict())
    by_router = _canonical(router.recommend(
        docs=task_docs(HELD_OUT, tasks), task=HELD_OUT, labeled=read_labeled(store, paths),
        plan=plan, score=score, store=store, model_info=store.read_models()).to_dict())
    result = cli("recommend", "--task", HELD_OUT, "--include-path", tasks, "--store",
                 ref_store, *[w for p in paths for w in ("--labeled", p)], "--score", score,
                 *(["--plan", plan] if plan else []), "--json")
    assert result.exit_code == 0, result.output
    by_cli = json.loads(result.stdout)

    for name, other in (("Router.recommend", by_router), ("lm-router recommend", by_cli)):
        for field in FIELDS:
            assert _same(other[field], by_api[field]), (name, field, other[field],
                                                        by_api[field])
        assert _same(other, by_api), name  # and every other field
    # the labels were read and counted where they belong
    n = 0 if labels == "none" else N_LABELS
    assert by_api["n_labelled_docs"] == n and by_api["score"] == score
    assert {e["model"]: e["n_labels"] for e in by_api["estimates"]} == {
        m: n if m in RUN_MODELS else 0 for m in REPLAY_MODELS}
    assert by_api["expected_gain_by"] == ("stack" if score == "stack" else "posterior")
    if plan:  # the plan is checked and reported on; the labels count the same without it
        assert by_api["plan_note"].startswith(f"{N_LABELS} of the plan's {N_LABELS} docs")
        without = _canonical(recommend(ref_store, task=HELD_OUT, include_path=tasks,
                                       labeled=paths, score=score).to_dict())
        assert _same({**without, "plan_note": by_api["plan_note"]}, by_api)
    assert set(by_api["expected_gain"]) == {"10", "30"}
    if paths:  # the labels changed what is reported (not silently dropped)
        unlabelled = recommend(ref_store, task=HELD_OUT, include_path=tasks, score=score)
        assert not _same(by_api["estimates"], _canonical(unlabelled.to_dict())["estimates"])
        assert by_api["n_inputs"] == 30 - N_LABELS and unlabelled.n_inputs == 30
