"""What the router embeds: each instance's own zero-shot text, not the few-shot prompt.

Real lm-eval runs (tests/conftest.py: zero-shot and ``--num_fewshot 3``, dummy and replay
models; ``toy_science`` has a description, ``toy_units`` a Python doc_to_text) are read by the
adapter and compared with what lm-eval itself renders for each doc at num_fewshot 0.
"""

from __future__ import annotations

import inspect
import json
import logging
import shutil

import pytest
from conftest import (
    DUMMY_MODELS,
    FEWSHOT,
    read_jsonl,
    to_json_array_run,
    to_legacy_array_run,
    write_jsonl,
)
from lm_router_plugin.adapters.instance_text import (
    LMEvalDocText,
    Unrenderable,
    import_logged_function,
    structural_texts,
    tail_text,
)

from lm_router_plugin.store.ingest import read_rows

REPLAY_MODELS = ("toy/math-whiz-7b", "toy/geo-buff-7b", "toy/generalist-70b", "toy/tiny-1b")
TOY_TASKS = ("toy_arith", "toy_capitals", "toy_cooking", "toy_history", "toy_science",
             "toy_units")
HELD_OUT = "toy_percent"  # tag router_toy_new: never in the reference runs


# -- lm-eval's own renderings ----------------------------------------------------------
@pytest.fixture(scope="module")
def lm_eval_tasks(lmeval_runs):
    """{task: (lm-eval Task, its eval docs)} loaded by lm-eval from the runs' task copy."""
    from lm_router_plugin.task.docs import _load_tasks, _task_manager

    tm = _task_manager(str(lmeval_runs.tasks_dir), include_defaults=False)
    tasks = _load_tasks(tm, "router_toy") | _load_tasks(tm, HELD_OUT)
    return {name: (task, list(task.eval_docs)) for name, task in tasks.items()}


def _zero_shot(task, doc) -> tuple[str, str]:
    """(doc_to_text, the full num_fewshot=0 context) as lm-eval renders them."""
    return task.doc_to_text(doc), task.fewshot_context(doc, num_fewshot=0)


def _texts(table) -> dict[tuple[str, str, str], str]:
    return {(t, i, m): x for t, i, m, x in
            zip(table["task"], table["instance_id"], table["model"], table["input_text"])}


# -- real runs -------------------------------------------------------------------------
@pytest.mark.parametrize("shots", ["zero", "few"])
def test_stored_text_is_lm_evals_zero_shot_rendering(shots, lmeval_runs, lmeval_fewshot_runs,
                                                     lm_eval_tasks):
    runs = lmeval_runs if shots == "zero" else lmeval_fewshot_runs
    models = [DUMMY_MODELS[0], *REPLAY_MODELS]
    table, _ = read_rows("lm-eval", [runs.model_dir(m) for m in models])
    assert set(table["task"]) == set(TOY_TASKS)
    assert set(table["model"]) == set(models)
    for row in table.itertuples():
        task, docs = lm_eval_tasks[row.task]
        text, context = _zero_shot(task, docs[int(row.instance_id)])
        assert row.input_text == text, (row.task, row.instance_id)
        # the num_fewshot=0 context is the description, then this text
        assert context.endswith(text)
        assert context[: len(context) - len(text)] == (task.config.description or "")
    # the few-shot prompts really hold examples (and the description); the texts do not
    science = runs.results[models[1]]["configs"]["toy_science"]["description"]
    assert science and not table["input_text"].str.contains(science).any()
    rules = table.groupby("task")["text_rule"].agg(set).to_dict()
    assert rules.pop("toy_units") == {"structure"}  # Python doc_to_text: not importable
    assert set().union(*rules.values()) == {"doc_to_text"}
    for model in models:
        line = read_jsonl(runs.samples_file(model, "toy_arith"))[0]
        prompt = line["arguments"]["gen_args_0"]["arg_0"]
        assert prompt.count("Question: ") == (FEWSHOT + 1 if shots == "few" else 1)
        stored = table[(table["model"] == model) & (table["task"] == "toy_arith")
                       & (table["instance_id"] == str(line["doc_id"]))]
        assert stored["prompt_hash"].item() == line["prompt_hash"]


