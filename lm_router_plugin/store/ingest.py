"""Fill the store's correctness table from harness outputs.

    >>> report = ingest("lm-eval", ["runs/"], Store("lm-router-store"))
    >>> report.n_added, report.n_unchanged
    (1200, 0)

Rows stream from the adapter; thresholds turn metric values into 0/1; the result is merged
with the stored table (identical rows are skipped, a different value for an existing key is
a :class:`ConflictError` naming both files) and committed with the model metadata as one
atomic store generation, under the store's writer lock (store.py).
"""

from __future__ import annotations

import gc
import logging
import math
import multiprocessing
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from ..errors import ConflictError, InputError, PluginOutputError, SchemaError
from ..progress import progress_bar
from ..registry import adapters
from .schema import (
    ARROW_DICT_SCHEMA,
    ARROW_SCHEMA,
    BENCHMARK,
    COLUMNS,
    CORRECT,
    INPUT_TEXT,
    INSTANCE_ID,
    KEY,
    METRIC,
    MODEL,
    ORIGIN,
    PROMPT_HASH,
    SCORE,
    SOURCE,
    TASK,
    TEXT_RULE,
    THRESHOLD,
)
from .store import Store, parse_params
from .thresholds import FALLBACK_ETA, Rule, Thresholds

logger = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What one ingest did."""

    n_read: int
    n_added: int
    n_unchanged: int
    n_replaced: int
    models: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)


class BatchBuilder:
    """Collects adapter rows and turns them into Arrow record batches (ARROW_DICT_SCHEMA):
    thresholds applied, string columns dictionary-encoded, every ``batch_rows`` rows.

    Per row only an append and, when the (task, metric, direction) changes, a rule lookup
    run in Python; the thresholds (numpy, per rule), the transposition (zip) and the
    encoding run per batch. Memory holds at most one batch of Python rows.
    """

    def __init__(self, thresholds: Thresholds, where: str, batch_rows: int = 1 << 16):
        self.thresholds = thresholds
        self.where = where
        self.batch_rows = batch_rows
        self.rules: dict[tuple[str, str, bool | None], Rule] = {}
        self.n_rows = 0
        self._clear()

    def _clear(self) -> None:
        self.rows: list[Any] = []
        self.rule_col: list[Rule | None] = []  # per row: its rule, None if correct is given

    def add_all(self, rows: Iterable[Any]) -> Iterator[pa.RecordBatch]:
        """Add rows; yield a batch whenever ``batch_rows`` are collected (and the rest at the end)."""
        rules, thresholds = self.rules, self.thresholds
        add_row, add_rule = self.rows.append, self.rule_col.append
        size = self.batch_rows
        rule = last = None
        n = 0
        for row in rows:
            add_row(row)
            if row.correct is None:
                # rows come in runs of one file (one task and metric): look up on a change
                key = (row.task, row.metric, row.higher_is_better)
                if key != last:
                    rule = rules.get(key)
                    if rule is None:
                        rule = rules[key] = thresholds.rule(*key)
                    last = key
                add_rule(rule)
            else:
                add_rule(None)
            n += 1
            if n >= size:
                yield self.flush()
                add_row, add_rule = self.rows.append, self.rule_col.append
                n = 0
        if self.rows:
            yield self.flush()

    def flush(self) -> pa.RecordBatch:
        (source, benchmark, task, instance_id, input_text, model, metric, score, _, origin,
         correct, prompt_hash, text_rule) = zip(*self.rows)
        strings = {SOURCE: source, BENCHMARK: benchmark, TASK: task, INSTANCE_ID: instance_id,
                   INPUT_TEXT: input_text, MODEL: model, METRIC: metric, ORIGIN: origin,
                   PROMPT_HASH: prompt_hash, TEXT_RULE: text_rule}
        rule_col = self.rule_col
        offset = self.n_rows
        self.n_rows += len(rule_col)
        self._clear()
        score_array = _float_array(score)
        rule_of = {id(rule): rule for rule in self.rules.values()}  # equal rules are not one
        rule_of[id(None)] = None
        threshold, correct_array = _apply_rules(rule_col, rule_of, score, score_array,
                                                correct, self.where, offset)
        arrays = []
        for name in COLUMNS:
            if name in strings:
                arrays.append(_dictionary_array(strings[name], shared=name == INPUT_TEXT))
            elif name == SCORE:
                arrays.append(score_array)
            elif name == THRESHOLD:
                arrays.append(pa.array(threshold, pa.float64(), from_pandas=True))
            else:
                arrays.append(correct_array)
        return pa.RecordBatch.from_arrays(arrays, schema=ARROW_DICT_SCHEMA)


def _string_array(values: Sequence[Any]) -> pa.Array:
    try:
        return pa.array(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a plugin gave ints etc.
        return pa.array([str(v) for v in values], pa.string())


def _dictionary_array(values: Sequence[Any], shared: bool = False) -> pa.DictionaryArray:
    """``values`` dictionary-encoded (int32 indices, first-occurrence order), as
    ``pa.array(values).dictionary_encode()``. A column of one string (source, task, model,
    ... of one file) skips the hashing; ``shared``: the long texts repeat as the same
    objects (one per doc, shared between models), so only the distinct objects are copied
    and hashed."""
    n = len(values)
    first = values[0]
    if type(first) is str and values.count(first) == n:
        return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)),
                                              pa.array([first], pa.string()))
    if shared:
        # codes in first-occurrence order of the objects; their first rows are where a
        # code exceeds every code before it
        codes, uniques = pd.factorize(np.fromiter(map(id, values), np.int64, n))
        if len(uniques) < n:
            seen_max = np.maximum.accumulate(codes)
            firsts = np.flatnonzero(np.concatenate(([True], codes[1:] > seen_max[:-1])))
            encoded = _string_array([values[i] for i in firsts.tolist()]).dictionary_encode()
            return pa.DictionaryArray.from_arrays(
                encoded.indices.take(pa.array(codes.astype(np.int32))), encoded.dictionary)
    return _string_array(values).dictionary_encode()


def _apply_rules(rule_col: list[Any], rule_of: dict[int, Any], score: Sequence[Any],
                 score_array: pa.Array, correct: Sequence[Any], where: str, offset: int
                 ) -> tuple[np.ndarray, pa.Array]:
    """(threshold per row, NaN for none; the int8 correct column) of one batch.

    Each rule's rows are thresholded at once (Rule.apply_array; ``rule_of``: id -> rule);
    rows whose ``score`` is no number (null in ``score_array``) go through Rule.apply one
    by one, as every row did before; a given ``correct`` is checked to be 0 or 1.
    """
    n = len(rule_col)
    threshold = np.full(n, np.nan)
    out = np.zeros(n, np.int8)
    scores = score_array.to_numpy(zero_copy_only=False)  # null -> NaN
    valid = ~np.isnan(scores)
    codes, uniques = pd.factorize(np.fromiter(map(id, rule_col), np.int64, n))
    # each rule's rows, from one sort (a mask per rule would cost rows x rules)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    for code, rule_id in enumerate(uniques.tolist()):
        rule = rule_of[rule_id]
        idx = order[bounds[code]:bounds[code + 1]]
        if rule is None:  # correctness given by the source: checked, no threshold
            out[idx] = _correct_array([correct[i] for i in idx.tolist()], where, offset,
                                      idx).to_numpy(zero_copy_only=False)
            continue
        ok = valid[idx]
        numeric = idx[ok]
        threshold[numeric], out[numeric] = rule.apply_array(scores[numeric])
        for i in idx[~ok].tolist():  # None, NaN, ...: one by one
            eta, out[i] = rule.apply(score[i])
            threshold[i] = np.nan if eta is None else eta
    return threshold, pa.array(out, pa.int8())


def _float_array(values: Sequence[Any]) -> pa.Array:
    try:
        return pa.array(values, pa.float64(), from_pandas=True)  # NaN -> null, as pandas did
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
        return pa.array(numbers.astype(float), pa.float64(), from_pandas=True)


def _correct_array(values: Sequence[Any], where: str, offset: int,
                   rows: np.ndarray | None = None) -> pa.Array:
    """The given 0/1 values as int8; SchemaError naming the first other value. ``rows``: the
    batch rows ``values`` come from (default: all of them, in order)."""
    numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(float)
    bad = ~np.isin(numbers, (0, 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        row = i if rows is None else int(rows[i])
        raise SchemaError(f"{where}: column '{CORRECT}' must be 0 or 1, got {values[i]!r} "
                          f"at row {offset + row}")
    return pa.array(numbers.astype(np.int8), pa.int8())


def _read_unit(unit_index: int) -> tuple[bytes, dict[str, Any]]:
    """Worker process: read one work unit of the adapter set up by :func:`_init_worker`;
    (Arrow IPC stream of its record batches, the adapter's notes for the parent)."""
    adapter, units, thresholds, where = _WORKER
    data = rows_to_ipc(adapter_rows(adapter, adapter.read_unit(units[unit_index])),
                       thresholds, where)
    state = adapter.unit_state()
    state["_logs"] = list(_LOGS.records)
    _LOGS.records.clear()
    return data, state


def adapter_rows(adapter: Any, rows: Iterable[Any]) -> Iterable[Any]:
    """``rows`` as they are from the package's own adapters (they check their input); from
    a plugin's adapter, each row checked against the Row contract first, so that a bad row
    is one error naming the adapter and the field, not a traceback or a silently wrong
    table (a None text embedded as one text, a NaN score stored as incorrect)."""
    if type(adapter).__module__.split(".")[0] == "lm_router_plugin":
        return rows
    return _checked_rows(adapter, rows)


def _checked_rows(adapter: Any, rows: Iterable[Any]) -> Iterator[Any]:
    from ..adapters.base import Row

    who = f"adapter '{adapter.name or type(adapter).__name__}' ({type(adapter).__module__})"
    for n, row in enumerate(rows):
        problem = ""
        if not isinstance(row, Row):
            problem = f"a {type(row).__name__}, not an adapters.base.Row"
        else:
            for name in ("task", "instance_id", "input_text", "model"):
                value = getattr(row, name)
                if not isinstance(value, str) or (name != "input_text" and not value):
                    problem = f"{name} = {value!r} (a non-empty string is needed)"
                    break
            if not problem and row.correct is None:
                score = row.score
                if isinstance(score, bool) or not isinstance(score, (int, float, np.number)) \
                        or not math.isfinite(score):
                    problem = (f"score = {score!r} with correct None (a finite number is "
                               "needed, or correct 0/1)")
                elif not isinstance(row.metric, str) or not row.metric:
                    problem = f"metric = {row.metric!r} (a metric name is needed)"
        if problem:
            origin = getattr(row, "origin", "") or "?"
            raise PluginOutputError(f"{who}: row {n + 1} (from {origin}): {problem}")
        yield row


@contextmanager
def gc_paused() -> Iterator[None]:
    """CPython's cyclic garbage collector run rarely while rows are read: at its default
    thresholds it traverses the rows held for a batch (and a file's pending samples) every
    few hundred allocations, about a fifth of the reading time. Not off: what does make
    cycles (a failed template render's traceback, a plugin) is still collected."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], 100_000), max(before[1], 50), max(before[2], 100))
    try:
        yield
    finally:
        gc.set_threshold(*before)


def rows_to_ipc(rows: Iterable[Any], thresholds: Thresholds, where: str) -> bytes:
    """Adapter rows as an Arrow IPC stream of BatchBuilder's record batches (what a worker
    sends back: the local engine's processes and the ray engine's tasks alike)."""
    builder = BatchBuilder(thresholds, where)
    sink = pa.BufferOutputStream()
    with gc_paused(), pa.ipc.new_stream(sink, ARROW_DICT_SCHEMA) as writer:
        for batch in builder.add_all(rows):
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


class _Collect(logging.Handler):
    """A worker's log handler: keeps the records for the parent to emit (in unit order,
    through the parent's own handlers)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.records and self.records[-1] is record:  # reached through two loggers
            return
        record.msg, record.args = record.getMessage(), None  # picklable, formatted once
        record.exc_info = record.exc_text = None
        self.records.append(record)


