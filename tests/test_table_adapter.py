"""Generic table adapter: CSV, TSV (.gz), JSONL, Parquet through the real CLI."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import one_error
from lm_router_plugin.adapters.table import TableAdapter, table_format

from lm_router_plugin.cli.commands import main
from lm_router_plugin.errors import InputError
from lm_router_plugin.registry import adapters
from lm_router_plugin.store.store import Store

COLUMNS = ["task", "instance_id", "model", "correct", "input_text"]
DATA = [  # (task, instance_id, model, correct, input_text)
    ("arith", "q1", "org/model-a", 1, "What is 2+2?\nA. 3\nB. 4"),
    ("arith", "q1", "org/model-b", 0, "What is 2+2?\nA. 3\nB. 4"),
    ("arith", "q2", "org/model-a", 0, 'Say "hi"\tthen stop'),
    ("arith", "q2", "org/model-b", 1, 'Say "hi"\tthen stop'),
    ("geo", "7", "org/model-a", 1, ""),  # empty text stays an empty string
    ("geo", "7", "org/model-b", 1, "NA"),  # "NA" is text, not a missing value
]
ACCURACY = {"arith": {"org/model-a": 0.5, "org/model-b": 0.5},
            "geo": {"org/model-a": 1.0, "org/model-b": 1.0}}


def _write_delimited(path: Path, rows, columns=COLUMNS, delimiter="\t") -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def _write_jsonl(path: Path, rows, columns=COLUMNS) -> Path:
    with open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(dict(zip(columns, row, strict=True))) + "\n")
    return path


def _write_parquet(path: Path, rows, columns=COLUMNS) -> Path:
    pd.DataFrame(rows, columns=columns).to_parquet(path)
    return path


WRITERS = {
    "data.tsv": lambda p, rows, cols=COLUMNS: _write_delimited(p, rows, cols, "\t"),
    "data.tsv.gz": lambda p, rows, cols=COLUMNS: _write_delimited(p, rows, cols, "\t"),
    "data.csv": lambda p, rows, cols=COLUMNS: _write_delimited(p, rows, cols, ","),
    "data.csv.gz": lambda p, rows, cols=COLUMNS: _write_delimited(p, rows, cols, ","),
    "data.jsonl": _write_jsonl,
    "data.parquet": _write_parquet,
}


def _ingest(store: Path, *paths, extra=()):
    return CliRunner().invoke(main, ["ingest", "table", *map(str, paths), "--store", str(store),
                                     *extra])


def _info(store: Path) -> dict:
    result = CliRunner().invoke(main, ["info", "--store", str(store), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def test_entry_point_resolves():
    assert adapters.get("table") is TableAdapter


@pytest.mark.parametrize("name, fmt", [
    ("a.csv", "csv"), ("a.CSV", "csv"), ("a.tsv", "tsv"), ("a.tsv.gz", "tsv"),
    ("a.jsonl", "jsonl"), ("a.jsonl.gz", "jsonl"), ("a.parquet", "parquet"),
    ("a.parquet.gz", None), ("a.xlsx", None), ("a", None), ("v1.2.tsv", "tsv"),
])
def test_table_format(name, fmt):
    assert table_format(Path(name)) == fmt


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_format_round_trips(tmp_path, store, name):
    path = WRITERS[name](tmp_path / name, DATA)
    result = _ingest(store, path)
    assert result.exit_code == 0, result.output
    info = _info(store)
    assert info["accuracy"] == ACCURACY
    assert info["n_rows"] == 6
    table = pd.read_parquet(Store(store).table_path)
    got = {(r.task, r.instance_id, r.model): r for r in table.itertuples()}
    for task, iid, model, correct, text in DATA:
        row = got[(task, iid, model)]
        assert row.correct == correct and row.input_text == text
        assert row.metric == "correct" and row.score == float(correct)
        assert row.source == "table" and row.benchmark == ""
        assert row.origin == str(path)


def test_tsv_with_quoted_multiline_text_like_mmlu_pro(tmp_path):
    text = "Which is prime?\nA. 4\nB. \"5\"\nC. 6"
    path = _write_delimited(tmp_path / "t.tsv.gz", [("math", "1", "m", 1, text),
                                                    ("math", "2", "m", 0, "x\ty")])
    with gzip.open(path, "rt") as fh:
        raw = fh.read()
    assert '"Which is prime?\nA. 4\nB. ""5""\nC. 6"' in raw  # csv-module quoting
    rows = list(TableAdapter().read([path]))
    assert [r.input_text for r in rows] == [text, "x\ty"]
    assert [r.instance_id for r in rows] == ["1", "2"]


def test_score_column_is_thresholded_by_its_metric(tmp_path, store):
    cols = ["task", "instance_id", "model", "score", "metric", "benchmark", "input_text"]
    rows = [("qa", "1", "m", 0.7, "f1_score", "suite", "q1"),
            ("qa", "2", "m", 0.3, "f1_score", "suite", "q2"),
            ("qa", "3", "m", 0.9, "", "suite", "q3")]  # empty metric: default "score"
    path = _write_delimited(tmp_path / "s.csv", rows, cols, ",")
    assert _ingest(store, path).exit_code == 0
    table = pd.read_parquet(Store(store).table_path).set_index("instance_id")
    assert list(table["metric"]) == ["f1_score", "f1_score", "score"]
    assert list(table["correct"]) == [1, 0, 1]
    assert list(table["score"]) == [0.7, 0.3, 0.9]
    assert list(table["threshold"]) == [0.5, 0.5, 0.5]
    assert set(table["benchmark"]) == {"suite"}


def test_correct_and_score_together_keep_both(tmp_path):
    cols = ["task", "instance_id", "model", "correct", "score", "input_text"]
    path = _write_jsonl(tmp_path / "b.jsonl", [("t", 1, "m", 1, 0.2, "q")], cols)
    (row,) = TableAdapter().read([path])
    assert (row.correct, row.score, row.metric, row.instance_id) == (1, 0.2, "score", "1")


def test_numeric_ids_in_parquet_become_strings(tmp_path):
    path = _write_parquet(tmp_path / "n.parquet", [("t", 7, "m", True, "q")])
    (row,) = TableAdapter().read([path])
    assert row.instance_id == "7" and row.correct == 1


def test_folder_reads_every_table_file(tmp_path, store):
    folder = tmp_path / "tables"
    folder.mkdir()
    _write_delimited(folder / "a.tsv", DATA[:3])
    _write_jsonl(folder / "b.jsonl", DATA[3:])
    (folder / "README.md").write_text("ignored")
    assert _ingest(store, folder).exit_code == 0
    assert _info(store)["accuracy"] == ACCURACY


# -- errors ----------------------------------------------------------------------------
def test_missing_column_names_it_and_lists_required(tmp_path, store):
    path = _write_delimited(tmp_path / "m.tsv", [r[:3] + r[4:] for r in DATA],
                            ["task", "instance_id", "model", "input_text"])
    message = one_error(_ingest(store, path))
    assert str(path) in message and "'correct or score'" in message
    assert "required columns: task, instance_id, model, input_text" in message
    path = _write_parquet(tmp_path / "m.parquet", [r[1:] for r in DATA], COLUMNS[1:])
    message = one_error(_ingest(store, path))
    assert "missing column(s) 'task'" in message and "m.parquet" in message


def test_non_numeric_score_names_file_and_line(tmp_path):
    cols = ["task", "instance_id", "model", "score", "input_text"]
    rows = [("t", "1", "m", "0.5", "multi\nline"), ("t", "2", "m", "high", "q")]
    path = _write_delimited(tmp_path / "s.tsv", rows, cols)
    with pytest.raises(InputError, match=r"s\.tsv line 4: column 'score' must be a finite "
                                         r"number, got 'high'"):
        list(TableAdapter().read([path]))
    path = _write_parquet(tmp_path / "s.parquet", [("t", "1", "m", float("nan"), "q")], cols)
    with pytest.raises(InputError, match=r"s\.parquet: row 1: column 'score' must be a finite"):
        list(TableAdapter().read([path]))


@pytest.mark.parametrize("value", ["2", "yes", "0.5", ""])
def test_correct_must_be_0_or_1(tmp_path, value):
    path = _write_delimited(tmp_path / "c.csv", [("t", "1", "m", "1", "q"),
                                                 ("t", "2", "m", value, "q")], delimiter=",")
    with pytest.raises(InputError, match=rf"c\.csv line 3: column 'correct' must be 0 or 1, "
                                         rf"got '{value}'"):
        list(TableAdapter().read([path]))


def test_duplicate_key_names_key_and_lines(tmp_path, store):
    path = _write_jsonl(tmp_path / "d.jsonl", DATA + [DATA[2]])
    message = one_error(_ingest(store, path))
    assert "d.jsonl line 7" in message and "first at line 3" in message
    assert "task='arith' instance_id='q2' model='org/model-a'" in message
    # the same key in two files names both
    other = _write_delimited(tmp_path / "e.tsv", DATA[:1])
    with pytest.raises(InputError, match=r"e\.tsv line 2: duplicate key .* \(first at line 1 "
                                         r"of .*d\.jsonl\)"):
        list(TableAdapter().read([_write_jsonl(tmp_path / "d.jsonl", DATA), other]))


def test_corrupt_parquet_fails_cleanly_and_leaves_the_store(tmp_path, store):
    good = _write_delimited(tmp_path / "good.tsv", DATA)
    assert _ingest(store, good).exit_code == 0
    before = (Store(store).table_path).read_bytes()
    bad = _write_parquet(tmp_path / "bad.parquet", DATA)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3] + b"\x00garbage" * 8)
    message = one_error(_ingest(store, bad))
    assert str(bad) in message and "unreadable Parquet file" in message
    assert "re-export" in message
    assert (Store(store).table_path).read_bytes() == before


def test_unknown_extension_is_a_clear_error(tmp_path, store):
    path = tmp_path / "results.xlsx"
    path.write_bytes(b"PK")
    message = one_error(_ingest(store, path))
    assert "unknown table format '.xlsx'" in message and ".parquet" in message


@pytest.mark.parametrize("content, problem", [
    ("task,instance_id\n", r"missing column\(s\) 'model', 'input_text', 'correct or score'"),
    ("", "empty file"),
])
def test_header_problems(tmp_path, content, problem):
    path = tmp_path / "h.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=problem):
        list(TableAdapter().read([path]))


def test_wrong_field_count_and_bad_json_lines(tmp_path):
    path = tmp_path / "w.tsv"
    path.write_text("task\tinstance_id\tmodel\tcorrect\tinput_text\nt\t1\tm\t1\n")
    with pytest.raises(InputError, match=r"w\.tsv line 2: expected 5 fields, got 4"):
        list(TableAdapter().read([path]))
    path = _write_jsonl(tmp_path / "j.jsonl", DATA[:2])
    path.write_text(path.read_text() + '{"task": "t", \n')
    with pytest.raises(InputError, match=r"j\.jsonl line 3: not valid JSON"):
        list(TableAdapter().read([path]))


def test_bad_gzip_and_encoding(tmp_path):
    path = tmp_path / "z.tsv.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match=r"z\.tsv\.gz: cannot decode file"):
        list(TableAdapter().read([path]))
    path = tmp_path / "latin.csv"
    path.write_bytes("task,instance_id,model,correct,input_text\nt,1,m,1,caf\xe9\n"
                     .encode("latin-1"))
    with pytest.raises(InputError, match=r"latin\.csv line 2: not UTF-8 text: byte 0xe9 at "
                                         r"column 12 .*iconv"):
        list(TableAdapter().read([path]))


@pytest.mark.parametrize("name", ["big.csv", "big.csv.gz", "big.jsonl"])
def test_non_utf8_byte_deep_in_a_file_names_its_line(tmp_path, name):
    """Past the decoder's first buffer: the line and the byte, not a buffer offset."""
    rows = [("t", str(i), "m", 1, "hello") for i in range(3000)]
    rows.append(("t", "3000", "m", 1, "h\xe9llo"))
    path = tmp_path / name
    if name.endswith(".jsonl"):
        text = "".join(json.dumps(dict(zip(COLUMNS, r)), ensure_ascii=False) + "\n"
                       for r in rows)
    else:
        text = "".join(",".join(map(str, r)) + "\n" for r in [COLUMNS, *rows])
    data = text.encode("latin-1")
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    line = 3001 if name.endswith(".jsonl") else 3002
    with pytest.raises(InputError) as info:
        list(TableAdapter().read([path]))
    message = str(info.value)
    assert message.startswith(f"{path} line {line}: not UTF-8 text: byte 0xe9"), message
    assert "position" not in message