def test_few_shot_and_zero_shot_runs_store_identical_texts(lmeval_runs, lmeval_fewshot_runs):
    models = [DUMMY_MODELS[0], *REPLAY_MODELS]
    zero, _ = read_rows("lm-eval", [lmeval_runs.model_dir(m) for m in models])
    few, _ = read_rows("lm-eval", [lmeval_fewshot_runs.model_dir(m) for m in models])
    assert len(zero) == len(few) == 5 * 220 - 5 * 30  # 6 tasks, 190 docs, 5 models
    assert _texts(zero) == _texts(few)
    merged = zero.merge(few, on=["task", "instance_id", "model"], suffixes=("_0", "_3"))
    assert (merged["prompt_hash_0"] != merged["prompt_hash_3"]).all()  # the prompts differ
    # distinct docs get distinct texts (the toy data repeat a few questions)
    for task, group in zero[zero["model"] == models[0]].groupby("task"):
        docs = read_jsonl(lmeval_runs.tasks_dir / "router_toy" / f"{task}.jsonl")
        assert group["input_text"].nunique() == len({d["question"] for d in docs}), task


@pytest.mark.parametrize("layout", ["legacy-array", "json-array", "no-results-file"])
def test_every_layout_stores_the_same_texts(layout, lmeval_fewshot_runs, tmp_path):
    model = REPLAY_MODELS[0]
    want = _texts(read_rows("lm-eval", [lmeval_fewshot_runs.model_dir(model)])[0])
    if layout == "legacy-array":
        folder = to_legacy_array_run(lmeval_fewshot_runs, model, tmp_path / "legacy")
    elif layout == "json-array":
        folder = to_json_array_run(lmeval_fewshot_runs, model, tmp_path / "arrays")
    else:  # sample logs alone: no config, so the structural rule everywhere
        folder = tmp_path / "bare" / "toy__math-whiz-7b"
        shutil.copytree(lmeval_fewshot_runs.model_dir(model), folder)
        for path in folder.glob("results_*.json"):
            path.unlink()
    table, _ = read_rows("lm-eval", [folder])
    got = {(t, i): x for (t, i, _m), x in _texts(table).items()}
    assert got == {(t, i): x for (t, i, _m), x in want.items()}
    if layout == "no-results-file":
        assert set(table["text_rule"]) == {"structure"}


def test_a_config_that_does_not_match_the_log_falls_back(lmeval_fewshot_runs, tmp_path, caplog):
    """A results file whose doc_to_text does not render the logged prompts is not trusted."""
    model = REPLAY_MODELS[1]
    folder = tmp_path / "run"
    shutil.copytree(lmeval_fewshot_runs.model_dir(model), folder)
    (results,) = folder.glob("results_*.json")
    data = json.loads(results.read_text())
    data["configs"]["toy_arith"]["doc_to_text"] = "Q: {{question}}\nA:"
    results.write_text(json.dumps(data))
    caplog.set_level(logging.INFO)
    table, _ = read_rows("lm-eval", [folder])
    arith = table[table["task"] == "toy_arith"]
    assert set(arith["text_rule"]) == {"structure"}
    assert arith["input_text"].str.startswith("Question: ").all()
    assert "does not occur in its logged prompt" in caplog.text


@pytest.mark.slow
def test_recommend_same_choice_from_few_shot_and_zero_shot_runs(lmeval_runs, lmeval_fewshot_runs,
                                                                 tmp_path):
    """Reference runs made 0-shot or 3-shot give the same recommendation for a new task."""
    from lm_router_plugin.router.router import Router
    from lm_router_plugin.store.store import Store
    from lm_router_plugin.task.docs import task_texts

    texts = task_texts(HELD_OUT, lmeval_runs.tasks_dir)
    assert texts[0].startswith("Question: ") and texts[0].count("Question: ") == 1
    store = Store(tmp_path / "store")  # one embedding cache for both fits
    recs = []
    for runs in (lmeval_runs, lmeval_fewshot_runs):
        table, _ = read_rows("lm-eval", [runs.model_dir(m) for m in REPLAY_MODELS])
        router = Router().fit(table, store=store)
        recs.append(router.recommend(texts, task=HELD_OUT, store=store).to_dict())
    zero, few = recs
    assert few["choice"] == zero["choice"]
    assert few["models"] == zero["models"]
    assert few["u"] == pytest.approx(zero["u"])


