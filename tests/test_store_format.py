"""Stores written before the table held each instance's own text (format 1) are refused by
every command that reads the table, with one message saying how to rebuild."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import file_bytes, one_error

from lm_router_plugin.store.schema import FORMAT_VERSION
from lm_router_plugin.store.store import Store

OLD_COLUMNS = ["source", "benchmark", "task", "instance_id", "input_text", "model", "metric",
               "score", "threshold", "correct", "origin"]


def _old_store(root) -> Store:
    """A table as lm-router wrote it before format 2: few-shot prompts, no version."""
    prompt = "The following are questions.\n\nQuestion: 1+1?\nAnswer: 2\n\nQuestion: {}?\nAnswer:"
    rows = [("lm-eval", "", "t", str(i), prompt.format(i), m, "acc", float(c), None, c, "x")
            for i in range(4) for m, c in (("m1", i % 2), ("m2", 1))]
    columns = {name: [row[j] for row in rows] for j, name in enumerate(OLD_COLUMNS)}
    table = pa.table(columns).cast(pa.schema([
        (c, pa.float64() if c in ("score", "threshold") else pa.int8() if c == "correct"
         else pa.string()) for c in OLD_COLUMNS]))
    root.mkdir(parents=True)
    pq.write_table(table, root / "table.parquet")
    return Store(root)


@pytest.mark.parametrize("command", ["info", "ingest", "recommend", "route", "evaluate"])
def test_every_command_refuses_an_old_store(command, cli, tmp_path):
    store = _old_store(tmp_path / "old")
    before = file_bytes(store.table_path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is 3+3?\n")
    csv = tmp_path / "new.csv"
    csv.write_text("task,instance_id,model,input_text,correct\nt2,0,m1,What is 2+2?,1\n")
    args = {"info": ["info"], "ingest": ["ingest", "table", csv],
            "recommend": ["recommend", "--prompts", prompts],
            "route": ["route", "--prompts", prompts],
            "evaluate": ["evaluate"]}[command]
    error = one_error(cli(*args, "--store", store.root))
    assert "older lm-router (table format 1" in error
    assert "re-ingest your runs into a new store" in error and "--store NEW_STORE" in error
    assert file_bytes(store.table_path) == before  # nothing rewritten, nothing mixed


def test_new_tables_record_their_format(cli, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("task,instance_id,model,input_text,correct\nt,0,m1,What is 2+2?,1\n")
    assert cli("ingest", "table", csv).exit_code == 0
    store = Store(cli.store)
    assert store.format_version() == FORMAT_VERSION == 2
    table = store.read_table()
    assert list(table["text_rule"]) == ["table"] and list(table["prompt_hash"]) == [""]
    # a table of a newer format is refused as well (never read as if it were ours)
    arrow = pq.read_table(store.table_path)
    pq.write_table(arrow.replace_schema_metadata({b"lm_router_format_version": b"3"}),
                   store.table_path)
    with pytest.raises(Exception, match="newer lm-router"):
        store.read_table()
