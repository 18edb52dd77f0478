"""Read generic long tables: one row per (task, instance, model) in CSV, TSV, JSONL or Parquet.

Columns: ``task, instance_id, model, input_text`` and ``correct`` (0/1) or ``score`` (a raw
metric value, thresholded by the ``metric`` column's eta), plus optional ``metric`` and
``benchmark``. Text formats may be gzip-compressed (``.csv.gz``, ``.tsv.gz``, ``.jsonl.gz``)::

    from lm_router_plugin.adapters.table import TableAdapter
    rows = list(TableAdapter().read([Path("results.tsv.gz")]))
    rows[0].correct    # 1
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import logging
import math
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

import orjson

from ..errors import InputError
from .base import Adapter, Row

logger = logging.getLogger(__name__)

TASK, INSTANCE_ID, MODEL, INPUT_TEXT = "task", "instance_id", "model", "input_text"
CORRECT, SCORE, METRIC, BENCHMARK = "correct", "score", "metric", "benchmark"
REQUIRED = (TASK, INSTANCE_ID, MODEL, INPUT_TEXT)
OPTIONAL = (METRIC, BENCHMARK)
#: The order in which readers hand cell values to the row builder.
ORDER = (TASK, INSTANCE_ID, MODEL, INPUT_TEXT, CORRECT, SCORE, METRIC, BENCHMARK)
#: Extension -> format. Text formats also read ``<ext>.gz``.
FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}
_TEXT_FORMATS = {"csv", "tsv", "jsonl"}
_TRUE = {"1", "1.0", "true", "True", "TRUE"}
_FALSE = {"0", "0.0", "false", "False", "FALSE"}
_CORRECT_STR = {**dict.fromkeys(_TRUE, 1), **dict.fromkeys(_FALSE, 0)}
_BATCH_ROWS = 65_536
#: What a file without rows has (format -> message).
_NO_ROWS = {"csv": "has a header line but no data rows", "tsv": "has a header line but no data "
            "rows", "jsonl": "has no JSON records (empty or blank lines only)",
            "parquet": "has the columns but no rows"}
_COLUMNS_HINT = (f"required columns: {', '.join(REQUIRED)} and '{CORRECT}' (0/1) or "
                 f"'{SCORE}'; optional: {', '.join(OPTIONAL)}")

# Prompts can be long; the csv module's default limit is 128 KiB per field.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def table_format(path: Path) -> str | None:
    """'csv', 'tsv', 'jsonl' or 'parquet' from the file name (``.gz`` for text formats)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        fmt = FORMATS.get(suffixes[-2]) if len(suffixes) > 1 else None
        return fmt if fmt in _TEXT_FORMATS else None
    return FORMATS.get(suffixes[-1]) if suffixes else None