_LOGS = _Collect()
_WORKER: tuple[Any, ...] = ()


def _init_worker(adapter_name: str, options: dict[str, Any], units: list[Any],
                 thresholds: Thresholds, where: str) -> None:
    global _WORKER
    # forked: the loggers keep the parent's levels; their handlers are replaced by one that
    # sends the records back
    for logger_ in [logging.getLogger()] + [
            obj for obj in logging.Logger.manager.loggerDict.values()
            if isinstance(obj, logging.Logger)]:
        if logger_.handlers or logger_ is logging.getLogger():
            for handler in list(logger_.handlers):
                logger_.removeHandler(handler)
            logger_.addHandler(_LOGS)
    adapter = adapters.get(adapter_name)(thresholds=thresholds, **options)
    _WORKER = (adapter, units, thresholds, where)


def default_workers() -> int:
    """Worker processes for reading: ``$LM_ROUTER_WORKERS``, else the usable cores."""
    env = os.environ.get("LM_ROUTER_WORKERS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def read_arrow(adapter_name: str, paths: Sequence[str | Path],
               thresholds: Thresholds | None = None, *, workers: int | None = None,
               engine: Any = None, **options: Any) -> tuple[pa.Table, dict[str, dict[str, Any]]]:
    """Run one adapter over ``paths``: (Arrow table of new rows, ARROW_DICT_SCHEMA; model
    metadata). Keys are checked unique; ``correct`` is 0/1.

    An adapter that splits its input into independent work units (``plan``; lm-eval: one
    unit per task, helm: per run folder, eee: per aggregate file) is read by ``workers`` processes (default: the usable
    cores), each returning Arrow IPC; the others are read in this process. Either way
    memory holds dictionary-encoded batches, not a Python object per row. ``engine``: a
    started engines.RayEngine reads the units (or the whole input) as Ray tasks instead;
    the batches, their order and dictionaries are the same.
    """
    thresholds = thresholds or Thresholds.load()
    adapter = adapters.get(adapter_name)(thresholds=thresholds, **options)
    paths = [Path(p) for p in paths]
    remote = tuple(getattr(adapter, "remote_prefixes", ()))  # e.g. lm-eval's hf://datasets/
    for path in paths:
        if not path.exists() and not (remote and str(path).startswith(remote)):
            raise InputError(path, "no such file or folder")
    where = ", ".join(map(str, paths))
    workers = default_workers() if workers is None else max(1, workers)
    plan = getattr(adapter, "plan", None)
    units = plan(paths) if callable(plan) else None
    batches: list[pa.RecordBatch] = []
    desc = f"reading ({adapter_name})"
    if engine is not None:  # engines.py: Ray tasks, results in the order used below
        batches, metadata = engine.read(adapter, adapter_name, options, units, thresholds,
                                        where, paths)
    elif units is None:  # one stream of rows: count them (tqdm's check per row is cheap)
        with progress_bar(adapter_rows(adapter, adapter.read(paths)), desc=desc, unit=" rows",
                          unit_scale=True) as rows, gc_paused():
            batches.extend(BatchBuilder(thresholds, where).add_all(rows))
        metadata = adapter.model_metadata
    elif workers == 1 or len(units) <= 1:
        states = []
        with _files_bar(units, desc) as bar, gc_paused():
            for unit in units:
                new = list(BatchBuilder(thresholds, where).add_all(
                    adapter_rows(adapter, adapter.read_unit(unit))))
                batches.extend(new)
                states.append(adapter.unit_state())
                check_unit(adapter, states[-1])
                _advance(bar, unit, new)
        adapter.finish(states, paths)
        metadata = adapter.model_metadata
    else:
        batches, metadata = _read_parallel(adapter, adapter_name, options, units, thresholds,
                                           where, min(workers, len(units)), paths)
    if not batches or not any(b.num_rows for b in batches):
        raise InputError(where, f"nothing recognisable for the '{adapter_name}' adapter",
                         hint=f"is this the right adapter? available: {', '.join(adapters.names())}")
    table = pa.Table.from_batches(batches, schema=ARROW_DICT_SCHEMA)
    del batches
    check_unique_keys(table, where)
    log_binary_fallback(table, thresholds)
    return table, metadata


