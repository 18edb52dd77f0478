"""The Hub's automatic Parquet conversion of a details dataset (``refs/convert/parquet``):
``<config>/<split>/NNNN.parquet``, one config per (model, task), splits = run timestamps plus
``latest`` (a copy of the newest run), laid out here from sample logs written by lm-eval."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq
import pytest
from conftest import LMEvalRuns, assert_unreadable_parquet_is_one_error, one_error
from lm_router_plugin.adapters.lmeval import get_file_task_name
from lm_router_plugin.adapters.published import allow_patterns, config_model_task
from test_published_layout import (
    DEFAULT_KEY,
    EXAMPLES,
    _accuracy,
    _ingest_table,
    assert_lm_evals_accuracies,
    published_tree,
)

from lm_router_plugin.store.store import Store

STAMP = "2024_01_01T00_00_00.000000"


def hub_tree(runs_root: Path, dest: Path, *, prefix: bool = True, model_folders: bool = False,
             splits: tuple[str, ...] = (STAMP, "latest"), two_files: str | None = "latest",
             tasks: tuple[str, ...] | None = None, models: tuple[str, ...] | None = None
             ) -> Path:
    """Lay the ``samples_*.jsonl`` of every model folder under ``runs_root`` out as the Hub's
    converter does: ``dest/<config>/<split>/0000.parquet``, config ``<org>__<model>__<task>``
    (``prefix``) or ``<task>`` inside ``dest/<org>__<model>/`` (``model_folders``). Every
    split holds the same rows; split ``two_files`` is written as 0000 + 0001.parquet."""
    seen = set()
    for src in sorted(runs_root.glob("*/samples_*.jsonl")):
        task = get_file_task_name(src.stem)
        if (tasks is not None and task not in tasks) or (
                models is not None and src.parent.name not in models):
            continue
        assert (src.parent.name, task) not in seen  # one run per (model, task) in these trees
        seen.add((src.parent.name, task))
        config = f"{src.parent.name}__{task}" if prefix else task
        base = dest / src.parent.name if model_folders else dest
        table = pj.read_json(src)
        for split in splits:
            folder = base / config / split
            folder.mkdir(parents=True)
            if split == two_files:
                cut = len(table) // 2
                pq.write_table(table.slice(0, cut), folder / "0000.parquet", row_group_size=5)
                pq.write_table(table.slice(cut), folder / "0001.parquet", row_group_size=5)
            else:
                pq.write_table(table, folder / "0000.parquet")
    return dest


def _n_lines(runs_root: Path, task: str) -> int:
    return sum(len(p.read_text().splitlines())
               for p in runs_root.glob(f"*/samples_{task}_*.jsonl"))


def _results_accuracy(runs_root: Path) -> dict[str, dict]:
    return {(data := json.loads(p.read_text()))["model_name"]: data
            for p in sorted(runs_root.glob("*/results_*.json"))}


@pytest.mark.slow  # the session fixture runs lm-eval
def test_hub_layout_gives_lm_evals_accuracies(cli, lmeval_runs: LMEvalRuns,
                                              tmp_path: Path) -> None:
    hub = hub_tree(lmeval_runs.root, tmp_path / "hub")
    t_hub = _ingest_table(cli, hub, tmp_path / "s_hub")
    acc = _accuracy(cli, tmp_path / "s_hub")
    assert_lm_evals_accuracies(acc, t_hub, lmeval_runs)
    # the same rows as the JSONL logs: `latest` (a copy of the timestamp split) not counted twice
    t_jsonl = _ingest_table(cli, published_tree(lmeval_runs.root, tmp_path / "jsonl", "jsonl"),
                            tmp_path / "s_jsonl")
    assert len(t_hub) == len(t_jsonl)
    assert not t_hub.duplicated(["model", "task", "instance_id"]).any()
    assert t_hub.origin.str.endswith("/latest").all()
    pd.testing.assert_frame_equal(t_jsonl.drop(columns="origin"), t_hub.drop(columns="origin"))


def test_hub_layout_of_the_examples(cli, tmp_path: Path) -> None:
    """The committed examples (written by lm-eval): accuracies as in their results files."""
    hub = hub_tree(EXAMPLES, tmp_path / "hub")
    assert len(list(hub.glob("*/latest/0001.parquet"))) == 24 == len(list(hub.iterdir()))
    t_hub = _ingest_table(cli, hub, tmp_path / "s_hub")
    t_jsonl = _ingest_table(cli, published_tree(EXAMPLES, tmp_path / "jsonl", "jsonl"),
                            tmp_path / "s_jsonl")
    assert len(t_hub) == len(t_jsonl) == 760
    pd.testing.assert_frame_equal(t_jsonl.drop(columns="origin"), t_hub.drop(columns="origin"))
    acc = _accuracy(cli, tmp_path / "s_hub")
    for model, results in _results_accuracy(EXAMPLES).items():
        for task, key in DEFAULT_KEY.items():
            assert acc[task][model] == pytest.approx(results["results"][task][key], abs=1e-12)


def test_config_without_prefix_takes_the_model_folder(cli, tmp_path: Path) -> None:
    hub = hub_tree(EXAMPLES, tmp_path / "hub", prefix=False, model_folders=True)
    assert (hub / "toy__tiny-1b" / "toy_arith" / "latest" / "0001.parquet").exists()
    t_hub = _ingest_table(cli, hub, tmp_path / "s")
    assert sorted(t_hub.model.unique()) == ["toy/generalist-70b", "toy/geo-buff-7b",
                                            "toy/math-whiz-7b", "toy/tiny-1b"]
    assert len(t_hub) == 760
    # pointed at one model's folder (named ORG__NAME), the same
    one = _ingest_table(cli, hub / "toy__tiny-1b", tmp_path / "s1")
    assert set(one.model) == {"toy/tiny-1b"} and len(one) == 190


def test_no_model_is_one_error_naming_the_config(cli, tmp_path: Path) -> None:
    # configs named after the task alone, right in the folder given: no model anywhere
    hub = hub_tree(EXAMPLES, tmp_path / "details", prefix=False, models=("toy__tiny-1b",))
    store = tmp_path / "store"
    message = one_error(cli("ingest", "lm-eval", hub, store_dir=store))
    assert message.startswith(f"Error: {hub / 'toy_arith'}: cannot tell the model of config "
                              "'toy_arith'")
    assert "-o model=ORG/NAME" in message and "ORG__NAME" in message
    assert not Store(store).table_path.exists()
    # the way round that the message names
    result = cli("ingest", "lm-eval", hub, "-o", "model=toy/tiny-1b", store_dir=store)
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(Store(store).table_path)
    assert set(table.model) == {"toy/tiny-1b"} and table.task.nunique() == 6


def test_one_split_per_config_newest_timestamp_without_latest(cli, tmp_path: Path) -> None:
    hub = hub_tree(EXAMPLES, tmp_path / "hub", splits=(STAMP,), two_files=None,
                   tasks=("toy_arith",))
    # an older run with other scores: must be ignored, not added
    for config in hub.iterdir():
        table = pq.read_table(config / STAMP / "0000.parquet")
        flipped = pa.array([1.0 - v for v in table.column("acc").to_pylist()])
        older = config / "partial-2023_12_31T23_59_59.999999"
        older.mkdir()
        pq.write_table(table.set_column(table.schema.get_field_index("acc"), "acc", flipped),
                       older / "0000.parquet")
    t_hub = _ingest_table(cli, hub, tmp_path / "s")
    acc = _accuracy(cli, tmp_path / "s")
    assert len(t_hub) == _n_lines(EXAMPLES, "toy_arith") == 4 * 36
    for model, results in _results_accuracy(EXAMPLES).items():
        assert acc["toy_arith"][model] == pytest.approx(results["results"]["toy_arith"][
            "acc,none"], abs=1e-12)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
@pytest.mark.parametrize("part", ["0000", "0001"])
def test_damaged_part_is_one_error(cli, tmp_path: Path, damage: str, part: str) -> None:
    hub = hub_tree(EXAMPLES, tmp_path / "hub", tasks=("toy_arith", "toy_units"))
    bad = hub / "toy__geo-buff-7b__toy_arith" / "latest" / f"{part}.parquet"
    assert_unreadable_parquet_is_one_error(cli, hub, bad, damage, tmp_path / "store")


def test_bad_row_in_second_part_names_that_file_and_row(cli, tmp_path: Path) -> None:
    hub = hub_tree(EXAMPLES, tmp_path / "hub", tasks=("toy_arith",))
    part = hub / "toy__tiny-1b__toy_arith" / "latest" / "0001.parquet"
    table = pq.read_table(part)
    table = table.set_column(table.schema.get_field_index("acc"), "acc",
                             pa.array([1.0, 0.0, None] + [0.0] * (len(table) - 3)))
    pq.write_table(table, part)
    message = one_error(cli("ingest", "lm-eval", hub, store_dir=tmp_path / "store"))
    assert f"{part}: row 3: non-numeric score acc=None" in message


def test_other_configs_are_ignored(cli, tmp_path: Path) -> None:
    """A config that is not a sample log (no doc_id column: aggregated results) is skipped."""
    hub = hub_tree(EXAMPLES, tmp_path / "hub", tasks=("toy_arith",))
    (hub / "results" / "latest").mkdir(parents=True)
    pq.write_table(pa.table({"results": ['{"toy_arith": {"acc,none": 0.5}}']}),
                   hub / "results" / "latest" / "0000.parquet")
    assert len(_ingest_table(cli, hub, tmp_path / "s")) == _n_lines(EXAMPLES, "toy_arith")


@pytest.mark.parametrize(("config", "expected"), [
    ("open-llm-leaderboard__gpt2__leaderboard_bbh_boolean_expressions",
     ("open-llm-leaderboard/gpt2", "leaderboard_bbh_boolean_expressions")),
    ("leaderboard_bbh_boolean_expressions", (None, "leaderboard_bbh_boolean_expressions")),
    ("org__task", (None, "org__task")),
])
def test_config_model_task(config: str, expected: tuple) -> None:
    assert config_model_task(config) == expected


# -- hf://datasets/ORG/NAME@refs/convert/parquet ----------------------------------------------
def test_allow_patterns_match_the_conversion_layout() -> None:
    from huggingface_hub.utils import filter_repo_objects

    files = ["org__m__leaderboard_bbh_boolean_expressions/latest/0000.parquet",
             "org__m__leaderboard_bbh_boolean_expressions/2024_06_26T17_37_19.062048/0000.parquet",
             "org__m__leaderboard_bbh_boolean_expressions/partial-latest/0012.parquet",
             "org__m__leaderboard_bbh_date_understanding/latest/0000.parquet",
             "org__m__leaderboard_mmlu_pro/latest/0000.parquet",
             "org__m/samples_leaderboard_mmlu_pro_2024-06-26T17-37-19.062048.jsonl",
             "org__m/toy_arith/latest/0000.parquet", "toy_arith/latest/0001.parquet",
             "README.md", ".gitattributes"]

    def picked(tasks):
        return set(filter_repo_objects(files, allow_patterns=allow_patterns(tasks)))

    assert picked(None) == set(files[:-2])
    assert picked(["leaderboard_bbh_boolean_expressions"]) == set(files[:3])
    assert picked(["leaderboard_mmlu_pro"]) == set(files[4:6])
    assert picked(["toy_arith"]) == set(files[6:8])
    assert picked(["boolean_expressions"]) == set()  # a task name is matched whole


def test_convert_revision_offline_is_one_error(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    store = tmp_path / "store"
    path = "hf://datasets/open-llm-leaderboard/org__m-details@refs/convert/parquet"
    message = one_error(cli("ingest", "lm-eval", path, "-o",
                            "tasks=leaderboard_bbh_boolean_expressions", store_dir=store))
    assert message.startswith(f"Error: {path}: cannot download")
    assert "huggingface-cli download open-llm-leaderboard/org__m-details --repo-type dataset " \
           "--revision refs/convert/parquet --local-dir DIR" in message
    assert not Store(store).table_path.exists()
