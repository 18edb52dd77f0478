"""Real data: MMLU-Pro per-question results of 29 LLMs (../shared/data/mmlu_pro/table.tsv.gz)
ingested with the table adapter through the real CLI; checks the facts its README states."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from lm_router_plugin.cli.commands import main
from lm_router_plugin.store.store import Store

TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmlu_pro" / "table.tsv.gz"

# README: "Accuracy ranges from 0.70 (gemini-1.5-pro-002) to 0.18 (Llama-2-7b-hf)".
README_ACCURACY = {"gemini-1.5-pro-002": 0.70, "Llama-2-7b-hf": 0.18}


@pytest.mark.slow
@pytest.mark.skipif(not TABLE.is_file(), reason="../shared/data/mmlu_pro/table.tsv.gz absent")
def test_mmlu_pro_table_ingests_with_readme_accuracies(tmp_path):
    store = tmp_path / "store"
    runner = CliRunner()
    start = time.perf_counter()
    result = runner.invoke(main, ["-q", "ingest", "table", str(TABLE), "--store", str(store)])
    ingest_s = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    assert "347215 rows read: 347215 added" in result.stdout
    result = runner.invoke(main, ["info", "--store", str(store), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    print(f"MMLU-Pro: ingest {ingest_s:.1f} s, total {time.perf_counter() - start:.1f} s")
    assert ingest_s < 120, f"ingesting 347,215 rows took {ingest_s:.0f} s"

    assert info["n_rows"] == 347_215
    assert len(info["models"]) == 29
    assert len(info["tasks"]) == 14
    # overall accuracy per model, from the per-task accuracies and counts
    correct: dict[str, float] = {}
    answered: dict[str, int] = {}
    for task, per_model in info["accuracy"].items():
        for model, acc in per_model.items():
            n = info["counts"][task][model]
            correct[model] = correct.get(model, 0.0) + acc * n
            answered[model] = answered.get(model, 0) + n
    overall = {m: correct[m] / answered[m] for m in correct}
    assert sum(answered.values()) == 347_215
    for model, acc in README_ACCURACY.items():
        assert round(overall[model], 2) == acc, (model, overall[model])
    assert max(overall, key=overall.get) == "gemini-1.5-pro-002"
    assert min(overall, key=overall.get) == "Llama-2-7b-hf"
    # README: DeepSeek-Coder-V2 covers 10,351 questions
    assert answered["DeepSeek-Coder-V2"] == 10_351

    table = pd.read_parquet(Store(store).table_path,
                            columns=["task", "instance_id", "input_text", "metric", "threshold"])
    assert table["instance_id"].nunique() == 12_032  # questions
    assert len(table[["task", "instance_id"]].drop_duplicates()) == 12_032
    # question text with its lettered options, multi-line, as the model saw it
    sample = table["input_text"].iloc[0]
    assert "\nA. " in sample and "\nB. " in sample
    assert set(table["metric"]) == {"correct"}
    assert table["threshold"].isna().all()