def log_binary_fallback(table: pa.Table, thresholds: Thresholds) -> None:
    """One warning per (task, metric) of a declared binary metric with values outside
    {0, 1}: Rule.apply thresholded them at FALLBACK_ETA (thresholds.yaml says so). Counted
    here, on the whole new table, so that a task read in several units warns once."""
    metrics = [m for m in _distinct(table, METRIC) if thresholds.is_binary(m)]
    if not metrics:
        return
    # the fallback is the only way a binary metric's row gets an eta recorded
    mask = pc.and_(pc.equal(table.column(THRESHOLD), FALLBACK_ETA),
                   pc.is_in(table.column(METRIC), value_set=pa.array(metrics, pa.string())))
    hits = table.select([TASK, METRIC]).filter(mask)
    if not hits.num_rows:
        return
    counts = hits.to_pandas().groupby([TASK, METRIC], observed=True, sort=True).size()
    for (task, metric), n in counts.items():
        if thresholds.is_binary(str(metric), str(task)):
            logger.warning("task %s: metric '%s' is binary, but %d value(s) are outside "
                           "{0, 1}; they were thresholded at %g (set an eta with --thresholds "
                           "tasks: {%s: {metric: %s, threshold: X}})", task, metric, n,
                           FALLBACK_ETA, task, metric)