class _Columns:
    """Which columns a file has, and the row builder for them."""

    def __init__(self, path: Path, names: Sequence[str],
                 seen: dict[tuple[str, str, str], tuple[str, int]], *, where: str = "header"):
        self.path = path
        self.names = list(names)
        present = set(self.names)
        if len(present) < len(self.names):  # which of the two would be read is a guess
            twice = sorted({n for n in self.names if self.names.count(n) > 1})
            raise InputError(path, f"column(s) {', '.join(map(repr, twice))} appear more than "
                                   f"once in the {where}",
                             line=1 if where == "header" else None,
                             hint="rename or drop the extra column(s)")
        missing = [c for c in REQUIRED if c not in present]
        if CORRECT not in present and SCORE not in present:
            missing.append(f"{CORRECT} or {SCORE}")
        if missing:
            raise InputError(path, f"missing column(s) {', '.join(repr(m) for m in missing)} "
                                   f"in the {where} (found: {', '.join(self.names) or 'none'})",
                             hint=_COLUMNS_HINT)
        self.has_correct = CORRECT in present
        self.has_score = SCORE in present
        self.has_metric = METRIC in present
        self.has_benchmark = BENCHMARK in present
        self.default_metric = SCORE if self.has_score else CORRECT
        self.origin = str(path)
        self.seen = seen  # key -> (file, line or row) over every file of one read()

    def row(self, values: Sequence[Any], where: int, unit: str = "line") -> Row:
        """A Row from the cell values in :data:`ORDER` (None for an absent column).

        ``where`` is the line (text formats) or row number (Parquet) named in errors.
        """
        task, instance_id, model, text, correct, score, metric, benchmark = values
        if type(task) is not str or not task:
            task = self._key(task, TASK, where, unit)
        if type(instance_id) is not str or not instance_id:
            instance_id = self._key(instance_id, INSTANCE_ID, where, unit)
        if type(model) is not str or not model:
            model = self._key(model, MODEL, where, unit)
        if type(text) is not str:
            text = "" if text is None else _to_str(text)
        if self.has_correct:
            correct = _CORRECT_STR.get(correct) if type(correct) is str else None
            if correct is None:
                correct = self._correct(values[4], where, unit)
        score = self._score(score, where, unit) if self.has_score else float(correct)
        metric = self.default_metric if metric is None or metric == "" else str(metric)
        benchmark = "" if benchmark is None else str(benchmark)
        here = (self.origin, where)
        first = self.seen.setdefault((task, instance_id, model), here)
        if first is not here:
            at = f"{unit} {first[1]}" + ("" if first[0] == self.origin else f" of {first[0]}")
            raise self._error(where, unit, f"duplicate key task={task!r} "
                                           f"instance_id={instance_id!r} model={model!r} (first "
                                           f"at {at})",
                              "each (task, instance_id, model) may appear only once")
        return Row("table", benchmark, task, instance_id, text, model, metric, score, None,
                   self.origin, correct, "", "table")  # input_text as given

    def _key(self, value: Any, column: str, where: int, unit: str) -> str:
        """A key cell as a string; empty or missing is an error."""
        if value is None or value == "":
            raise self._error(where, unit, f"empty value in column '{column}'",
                              "every row needs a task, an instance_id and a model")
        return _to_str(value)

    def _correct(self, value: Any, where: int, unit: str) -> int:
        if isinstance(value, str):
            if value in _TRUE:
                return 1
            if value in _FALSE:
                return 0
        elif isinstance(value, (bool, int, float)) and value in (0, 1):
            return int(value)
        raise self._error(where, unit, f"column '{CORRECT}' must be 0 or 1, got {value!r}",
                          f"use '{SCORE}' (plus '{METRIC}') for graded values")

    def _score(self, value: Any, where: int, unit: str) -> float:
        number = math.nan
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif type(value) is str:
            with contextlib.suppress(ValueError):
                number = float(value)
        if not math.isfinite(number):
            raise self._error(where, unit, f"column '{SCORE}' must be a finite number, got "
                                           f"{value!r}", "fix or drop this row")
        return number

    def _error(self, where: int, unit: str, problem: str, hint: str) -> InputError:
        if unit == "line":
            return InputError(self.path, problem, line=where, hint=hint)
        return InputError(self.path, f"{unit} {where}: {problem}", hint=hint)