def test_header_only_file_says_it_has_no_data_rows(tmp_path, store):
    empty = _write_delimited(tmp_path / "empty.csv", [], delimiter=",")
    message = one_error(_ingest(store, empty))
    assert f"{empty}: has a header line but no data rows" in message
    assert "right adapter" not in message
    # beside a file with rows it is skipped, with a warning
    full = _write_delimited(tmp_path / "full.csv", DATA, delimiter=",")
    result = _ingest(store, empty, full)
    assert result.exit_code == 0, result.output
    assert f"{empty}: has a header line but no data rows; file skipped" in result.output


@pytest.mark.parametrize("name", ["twice.csv", "twice.parquet"])
def test_column_named_twice_is_an_error(tmp_path, name):
    columns = [*COLUMNS, "correct"]
    rows = [(*DATA[0], 0)]
    path = tmp_path / name
    if name.endswith(".csv"):
        _write_delimited(path, rows, columns, ",")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.Table.from_arrays([pa.array([v]) for v in rows[0]], names=columns),
                       path)
    with pytest.raises(InputError, match=r"column\(s\) 'correct' appear more than once") as info:
        list(TableAdapter().read([path]))
    assert str(info.value).startswith(str(path))


def test_empty_key_value_is_an_error(tmp_path):
    path = _write_delimited(tmp_path / "k.tsv", [("t", "", "m", 1, "q")])
    with pytest.raises(InputError, match=r"k\.tsv line 2: empty value in column 'instance_id'"):
        list(TableAdapter().read([path]))