def _read_parallel(adapter: Any, adapter_name: str, options: dict[str, Any], units: list[Any],
                   thresholds: Thresholds, where: str, workers: int, paths: list[Path]
                   ) -> tuple[list[pa.RecordBatch], dict[str, dict[str, Any]]]:
    """Read ``units`` in ``workers`` processes; results in unit order (deterministic)."""
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
    batches: list[pa.RecordBatch] = []
    states = []
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                             initargs=(adapter_name, options, units, thresholds, where)) as pool, \
            _files_bar(units, f"reading ({adapter_name}, {workers} processes)") as bar:
        futures = {pool.submit(_read_unit, i): i for i in largest_first(adapter, units)}
        in_plan_order: list[Future] = sorted(futures, key=futures.__getitem__)
        for future in as_completed(futures):
            bar.update(_unit_files(units[futures[future]]))  # progress as units finish
            # the results in plan order, as read serially (a worker's error too)
            while len(states) < len(units) and in_plan_order[len(states)].done():
                unit = units[len(states)]
                data, state = in_plan_order[len(states)].result()
                for record in state.pop("_logs"):
                    logging.getLogger(record.name).handle(record)
                with pa.ipc.open_stream(data) as reader:
                    new = list(reader)
                batches.extend(new)
                del data
                states.append(state)
                check_unit(adapter, state)
                _advance(bar, unit, new, files=False)
    adapter.finish(states, paths)
    return batches, adapter.model_metadata