def _to_str(value: Any) -> str:
    """Table cells as strings: integral floats lose their ``.0`` (ids read as numbers)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class TableAdapter(Adapter):
    """Reads long tables of per-instance results (CSV, TSV, JSONL, Parquet; text also .gz).

    Each file needs the columns ``task, instance_id, model, input_text`` and ``correct``
    (0/1, used as is) or ``score`` (thresholded with the eta of its ``metric``: default
    ``"score"``, or ``"correct"`` for a ``correct`` column). Optional: ``metric``,
    ``benchmark``. Empty strings stay strings (no NA conversion); other columns are ignored.
    A folder is read file by file (known extensions only).

    Example:
        >>> rows = list(TableAdapter().read([Path("mmlu_pro/table.tsv.gz")]))
        >>> rows[0].task, rows[0].correct
        ('biology', 1)
    """

    name = "table"

    def read(self, paths: Sequence[Path]) -> Iterator[Row]:
        """Yield one row per line (CSV/TSV/JSONL) or table row (Parquet).

        Raises:
            InputError: unknown extension, unreadable or non-UTF-8 file, a missing or
                repeated column, a non-numeric score, ``correct`` outside {0, 1}, a key that
                appears twice (names the file and the line or row), or no rows in any file
                (a file without rows among others is skipped with a warning).
        """
        seen: dict[tuple[str, str, str], tuple[str, int]] = {}
        empty: list[Path] = []
        n_all = 0
        for path in self._files(paths):
            fmt = table_format(path)
            reader = {"csv": self._read_delimited, "tsv": self._read_delimited,
                      "jsonl": self._read_jsonl, "parquet": self._read_parquet}[fmt or ""]
            n = 0
            for row in reader(path, fmt or "", seen):
                n += 1
                yield row
            if n == 0:
                empty.append(path)
            else:
                logger.info("%s: %d rows", path, n)
            n_all += n
        if n_all == 0 and empty:  # else ingest would ask "is this the right adapter?"
            more = f" (and {len(empty) - 1} more empty file(s))" if len(empty) > 1 else ""
            raise InputError(empty[0], _NO_ROWS[table_format(empty[0]) or ""] + more,
                             hint="add one row per (task, instance_id, model); "
                                  + _COLUMNS_HINT)
        for path in empty:
            logger.warning("%s: %s; file skipped", path, _NO_ROWS[table_format(path) or ""])

    @staticmethod
    def _files(paths: Sequence[Path]) -> list[Path]:
        files: list[Path] = []
        for path in map(Path, paths):
            if path.is_dir():
                found = sorted(p for p in path.rglob("*") if p.is_file() and table_format(p))
                if not found:
                    raise InputError(path, "no table files in this folder",
                                     hint="expected .csv, .tsv, .jsonl (optionally .gz) or "
                                          ".parquet files")
                files.extend(found)
            elif table_format(path) is None:
                shown = "".join(path.suffixes) or path.name
                raise InputError(path, f"unknown table format '{shown}'",
                                 hint="use .csv, .tsv, .jsonl (each optionally .gz) or .parquet")
            else:
                files.append(path)
        return files

    # -- text formats ------------------------------------------------------------------
    @staticmethod
    def _open_text(path: Path) -> IO[str]:
        try:
            if path.suffix.lower() == ".gz":
                # A large buffer: TextIOWrapper's small reads on a GzipFile are slow.
                raw = io.BufferedReader(gzip.open(path, "rb"), buffer_size=1 << 20)  # noqa: SIM115
                return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            # closed by _TextGuard
            return open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115
        except OSError as exc:
            raise InputError(path, f"cannot read file: {exc.strerror or exc}") from exc

    def _read_delimited(self, path: Path, fmt: str, seen: dict) -> Iterator[Row]:
        delimiter = "," if fmt == "csv" else "\t"
        with self._guard(path) as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            try:
                header = next(reader, None)
            except csv.Error as exc:
                raise InputError(path, f"not a valid {fmt.upper()} header: {exc}",
                                 line=1) from exc
            if header is None:
                raise InputError(path, "empty file (no header line)", hint=_COLUMNS_HINT)
            header = [h.strip() for h in header]
            cols = _Columns(path, header, seen)
            index = {name: i for i, name in enumerate(header)}
            width = len(header)
            # an absent column reads the None appended after the last field
            pick = itemgetter(*(index.get(c, width) for c in ORDER))
            line = reader.line_num + 1  # first physical line of the next record
            while True:
                try:
                    fields = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    raise InputError(path, f"malformed {fmt.upper()}: {exc}", line=line,
                                     hint="check the quoting around this line") from exc
                if len(fields) != width:
                    if not fields:  # blank line
                        line = reader.line_num + 1
                        continue
                    raise InputError(path, f"expected {width} fields, got {len(fields)}",
                                     line=line,
                                     hint="quote fields that contain the delimiter, tabs or "
                                          "newlines")
                fields.append(None)
                yield cols.row(pick(fields), line)
                line = reader.line_num + 1

    def _read_jsonl(self, path: Path, fmt: str, seen: dict) -> Iterator[Row]:
        cols: _Columns | None = None
        with self._guard(path) as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    raise InputError(path, f"not valid JSON at column {exc.colno}: {exc.msg}",
                                     line=number, hint="each line must be one JSON object"
                                     ) from exc
                if not isinstance(obj, dict):
                    raise InputError(path, f"expected a JSON object, got "
                                           f"{type(obj).__name__}", line=number)
                if cols is None:
                    cols = _Columns(path, list(obj), seen, where=f"first record (line {number})")
                else:
                    missing = [c for c in cols.names if c not in obj]
                    if missing:
                        raise InputError(path, f"missing key(s) {missing}", line=number,
                                         hint="every line needs the keys of the first line")
                yield cols.row([obj.get(c) for c in ORDER], number)

    # -- Parquet -----------------------------------------------------------------------
    def _read_parquet(self, path: Path, fmt: str, seen: dict) -> Iterator[Row]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        hint = "the file is corrupt or not Parquet; re-export it (e.g. DataFrame.to_parquet)"
        try:
            pfile = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(path, f"unreadable Parquet file: {exc}", hint=hint) from exc
        names = pfile.schema_arrow.names
        cols = _Columns(path, names, seen, where="schema")
        wanted = [c for c in (*REQUIRED, CORRECT, SCORE, *OPTIONAL) if c in names]
        number = 0
        batches: Iterable[Any] = pfile.iter_batches(batch_size=_BATCH_ROWS, columns=wanted)
        it = iter(batches)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                break
            except (pa.ArrowException, OSError) as exc:
                raise InputError(path, f"unreadable Parquet data after row {number}: {exc}",
                                 hint=hint) from exc
            data = {name: batch.column(i).to_pylist()
                    for i, name in enumerate(batch.schema.names)}
            absent = [None] * batch.num_rows
            for values in zip(*(data.get(c, absent) for c in ORDER), strict=True):
                number += 1
                yield cols.row(values, number, "row")

    # -- helpers -----------------------------------------------------------------------
    def _guard(self, path: Path) -> _TextGuard:
        return _TextGuard(path, self._open_text(path))


class _TextGuard:
    """Context manager over an open text file: decoding and gzip errors become InputError."""

    def __init__(self, path: Path, fh: IO[str]):
        self.path = path
        self.fh = fh

    def __enter__(self) -> IO[str]:
        return self.fh

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self.fh.close()
        if exc_type is not None and issubclass(exc_type, UnicodeDecodeError):
            found = _first_bad_utf8(self.path)
            if found is not None:  # the decoder's offset is into its buffer, not the file
                line, column, byte = found
                raise InputError(self.path, f"not UTF-8 text: byte 0x{byte:02x} at column "
                                            f"{column} cannot be decoded", line=line,
                                 hint="save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                                 ) from exc
        if exc_type is not None and issubclass(
                exc_type, (UnicodeDecodeError, gzip.BadGzipFile, EOFError, zlib.error)):
            raise InputError(self.path, f"cannot decode file: {exc}",
                             hint="expected UTF-8 text (gzip-compressed for .gz)") from exc
        if exc_type is not None and issubclass(exc_type, OSError) and \
                not issubclass(exc_type, InputError):
            raise InputError(self.path, f"cannot read file: {exc}") from exc
        return False


def _first_bad_utf8(path: Path) -> tuple[int, int, int] | None:
    """(line, column in bytes, byte) of the first byte that is not UTF-8; None if every line
    decodes or the file cannot be read again. Lines split at b"\\n", which no multi-byte
    UTF-8 character contains."""
    try:
        opener = gzip.open if path.suffix.lower() == ".gz" else open
        with opener(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    return number, exc.start + 1, raw[exc.start]
    except (OSError, EOFError, zlib.error):
        return None
    return None


__all__ = ["TableAdapter", "table_format"]
