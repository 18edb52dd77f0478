"""The scale path on a few models x tasks x docs: the synthetic generator, the parallel
Arrow ingest, the categorical read path and build_pool on it (issue 11 item 2)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lm_router_plugin.errors import ConflictError, InputError
from lm_router_plugin.router.pool import build_pool
from lm_router_plugin.store.ingest import accuracy_table, ingest, read_arrow, to_pandas
from lm_router_plugin.store.schema import COLUMNS, KEY
from lm_router_plugin.store.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from gen_synthetic_logs import generate  # noqa: E402

LM_EVAL_KEYS = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter",
                "metrics", "doc_hash", "prompt_hash", "target_hash"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "logs"
    truth = generate(out, models=5, tasks=3, docs=12, seed=7, workers=1)
    return out, truth


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values(KEY).reset_index(drop=True)


def test_generator_writes_lm_eval_sample_lines(synth: tuple[Path, dict]) -> None:
    out, truth = synth
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert [p.name for p in folders][:2] == ["org-00__synth-0000-1b", "org-01__synth-0001-3b"]
    assert not list(out.rglob("results_*.json"))  # the published layout
    files = sorted(folders[0].glob("samples_*.jsonl"))
    assert len(files) == 3 and truth["lines"] == 5 * 3 * 12
    per_model = []
    for folder in folders[:2]:
        lines = [json.loads(x) for x in (folder / files[0].name).read_text().splitlines()]
        per_model.append(lines)
        for rec in lines:
            assert LM_EVAL_KEYS <= set(rec)
            prompt = rec["arguments"]["gen_args_0"]["arg_0"]
            assert rec["prompt_hash"] == _sha(prompt)
            assert rec["doc_hash"] == _sha(json.dumps(rec["doc"], indent=2, ensure_ascii=False))
            assert rec["target_hash"] == _sha(rec["target"])
            assert all(rec[m] in (0.0, 1.0) for m in rec["metrics"])
    # every model sees the same docs and prompts; only the answers differ
    assert [r["doc"] for r in per_model[0]] == [r["doc"] for r in per_model[1]]
    assert [r["prompt_hash"] for r in per_model[0]] == [r["prompt_hash"] for r in per_model[1]]


def test_generator_is_deterministic(synth: tuple[Path, dict], tmp_path: Path) -> None:
    out, truth = synth
    again = generate(tmp_path / "again", models=5, tasks=3, docs=12, seed=7, workers=2)
    assert again["accuracy"] == truth["accuracy"]
    for path in out.rglob("samples_*.jsonl"):
        assert path.read_bytes() == (tmp_path / "again" / path.relative_to(out)).read_bytes()


def test_latent_model_gives_each_model_its_own_strengths(tmp_path: Path) -> None:
    truth = generate(tmp_path / "g", models=30, tasks=10, docs=40, seed=1, workers=1)
    acc = pd.DataFrame(truth["accuracy"])  # models x tasks
    winners = acc.idxmax(axis=0)
    assert winners.nunique() >= 3  # no model wins everywhere
    assert acc.to_numpy().std() > 0.1


def test_ingest_reproduces_the_generated_accuracies(synth: tuple[Path, dict],
                                                    tmp_path: Path) -> None:
    out, truth = synth
    store = Store(tmp_path / "store")
    report = ingest("lm-eval", [out], store, workers=2)
    assert report.n_read == report.n_added == truth["lines"]
    accuracy, counts = accuracy_table(store.read_table(categorical=True))
    for task, per_model in truth["accuracy"].items():
        for model, acc in per_model.items():
            assert accuracy[task][model] == pytest.approx(acc)
            assert counts[task][model] == 12


def test_parallel_and_serial_reads_give_the_same_rows(synth: tuple[Path, dict]) -> None:
    out, _ = synth
    serial, meta1 = read_arrow("lm-eval", [out], workers=1)
    parallel, meta2 = read_arrow("lm-eval", [out], workers=2)
    pd.testing.assert_frame_equal(_sorted(to_pandas(serial)), _sorted(to_pandas(parallel)))
    assert meta1 == meta2


def test_categorical_read_path_returns_the_same_table(synth: tuple[Path, dict],
                                                      tmp_path: Path) -> None:
    out, _ = synth
    store = Store(tmp_path / "store")
    ingest("lm-eval", [out], store)
    plain = store.read_table()
    categorical = store.read_table(categorical=True)
    assert list(categorical.columns) == COLUMNS
    assert isinstance(categorical["input_text"].dtype, pd.CategoricalDtype)
    pd.testing.assert_frame_equal(categorical.astype(plain.dtypes.to_dict()), plain)
    a, b = build_pool(plain), build_pool(categorical)
    assert a.texts == b.texts and a.instance_ids == b.instance_ids and a.models == b.models
    assert np.array_equal(a.Y, b.Y, equal_nan=True) and np.array_equal(a.task_of, b.task_of)
    assert store.distinct("model") == sorted(plain["model"].unique())


def test_reingest_skips_identical_rows_and_conflicts_name_both_files(
        synth: tuple[Path, dict], tmp_path: Path) -> None:
    out, truth = synth
    store = Store(tmp_path / "store")
    ingest("lm-eval", [out], store)
    again = ingest("lm-eval", [out], store)
    assert (again.n_added, again.n_unchanged, again.n_replaced) == (0, truth["lines"], 0)
    # another run of one model with one flipped score
    changed = tmp_path / "changed"
    folder = sorted(p for p in out.iterdir() if p.is_dir())[0]
    shutil.copytree(folder, changed / folder.name)
    path = sorted((changed / folder.name).glob("samples_*.jsonl"))[0]
    lines = path.read_text().splitlines()
    rec = json.loads(lines[3])
    metric = rec["metrics"][0]
    rec[metric] = 1.0 - rec[metric]
    lines[3] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
    current = store.current_path.read_bytes()
    with pytest.raises(ConflictError) as err:
        ingest("lm-eval", [changed], store)
    assert str(path) in str(err.value) and str(folder / path.name) in str(err.value)
    assert "1 such rows" in str(err.value)
    store.refresh()
    assert store.current_path.read_bytes() == current  # store unchanged
    replaced = ingest("lm-eval", [changed], store, replace=True)
    assert (replaced.n_added, replaced.n_replaced) == (0, 1)
    assert replaced.n_unchanged == 3 * 12 - 1
    table = store.read_table()
    row = table[(table.model == "org-00/synth-0000-1b") & (table.instance_id == "3")
                & (table.task == rec_task(path))]
    assert row["score"].item() == rec[metric] and row["origin"].item() == str(path)


def rec_task(path: Path) -> str:
    stem = path.name[: -len(".jsonl")]
    return stem[stem.find("_") + 1: stem.rfind("_")]


def test_a_bad_line_in_a_worker_is_one_error_naming_file_and_line(
        synth: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = synth
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    path = sorted(bad.rglob("samples_*.jsonl"))[5]
    lines = path.read_text().splitlines()
    lines[6] = lines[6][:40]  # a truncated line
    path.write_text("\n".join(lines) + "\n")
    store = Store(tmp_path / "store")
    with pytest.raises(InputError) as err:
        ingest("lm-eval", [bad], store, workers=2)
    assert f"{path} line 7: not valid JSON" in str(err.value)
    assert not store.has_table()