def largest_first(adapter: Any, units: Sequence[Any]) -> list[int]:
    """The order to start ``units`` in: by the adapter's ``unit_cost`` (bytes to read),
    largest first (ties and adapters without it: plan order). With one large task last in
    the plan, a pool started in plan order would read it alone at the end; its results are
    still handled in plan order, so only the wall time changes."""
    cost = getattr(adapter, "unit_cost", None)
    if not callable(cost):
        return list(range(len(units)))
    costs = [cost(unit) for unit in units]
    return sorted(range(len(units)), key=lambda i: -costs[i])  # stable: ties in plan order


def check_unit(adapter: Any, state: dict[str, Any]) -> None:
    """The adapter's checks that span units, unit by unit in plan order, after the unit's
    log records were emitted (``adapter.check_unit``, when it has one: helm and eee raise a
    unit's error there, eee checks a sample against the runs before it); every engine calls
    it where the serial read would have met the same problem."""
    check = getattr(adapter, "check_unit", None)
    if callable(check):
        check(state)


def _unit_files(unit: Any) -> int:
    """How many files a work unit holds (the lm-eval adapter's: a list of sample files)."""
    return len(unit) if isinstance(unit, (list, tuple)) else 1


def _files_bar(units: Sequence[Any], desc: str) -> Any:
    """Progress over the files of ``units`` (stderr; hidden under ``-q``)."""
    return progress_bar(total=sum(_unit_files(u) for u in units), desc=desc, unit=" files")


def _advance(bar: Any, unit: Any, batches: Sequence[pa.RecordBatch], files: bool = True
             ) -> None:
    """One unit read (its record ``batches``): the rows so far as postfix, and its files
    done (``files``; False: counted already, when the unit finished out of plan order)."""
    if not bar.disable:
        bar.n_rows = getattr(bar, "n_rows", 0) + sum(b.num_rows for b in batches)
        bar.set_postfix_str(f"{bar.n_rows:,} rows", refresh=not files)
    if files:
        bar.update(_unit_files(unit))


def read_rows(adapter_name: str, paths: Sequence[str | Path],
              thresholds: Thresholds | None = None, **options: Any
              ) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Run one adapter over ``paths``: (validated table of new rows, model metadata), as a
    pandas DataFrame with plain string columns (see :func:`read_arrow` for large inputs)."""
    table, metadata = read_arrow(adapter_name, paths, thresholds, **options)
    return to_pandas(table), metadata


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """A correctness table with plain ``str`` columns (what validate_table returns)."""
    out = table.cast(ARROW_SCHEMA).to_pandas()
    return out[COLUMNS].reset_index(drop=True)


def key_codes(*tables: pa.Table) -> list[np.ndarray]:
    """One int64 code per row of each table, equal iff (task, instance_id, model) are equal,
    computed on the dictionaries (no Python string per row)."""
    parts: list[list[np.ndarray]] = [[] for _ in tables]
    sizes = []
    for name in KEY:
        columns = [t.column(name) for t in tables]
        values = pa.chunked_array([_dictionary_values(c) for c in columns], pa.string()
                                  ).combine_chunks()
        unified = pc.unique(values)
        sizes.append(len(unified))
        for i, column in enumerate(columns):
            parts[i].append(_codes_in(column, unified))
    if float(np.prod([max(s, 1) for s in sizes], dtype=float)) >= 2.0 ** 62:
        raise SchemaError("too many distinct tasks x instances x models to index "
                          f"({sizes}); split the store")
    out = []
    for task_code, inst_code, model_code in parts:
        key = task_code.astype(np.int64)  # packed in place: one int64 array per table
        key *= sizes[1]
        key += inst_code
        key *= sizes[2]
        key += model_code
        out.append(key)
    return out


def _dictionary_values(column: pa.ChunkedArray) -> pa.Array:
    """The distinct values a (dictionary or plain) string column holds, possibly repeated."""
    if pa.types.is_dictionary(column.type):
        chunks = [c.dictionary for c in column.chunks]
        return pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())
    if not column.num_chunks:
        return pa.array([], pa.string())
    values = pc.unique(column)  # an Array from a ChunkedArray (pyarrow >= 26 at least)
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _codes_in(column: pa.ChunkedArray, unified: pa.Array) -> np.ndarray:
    """(n,) int32: each row's position in ``unified``."""
    out = np.empty(len(column), np.int32)
    pos = 0
    for chunk in column.chunks:
        n = len(chunk)
        if pa.types.is_dictionary(chunk.type):
            mapping = pc.index_in(chunk.dictionary, value_set=unified).to_numpy(
                zero_copy_only=False)
            indices = chunk.indices.to_numpy(zero_copy_only=False)
            out[pos:pos + n] = mapping[indices]
        else:
            out[pos:pos + n] = pc.index_in(chunk, value_set=unified).to_numpy(
                zero_copy_only=False)
        pos += n
    return out


