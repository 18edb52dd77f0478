"""Published sample logs: a tree of many models' ``samples_*`` files without results files,
as JSONL and as the Hub's Parquet conversion, and ``hf://datasets/`` paths (offline only)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq
import pytest
from conftest import LMEvalRuns, assert_unreadable_parquet_is_one_error, one_error
from lm_router_plugin.adapters.published import allow_patterns, parse_hf_path

from lm_router_plugin.errors import InputError
from lm_router_plugin.store.store import Store

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "runs"
# metric and filter the adapter picks by default, as named in lm-eval's results[task]
DEFAULT_KEY = {"toy_arith": "acc,none", "toy_capitals": "exact_match,none",
               "toy_history": "acc,none", "toy_science": "acc,none",
               "toy_units": "exact_match,strict"}


def published_tree(runs_root: Path, dest: Path, fmt: str, json_strings: bool = False) -> Path:
    """Copy the ``samples_*.jsonl`` of every model folder under ``runs_root`` to ``dest`` (no
    results files); ``fmt="parquet"`` converts each file like the Hub does (one row per
    sample, one column per key); ``json_strings`` stores ``doc`` and ``arguments`` as JSON text.
    """
    for src in sorted(runs_root.glob("*/samples_*.jsonl")):
        folder = dest / src.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        if fmt == "jsonl":
            shutil.copy(src, folder / src.name)
            continue
        table = pj.read_json(src)
        if json_strings:
            frame = pd.read_json(src, lines=True, dtype=False)
            for column in ("doc", "arguments"):
                frame[column] = [json.dumps(v) for v in frame[column]]
            table = pa.Table.from_pandas(frame, preserve_index=False)
        # small row groups: the reader must stitch several together
        pq.write_table(table, folder / (src.stem + ".parquet"), row_group_size=7)
    return dest


def _ingest_table(cli, root: Path, store: Path) -> pd.DataFrame:
    result = cli("ingest", "lm-eval", root, store_dir=store)
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(Store(store).table_path)
    return table.sort_values(["model", "task", "instance_id"]).reset_index(drop=True)


def _accuracy(cli, store: Path) -> dict:
    result = cli("info", "--json", store_dir=store)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["accuracy"]


@pytest.mark.slow  # the session fixture runs lm-eval

def assert_lm_evals_accuracies(acc: dict, table: pd.DataFrame, lmeval_runs: LMEvalRuns) -> None:
    """Every (model, task) accuracy of ``acc`` (and toy_cooking's mean token_f1 in ``table``)
    equals what lm-eval wrote in its results_*.json: 30 pairs."""
    checked = 0
    for model, results in lmeval_runs.results.items():
        for task, key in DEFAULT_KEY.items():
            assert acc[task][model] == pytest.approx(results["results"][task][key], abs=1e-12), \
                (model, task)
            checked += 1
        cooking = table[(table.model == model) & (table.task == "toy_cooking")]
        assert cooking.score.mean() == pytest.approx(
            results["results"]["toy_cooking"]["token_f1,none"], abs=1e-12)
    assert checked == len(lmeval_runs.results) * len(DEFAULT_KEY) == 30

def test_published_jsonl_and_parquet_give_lm_evals_accuracies(
        cli, lmeval_runs: LMEvalRuns, tmp_path: Path) -> None:
    jsonl = published_tree(lmeval_runs.root, tmp_path / "jsonl", "jsonl")
    parquet = published_tree(lmeval_runs.root, tmp_path / "parquet", "parquet")
    assert not list(parquet.rglob("*.jsonl")) and not list(parquet.rglob("results_*"))
    t_jsonl = _ingest_table(cli, jsonl, tmp_path / "s_jsonl")
    t_parquet = _ingest_table(cli, parquet, tmp_path / "s_parquet")
    # model ids from the folder names, accuracies as lm-eval wrote them in results_*.json
    acc = _accuracy(cli, tmp_path / "s_parquet")
    assert _accuracy(cli, tmp_path / "s_jsonl") == acc
    assert_lm_evals_accuracies(acc, t_parquet, lmeval_runs)
    # the same rows either way, texts and prompt hashes included; only the origin differs
    assert t_parquet.origin.str.endswith(".parquet").all()
    pd.testing.assert_frame_equal(t_jsonl.drop(columns="origin"),
                                  t_parquet.drop(columns="origin"))


def test_parquet_with_json_string_columns_equals_jsonl(cli, tmp_path: Path) -> None:
    """The committed examples (written by lm-eval), Parquet with doc/arguments as JSON text."""
    jsonl = published_tree(EXAMPLES, tmp_path / "jsonl", "jsonl")
    parquet = published_tree(EXAMPLES, tmp_path / "parquet", "parquet", json_strings=True)
    doc_type = pq.read_schema(next(parquet.rglob("*.parquet"))).field("doc").type
    assert pa.types.is_string(doc_type) or pa.types.is_large_string(doc_type)
    t_jsonl = _ingest_table(cli, jsonl, tmp_path / "s1")
    t_parquet = _ingest_table(cli, parquet, tmp_path / "s2")
    assert len(t_jsonl) == 760 and t_jsonl.model.nunique() == 4
    pd.testing.assert_frame_equal(t_jsonl.drop(columns="origin"),
                                  t_parquet.drop(columns="origin"))
    # with the results files present, the Parquet logs get the logged configs' texts too
    with_results = published_tree(EXAMPLES, tmp_path / "with_results", "parquet")
    for src in EXAMPLES.glob("*/results_*.json"):
        shutil.copy(src, with_results / src.parent.name / src.name)
    t_full = _ingest_table(cli, with_results, tmp_path / "s3")
    t_ref = _ingest_table(cli, EXAMPLES, tmp_path / "s4")
    pd.testing.assert_frame_equal(t_ref.drop(columns="origin"), t_full.drop(columns="origin"))


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_unreadable_parquet_is_one_error(cli, tmp_path: Path, damage: str) -> None:
    root = published_tree(EXAMPLES, tmp_path / "runs", "parquet")
    bad = sorted(root.rglob("samples_toy_arith_*.parquet"))[0]
    assert_unreadable_parquet_is_one_error(cli, root, bad, damage, tmp_path / "store")


def test_parquet_row_without_metric_names_the_row(cli, tmp_path: Path) -> None:
    root = published_tree(EXAMPLES, tmp_path / "runs", "parquet")
    path = sorted(root.rglob("samples_toy_arith_*.parquet"))[0]
    table = pq.read_table(path)
    table = table.set_column(table.schema.get_field_index("acc"), "acc",
                             pa.array([1.0, None] + [0.0] * (len(table) - 2)))
    pq.write_table(table, path)
    message = one_error(cli("ingest", "lm-eval", root, store_dir=tmp_path / "store"))
    assert f"{path}: row 2: non-numeric score acc=None" in message


# -- hf://datasets/ paths ---------------------------------------------------------------------
@pytest.mark.parametrize(("path", "expected"), [
    ("hf://datasets/org/details", ("org/details", None)),
    ("hf:/datasets/org/details@v1.0", ("org/details", "v1.0")),  # as pathlib leaves it
    ("hf://datasets/open-llm-leaderboard/x-details/@refs/convert/parquet",
     ("open-llm-leaderboard/x-details", "refs/convert/parquet")),
])
def test_parse_hf_path(path: str, expected: tuple) -> None:
    assert parse_hf_path(path) == expected


@pytest.mark.parametrize("path", ["hf://datasets/only-org", "hf://models/org/name",
                                  "hf://datasets/org/name/sub"])
def test_parse_hf_path_rejects(path: str) -> None:
    with pytest.raises(InputError, match="expected hf://datasets/ORG/NAME"):
        parse_hf_path(path)


def test_allow_patterns_narrow_to_tasks() -> None:
    assert allow_patterns()[:3] == ["*samples_*.jsonl", "*samples_*.parquet", "*results_*.json"]
    narrow = allow_patterns(["gsm8k"])
    assert narrow[:2] == ["*samples_gsm8k_*.jsonl", "*samples_gsm8k_*.parquet"]
    assert narrow[-1] == "*results_*.json"
    # the Hub conversion layout (<config>/<split>/NNNN.parquet): test_hub_parquet_layout.py
    assert all("gsm8k" in p for p in narrow[:-1])


def test_hf_path_offline_is_one_error(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    store = tmp_path / "store"
    message = one_error(cli("ingest", "lm-eval", "hf://datasets/org/details@main",
                            "-o", "tasks=toy_arith,toy_units", store_dir=store))
    assert message.startswith("Error: hf://datasets/org/details@main: cannot download")
    assert "needs network access" in message
    assert "huggingface-cli download org/details --repo-type dataset --revision main " \
           "--local-dir DIR" in message
    assert not Store(store).table_path.exists()


def test_tasks_option_must_be_names(cli, tmp_path: Path) -> None:
    result = cli("ingest", "lm-eval", EXAMPLES, "-o", "tasks=3", store_dir=tmp_path / "s")
    assert result.exit_code == 2 and "tasks: expected a comma-separated list" in result.output