# -- the rules on their own ------------------------------------------------------------
def test_doc_to_text_template_field_and_multiple_input():
    render = LMEvalDocText.from_config({"doc_to_text": "Q: {{q | upper}}\nA:"})
    assert render({"q": "two plus two?"}) == "Q: TWO PLUS TWO?\nA:"
    assert render.rule == "doc_to_text"
    assert LMEvalDocText.from_config({"doc_to_text": "q"})({"q": "Hello"}) == "Hello"
    # winogrande-like: doc_to_text gives the choice index; the text is the first request
    # (first context + continuation): twins share the context and differ after it
    multi = LMEvalDocText.from_config({"doc_to_text": "{{answer}}",
                                       "doc_to_choice": "{{[option1, option2]}}",
                                       "doc_to_target": "rest"})
    twins = [{"answer": a, "option1": "so Sarah", "option2": "so Maria", "rest": rest}
             for a, rest in ((1, "got easy cases."), (0, "got hard cases."))]
    assert [multi(doc) for doc in twins] == ["so Sarah got easy cases.", "so Sarah got hard cases."]
    assert multi.context == "so Sarah"
    with pytest.raises(Unrenderable, match="promptsource"):
        LMEvalDocText.from_config({"doc_to_text": "x", "use_prompt": "promptsource:a"})
    with pytest.raises(Unrenderable, match="no doc_to_text"):
        LMEvalDocText.from_config({})


def test_python_doc_to_text_is_imported_from_the_installed_lm_eval():
    """A logged function source of lm-eval's own task modules is found and run."""
    pytest.importorskip("lm_eval")
    from lm_eval.tasks.glue.mnli import utils as mnli
    from lm_eval.tasks.mmlu_pro import utils as mmlu_pro

    source = inspect.getsource(mnli.doc_to_text)  # what lm-eval logs for !function
    render = LMEvalDocText.from_config({"doc_to_text": source})
    assert render.rule == "doc_to_text:function"
    doc = {"premise": "It rains.", "hypothesis": "The street is wet", "label": 0}
    assert render(doc) == mnli.doc_to_text(doc) == \
        "It rains.\nQuestion: The street is wet. True, False or Neither?\nAnswer:"
    # a functools.partial has no source: lm-eval logs its str(), which is not rendered
    with pytest.raises(Unrenderable, match="without its source"):
        LMEvalDocText.from_config({"doc_to_text": str(mmlu_pro.doc_to_text)})
    with pytest.raises(Unrenderable, match="not in the installed lm-eval"):
        import_logged_function("def doc_to_text(doc):\n    return doc['q'] + '???'\n")


def test_structural_rule():
    desc = "About geography."
    examples = ["Question: Capital of France?\nAnswer: Paris",
                "Question: Capital of Peru?\nAnswer: Lima"]
    own = ["Question: Capital of Chad?\nAnswer:", "Question: Capital of Fiji?\nAnswer:",
           "Question: Capital of Mali?\n\nThink.\nAnswer:"]
    few = [desc + "\n\n".join(examples + [q]) for q in own]
    zero = [desc + q for q in own]
    for prompts in (few, zero):
        texts, rules = structural_texts(prompts, description=desc)
        assert texts == own and set(rules) == {"structure"}
    # without the description known: it is shared, so it is cut as well
    assert structural_texts(few)[0] == own
    # the count rule when no constant head exists (num_fewshot known)
    plain = ["\n\n".join(["2+2 = 4", "3+3 = 6", q]) for q in ("5+5 =", "7+1 =")]
    assert structural_texts(plain, num_fewshot=2)[0] == ["5+5 =", "7+1 ="]
    # one prompt and nothing known: the tail
    long = "x " * 2000 + "the end?"
    texts, rules = structural_texts([long])
    assert rules == ["tail"] and texts[0] == tail_text(long) and texts[0].endswith("the end?")
    assert len(texts[0]) <= 1000