def check_unique_keys(table: pa.Table, where: str) -> None:
    """SchemaError naming the first (task, instance_id, model) that appears twice."""
    (codes,) = key_codes(table)
    order = np.argsort(codes, kind="stable")
    same = np.flatnonzero(codes[order][1:] == codes[order][:-1])
    if len(same):
        i, j = int(order[same[0]]), int(order[same[0] + 1])
        row = {name: table.column(name)[i].as_py() for name in KEY}
        files = sorted({str(table.column(ORIGIN)[k].as_py()) for k in (i, j)})
        raise SchemaError(f"{where}: duplicated key {row} (read from {' and '.join(files)}): "
                          "each (task, instance_id, model) must appear once")


def merge_plan(stored: pa.Table, new: pa.Table, *, replace: bool = False
               ) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """Which rows a merge of ``new`` into ``stored`` keeps: (keep_old (n_old,) bool,
    keep_new (n_new,) bool, n_added, n_unchanged, n_replaced). ``stored`` needs only the
    key columns, score, correct and origin. Keys are matched as int64 codes
    (:func:`key_codes`) with one sort of the stored keys.

    Raises:
        ConflictError: a key in both with a different score or correctness (unless ``replace``).
    """
    old_codes, new_codes = key_codes(stored, new)
    order = np.argsort(old_codes)
    old_codes = old_codes[order]  # sorted
    pos = np.searchsorted(old_codes, new_codes)
    np.minimum(pos, max(len(old_codes) - 1, 0), out=pos)
    idx_new = np.flatnonzero(old_codes[pos] == new_codes)
    idx_old = order[pos[idx_new]]
    del old_codes, new_codes, order, pos
    score_new = new.column(SCORE).take(idx_new).to_numpy(zero_copy_only=False)
    score_old = stored.column(SCORE).take(idx_old).to_numpy(zero_copy_only=False)
    same_score = (score_new == score_old) | (np.isnan(score_new) & np.isnan(score_old))
    differs = ~same_score | (new.column(CORRECT).take(idx_new).to_numpy(zero_copy_only=False)
                             != stored.column(CORRECT).take(idx_old).to_numpy(
                                 zero_copy_only=False))
    if differs.any() and not replace:
        j = int(np.flatnonzero(differs)[0])
        i_new, i_old = int(idx_new[j]), int(idx_old[j])
        first = {name: new.column(name)[i_new].as_py() for name in KEY + [SCORE, ORIGIN]}
        old_score = stored.column(SCORE)[i_old].as_py()
        old_origin = stored.column(ORIGIN)[i_old].as_py()
        raise ConflictError(
            f"conflicting values for task={first[TASK]!r} instance={first[INSTANCE_ID]!r} "
            f"model={first[MODEL]!r}: {_num(old_score)} in {old_origin} vs "
            f"{_num(first[SCORE])} in {first[ORIGIN]} ({int(differs.sum())} such rows). "
            "Re-run with --replace to let the new files win; nothing was changed")
    keep_new = np.ones(new.num_rows, bool)
    keep_new[idx_new[~differs]] = False
    keep_old = np.ones(stored.num_rows, bool)
    keep_old[idx_old[differs]] = False
    return (keep_old, keep_new, new.num_rows - len(idx_new), int((~differs).sum()),
            int(differs.sum()))


def merge_arrow(stored: pa.Table | None, new: pa.Table, *, replace: bool = False
                ) -> tuple[pa.Table, int, int, int]:
    """Merge ``new`` into ``stored`` (Arrow, ARROW_DICT_SCHEMA): (merged, n_added,
    n_unchanged, n_replaced), as :func:`merge_tables` does for pandas tables (ingest itself
    streams the stored rows instead of holding them, see :func:`merge_plan`).

    Raises:
        ConflictError: a key in both with a different score or correctness (unless ``replace``).
    """
    if stored is None or stored.num_rows == 0:
        return new, new.num_rows, 0, 0
    keep_old, keep_new, n_added, n_unchanged, n_replaced = merge_plan(stored, new,
                                                                      replace=replace)
    merged = pa.concat_tables([stored.filter(pa.array(keep_old)),
                               new.filter(pa.array(keep_new))])
    return merged, n_added, n_unchanged, n_replaced


def _num(value: Any) -> Any:
    return float("nan") if value is None else value


def merge_tables(stored: pd.DataFrame, new: pd.DataFrame, *, replace: bool = False
                 ) -> tuple[pd.DataFrame, int, int, int]:
    """Merge ``new`` into ``stored``: (merged, n_added, n_unchanged, n_replaced).

    Raises:
        ConflictError: a key in both with a different score or correctness (unless ``replace``).
    """
    if stored.empty:
        return new, len(new), 0, 0
    both = new.reset_index().merge(stored[KEY + [SCORE, CORRECT, ORIGIN]].reset_index(),
                                   on=KEY, suffixes=("", "_old"))
    same_score = (both[SCORE] == both[SCORE + "_old"]) | (
        both[SCORE].isna() & both[SCORE + "_old"].isna())
    differs = ~same_score | (both[CORRECT] != both[CORRECT + "_old"])
    if differs.any() and not replace:
        first = both[differs].iloc[0]
        raise ConflictError(
            f"conflicting values for task={first[TASK]!r} instance={first['instance_id']!r} "
            f"model={first[MODEL]!r}: {first[SCORE + '_old']} in {first[ORIGIN + '_old']} vs "
            f"{first[SCORE]} in {first[ORIGIN]} ({int(differs.sum())} such rows). Re-run with "
            "--replace to let the new files win; nothing was changed")
    drop_new = both.loc[~differs, "index"].to_numpy()
    drop_old = both.loc[differs, "index_old"].to_numpy()
    added = new.drop(index=np.concatenate([drop_new, both.loc[differs, "index"].to_numpy()]))
    merged = pd.concat([stored.drop(index=drop_old), new.drop(index=drop_new)],
                       ignore_index=True)
    return merged, len(added), len(drop_new), len(drop_old)