def test_held_out_texts_are_zero_shot_whatever_num_fewshot(lmeval_runs, tmp_path):
    """recommend --task embeds doc_to_text even for a task configured with num_fewshot."""
    from lm_router_plugin.task.docs import task_texts

    folder = tmp_path / "tasks"
    shutil.copytree(lmeval_runs.tasks_dir / "router_toy", folder)
    yaml_path = folder / "toy_percent.yaml"
    yaml_path.write_text(yaml_path.read_text() + "num_fewshot: 5\n"
                         "description: \"Percent questions.\\n\\n\"\n")
    docs = read_jsonl(folder / "toy_percent.jsonl")
    texts = task_texts(HELD_OUT, folder, limit=4)
    assert texts == [f"Question: {d['question']}\nAnswer:" for d in docs[:4]]


def test_task_texts_respects_the_users_environment(monkeypatch, tmp_path):
    """No forced offline mode; the error says offline only when the user asked for it."""
    import os

    from lm_router_plugin.errors import LMRouterError
    from lm_router_plugin.task.docs import task_texts

    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "broken.yaml").write_text(
        "task: toy_broken\ndataset_path: json\ndataset_kwargs:\n  data_files: "
        f"{tmp_path / 'missing.jsonl'}\ntest_split: train\noutput_type: generate_until\n"
        "doc_to_text: '{{q}}'\ndoc_to_target: a\n")
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(LMRouterError) as err:
        task_texts("toy_broken", folder)
    assert "offline" not in str(err.value) and "can be downloaded" in str(err.value)
    assert "HF_DATASETS_OFFLINE" not in os.environ  # not set behind the user's back
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(LMRouterError, match="offline: HF_DATASETS_OFFLINE is set"):
        task_texts("toy_broken", folder)



BLANKS_YAML = """task: toy_blanks
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{label}}}}"
doc_to_choice: "{{{{[option1, option2]}}}}"
doc_to_target: "{{{{rest}}}}"
metric_list:
  - metric: acc
metadata:
  version: 1.0
"""
BLANKS = [("The trophy did not fit in the suitcase because the", "trophy", "suitcase",
           "was too big.", 0),
          ("The trophy did not fit in the suitcase because the", "trophy", "suitcase",
           "was too small.", 1),
          ("Anna helped Beth because", "Anna", "Beth", "was kind.", 0),
          ("Anna helped Beth because", "Anna", "Beth", "needed help.", 1),
          ("The cup fell off the table because", "cup", "table", "was tilted.", 1),
          ("The cup fell off the table because", "cup", "table", "was slippery.", 0)]


@pytest.mark.slow
def test_multiple_input_task_real_runs(tmp_path):
    """A winogrande-like task (one context per choice, a shared continuation) run by lm-eval
    0-shot and 2-shot: twin docs keep distinct texts, equal across runs and to task_texts."""
    import subprocess
    import sys

    from conftest import offline_env

    from lm_router_plugin.task.docs import task_texts

    data = write_jsonl(tmp_path / "blanks.jsonl", [
        {"option1": f"{p} {a}", "option2": f"{p} {b}", "rest": rest, "label": label}
        for p, a, b, rest, label in BLANKS])
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "toy_blanks.yaml").write_text(BLANKS_YAML.format(data=data))
    procs = {shots: subprocess.Popen(
        [sys.executable, "-m", "lm_eval", "--include_path", str(tasks), "--tasks", "toy_blanks",
         "--model", "dummy", "--model_args", "pretrained=org/Blank", "--num_fewshot", str(shots),
         "--output_path", str(tmp_path / f"runs{shots}"), "--log_samples"],
        cwd=tmp_path, env=offline_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for shots in (0, 2)}
    for proc in procs.values():
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    want = task_texts("toy_blanks", tasks)
    assert want[0] == "The trophy did not fit in the suitcase because the trophy was too big."
    assert len(set(want)) == len(BLANKS)
    for shots in (0, 2):
        table, _ = read_rows("lm-eval", [tmp_path / f"runs{shots}"])
        assert set(table["text_rule"]) == {"doc_to_text"}
        assert [table.set_index("instance_id")["input_text"][str(i)]
                for i in range(len(BLANKS))] == want
        # without the results file: the prompt's structure plus the shared continuation
        for path in (tmp_path / f"runs{shots}").glob("*/results_*.json"):
            path.unlink()
        table, _ = read_rows("lm-eval", [tmp_path / f"runs{shots}"])
        assert set(table["text_rule"]) == {"structure"}
        assert [table.set_index("instance_id")["input_text"][str(i)]
                for i in range(len(BLANKS))] == want, shots