def load_models_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a model metadata YAML: ``{model: {params: 7B, cost_per_1m: 0.2}}``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(path, f"cannot read model metadata: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(path, "expected a mapping {model: {params: ..., cost_per_1m: ...}}")
    out: dict[str, dict[str, Any]] = {}
    for model, spec in data.items():
        if not isinstance(spec, dict) or set(spec) - {"params", "cost_per_1m"}:
            raise InputError(path, f"{model}: expected keys 'params' and/or 'cost_per_1m'")
        try:
            params = parse_params(spec.get("params"))
        except ValueError as exc:
            raise InputError(path, f"{model}.params: {exc}") from exc
        cost = spec.get("cost_per_1m")
        if cost is not None:
            number = math.nan
            if isinstance(cost, (int, float, str)) and not isinstance(cost, bool):
                try:
                    number = float(cost)
                except ValueError:
                    pass
            if not math.isfinite(number) or number < 0:  # NaN would make models.json invalid
                raise InputError(path, f"{model}.cost_per_1m: expected a finite number >= 0 "
                                       f"(USD per 1M tokens), got {cost!r}")
            cost = number
        out[str(model)] = {"params": params, "cost_per_1m": cost}
    return out


def ingest(adapter_name: str, paths: Sequence[str | Path], store: Store, *,
           thresholds: Thresholds | str | Path | None = None,
           models_file: str | Path | None = None, replace: bool = False,
           workers: int | None = None, engine: Any = None, **options: Any) -> IngestReport:
    """Read ``paths`` with the named adapter and merge the rows into ``store``.

    Nothing is written unless every file was read without error. ``engine``: where the
    files are read (None: this machine's processes; engines.RayEngine: a Ray cluster); the
    merge and the store write run here either way.
    """
    if not isinstance(thresholds, Thresholds):
        thresholds = Thresholds.load(thresholds)
    user_models = load_models_file(models_file) if models_file else {}
    new, metadata = read_arrow(adapter_name, paths, thresholds, workers=workers, engine=engine,
                               **options)
    # The slow part (reading the files) is done; the read-merge-commit runs under the store's
    # writer lock so that a concurrent ingest cannot lose our rows or we theirs.
    with store.lock():
        merged: Any
        if store.has_table():
            # only the columns the match needs; the stored rows themselves are streamed
            # from the old Parquet file, row group by row group, when the new one is written
            stored = store.read_arrow(columns=KEY + [SCORE, CORRECT, ORIGIN])
            keep_old, keep_new, n_added, n_unchanged, n_replaced = merge_plan(
                stored, new, replace=replace)
            del stored
            merged = [store.table_parts(keep_old), new.filter(pa.array(keep_new))]
        else:
            merged, n_added, n_unchanged, n_replaced = new, new.num_rows, 0, 0
        old_models = store.read_models()
        models = {m: dict(spec) for m, spec in old_models.items()}
        for source in (metadata, user_models):  # the user's YAML wins over harness metadata
            for model, spec in source.items():
                entry = models.setdefault(model, {"params": None, "cost_per_1m": None})
                entry.update({k: v for k, v in spec.items() if v is not None})
        table_changed = bool(n_added or n_replaced or not store.has_table())
        if table_changed or models != old_models:  # one commit point for table + metadata
            store.commit(table=merged if table_changed else None, models=models)
    logger.info("ingested %d rows: %d added, %d already stored, %d replaced",
                new.num_rows, n_added, n_unchanged, n_replaced)
    return IngestReport(n_read=new.num_rows, n_added=n_added, n_unchanged=n_unchanged,
                        n_replaced=n_replaced, models=_distinct(new, MODEL),
                        tasks=_distinct(new, TASK))


def _distinct(table: pa.Table, name: str) -> list[str]:
    """Sorted distinct values of a string column (dictionary-encoded or not)."""
    values = pc.unique(table.column(name))  # a dictionary array: unique on the indices
    return sorted(set(values.cast(pa.string()).to_pylist()))


def _group_keys(table: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """``table`` with categorical ``names`` reduced to their used categories in sorted order,
    so that groupby sorts them as it sorts strings."""
    changes = {}
    for name in names:
        if isinstance(table[name].dtype, pd.CategoricalDtype):
            column = table[name].cat.remove_unused_categories()
            changes[name] = column.cat.reorder_categories(sorted(column.cat.categories))
    return table.assign(**changes) if changes else table


def accuracy_table(table: pd.DataFrame) -> tuple[dict, dict]:
    """({task: {model: accuracy}}, {task: {model: n}}) of a correctness table."""
    table = _group_keys(table, [TASK, MODEL])
    grouped = table.groupby([TASK, MODEL], sort=True, observed=True)[CORRECT].agg(
        ["mean", "size"])
    accuracy: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}
    for (task, model), mean, size in zip(grouped.index, grouped["mean"].to_numpy(),
                                         grouped["size"].to_numpy()):
        accuracy.setdefault(str(task), {})[str(model)] = float(mean)
        counts.setdefault(str(task), {})[str(model)] = int(size)
    return accuracy, counts


def score_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, model): metric, threshold eta, mean raw score, accuracy, n.

    ``metric`` and ``threshold`` join distinct values with "/" in the rare case of several
    (e.g. a task re-ingested with another --thresholds); ``threshold`` is NaN for binary
    metrics; ``mean_score`` is the harness's own mean of the metric (what its leaderboard
    shows), ``acc`` the share of rows counted correct after thresholding.
    """
    table = _group_keys(table, [TASK, MODEL])
    keys = [TASK, MODEL]
    grouped = table.groupby(keys, sort=True, observed=True)
    out = grouped.agg(mean_score=(SCORE, "mean"), acc=(CORRECT, "mean"),
                      n=(CORRECT, "size")).reset_index()
    for name in keys:  # plain strings, also from categorical input
        out[name] = out[name].astype(object).astype(str)
    # distinct metrics and thresholds per group, from the (few) distinct combinations
    def distinct(column: str) -> pd.DataFrame:
        small = table[keys + [column]].dropna().drop_duplicates()
        return small.astype({name: object for name in keys + [column]}).astype(
            {name: str for name in keys})

    metrics = distinct(METRIC).groupby(keys)[METRIC].agg(
        lambda v: "/".join(sorted({str(x) for x in v})))
    thresholds = distinct(THRESHOLD).groupby(keys)[THRESHOLD].agg(
        lambda v: (sorted(set(v))[0] if len(set(v)) == 1
                   else "/".join(f"{x:g}" for x in sorted(set(v)))))
    index = pd.MultiIndex.from_frame(out[keys])
    out.insert(2, "metric", metrics.reindex(index).fillna("").to_numpy())
    threshold = thresholds.reindex(index)
    out.insert(3, "threshold", threshold.to_numpy(dtype=object))
    values = [math.nan if v is None or (isinstance(v, float) and v != v) else v
              for v in out["threshold"]]
    out["threshold"] = (np.array(values, dtype=float) if all(isinstance(v, float) for v in values)
                        else pd.Series(values, dtype=object))
    out["metric"] = out["metric"].astype(object).astype(str)
    return out


__all__ = ["BatchBuilder", "IngestReport", "accuracy_table", "score_summary", "ingest",
           "load_models_file", "merge_arrow", "merge_plan", "merge_tables", "read_arrow", "read_rows"]
