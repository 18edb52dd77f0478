"""The store: a folder holding the correctness table, model metadata, the embedding cache
and fitted routers.

    store/
      CURRENT                    name of the current generation, e.g. "g-000003-1a2b3c4d"
      data/<generation>/         one committed state of the table and its metadata:
        table.parquet            the correctness table (schema.py)
        models.json              {model: {"params": int | null, "cost_per_1m": float | null}}
      embeddings/<id>/           embedding cache per embedder (embedding.py)
      routers/<fingerprint>/     fitted routers with their router card (router.py)
      .lock                      writers' lock file (fcntl.flock)

How writes stay atomic and safe under concurrency:

- A commit writes a complete new generation folder (both files, fsynced) under a temporary
  name, renames it to ``data/<generation>/``, then replaces ``CURRENT`` by rename. That last
  rename is the one commit point: a reader, or a command killed at any moment, sees either
  the old state or the new one, never a table from one and metadata from the other.
- Writers hold an exclusive ``flock`` on ``.lock`` around their whole read-modify-write
  (``with store.lock(): ...``), so two ingests into one store serialise instead of losing
  rows. Readers take no lock.
- A ``Store`` object reads ``CURRENT`` once and keeps using that generation (one consistent
  snapshot per command) until it commits itself or :meth:`Store.refresh` is called. The
  previous generation is kept, older ones are deleted by the next writer.
- New files and folders follow the umask (0o666 / 0o777 & ~umask), like other tools.

A store from before generations (``table.parquet`` and ``models.json`` at the top) is still
read; its first commit moves it to the layout above.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import numbers
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: writers are not serialised
    fcntl = None  # type: ignore[assignment]

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import EmptyStoreError, InputError, LMRouterError
from .schema import (
    ARROW_DICT_SCHEMA,
    ARROW_SCHEMA,
    COLUMNS,
    FORMAT_VERSION,
    STRING_COLUMNS,
    empty_table,
)

DEFAULT_STORE = "lm-router-store"
STORE_ENV = "LM_ROUTER_STORE"
#: Parquet key-value metadata key of the table's format version (schema.FORMAT_VERSION); kept
#: inside the table file so the version and the rows are written in one atomic rename.
FORMAT_KEY = b"lm_router_format_version"
TABLE_FILE = "table.parquet"
MODELS_FILE = "models.json"
# Test hook: "POINT[,POINT...]" makes a writer touch $LM_ROUTER_TEST_PAUSE_FILE.POINT and
# sleep there ($LM_ROUTER_TEST_PAUSE_SECONDS, default 60), so a test can kill it at a known
# point of a commit or hold the lock a while (tests/test_store.py).
_PAUSE_ENV = "LM_ROUTER_TEST_PAUSE_AT"
_GENERATION = re.compile(r"g-(\d+)-[0-9a-f]+")
_RESTORE = "restore the store from a backup, or delete it and ingest again"


class StoreWriteError(LMRouterError, OSError):
    """A commit could not write the store (disk full, read-only, ...); nothing changed."""


def _pause(point: str) -> None:
    wanted = os.environ.get(_PAUSE_ENV)
    if wanted and point in wanted.split(","):
        Path(f"{os.environ['LM_ROUTER_TEST_PAUSE_FILE']}.{point}").touch()
        time.sleep(float(os.environ.get("LM_ROUTER_TEST_PAUSE_SECONDS", "60")))


def current_umask() -> int:
    """The process umask (read from /proc where possible: os.umask would have to set it)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new file under the current umask (mkstemp would give 0o600)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """Mode of a new folder under the current umask (mkdtemp would give 0o700)."""
    return 0o777 & ~current_umask()


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (new names, renames) to disk, where the file system can."""
    with contextlib.suppress(OSError):  # not every file system lets a folder be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temp file beside ``path``, then rename it over ``path``.

    The file gets the mode a plain ``open(path, "w")`` would give (umask respected).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def parse_params(value: Any) -> int | None:
    """Parameter count from 7e9, "7B", "13b", "350M" or None.

    Raises:
        ValueError: anything else (a list, a bool, NaN, a negative number, "seven").
    """
    if value is None or value == "":
        return None
    bad = ValueError(f"cannot read a parameter count from {value!r} (use e.g. 7e9 or '7B')")
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise bad  # a list or a mapping in the YAML; True would read as 1
    if isinstance(value, numbers.Real):  # also numpy numbers
        number = float(value)
    else:
        try:
            number = float(value)  # "7e9", "1.5e9" (YAML reads these as strings)
        except ValueError:
            number = math.nan
            match = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMbBtT]?)\s*", value)
            if match:
                scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[match.group(2).lower()]
                with contextlib.suppress(ValueError):
                    number = float(match.group(1)) * scale
    if not math.isfinite(number) or number < 0:  # NaN, inf: no count (and invalid JSON)
        raise bad
    # round, not truncate: 8.03 * 1e9 is 8029999999.999999 in binary floating point
    return int(value) if isinstance(value, numbers.Integral) else round(number)


class Store:
    """A store folder. ``Store(None)`` uses ``$LM_ROUTER_STORE`` or ``./lm-router-store``."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root or os.environ.get(STORE_ENV) or DEFAULT_STORE)
        self._generation: Path | None = None  # the snapshot this object reads
        self._lock_fd: int | None = None
        self._lock_depth = 0

    # -- generations -------------------------------------------------------------------
    @property
    def current_path(self) -> Path:
        return self.root / "CURRENT"

    def _data_dir(self) -> Path:
        return self.root / "data"

    def refresh(self) -> None:
        """Forget the snapshot: the next read sees the latest committed state."""
        self._generation = None

    def generation(self) -> Path:
        """Folder of the snapshot this object reads (the store root for an old-layout store)."""
        gen = self._generation
        if gen is not None and (not gen.exists() if gen != self.root
                                else self.current_path.exists()):
            # deleted by later commits (or a migrated old-layout store): take the newest
            self._generation = None
        for attempt in range(3):  # a concurrent commit may delete what CURRENT named
            if self._generation is not None:
                break
            try:
                name = self.current_path.read_text().strip()
            except FileNotFoundError:
                self._generation = self.root
                break
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(self.current_path, f"unreadable: {exc}", hint=_RESTORE) from exc
            if not _GENERATION.fullmatch(name):
                raise InputError(self.current_path, f"does not name a generation: {name[:40]!r}",
                                 hint=_RESTORE)
            if (self._data_dir() / name).is_dir():
                self._generation = self._data_dir() / name
            elif attempt == 2:
                raise InputError(self.current_path, f"names the generation data/{name}, which "
                                                    "is missing", hint=_RESTORE)
        return self._generation

    @property
    def table_path(self) -> Path:
        return self.generation() / TABLE_FILE

    @property
    def models_path(self) -> Path:
        return self.generation() / MODELS_FILE

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive writer lock on the store (re-entrant within this object).

        Taking it refreshes the snapshot, so a read-modify-write inside sees the latest state.
        """
        if self._lock_depth == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, file_mode())
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            self._lock_fd = fd
            self.refresh()
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0 and self._lock_fd is not None:
                os.close(self._lock_fd)  # closing releases the flock
                self._lock_fd = None

    def commit(self, *, table: pd.DataFrame | pa.Table | list[Any] | None = None,
               models: dict[str, dict[str, Any]] | None = None) -> None:
        """Make a new generation with ``table`` and/or ``models`` (the other part carried
        over unchanged) and switch ``CURRENT`` to it in one rename. Takes the lock.

        Raises:
            StoreWriteError: the store cannot be written (disk full, file too large, read-only,
                no permission); the store is left as it was.
        """
        switched = False
        try:
            with self.lock():
                old = self.generation()
                name = self._write_generation(old, table, models)
                switched = True
                self._generation = self._data_dir() / name
                _pause("after-current")
                self._clean(keep={name, old.name if old != self.root else ""})
                if old == self.root:  # migrated from the old layout: drop the top-level copies
                    for stale in (TABLE_FILE, MODELS_FILE):
                        with contextlib.suppress(FileNotFoundError):
                            (self.root / stale).unlink()
        except OSError as exc:
            if switched:  # committed: only the clean-up failed
                raise
            reason = exc.strerror or str(exc).splitlines()[0] or type(exc).__name__
            where = f" ({exc.filename})" if exc.filename else ""
            raise StoreWriteError(
                f"cannot write the store {self.root}: {reason}{where}; nothing was changed "
                "(free some space, or check the folder's permissions, then run it again)"
            ) from exc

    def _write_generation(self, old: Path, table: Any, models: dict | None) -> str:
        """Write a new generation beside ``old`` and switch CURRENT to it; returns its name.
        On an error nothing visible changed (the half-written generation is removed)."""
        data = self._data_dir()
        data.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=data))
        try:
            os.chmod(tmp, dir_mode())
            self._write_part(tmp / TABLE_FILE, old / TABLE_FILE, table is not None,
                             lambda path: _write_parquet(table, path))
            models_text = None if models is None else (
                json.dumps(models, indent=2, sort_keys=True) + "\n")
            self._write_part(tmp / MODELS_FILE, old / MODELS_FILE, models is not None,
                             lambda path: path.write_text(models_text))
            fsync_dir(tmp)
            _pause("generation-written")
            name = f"g-{self._next_number():06d}-{os.urandom(4).hex()}"
            os.rename(tmp, data / name)
            fsync_dir(data)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        _pause("before-current")
        try:
            atomic_write_text(self.current_path, name + "\n")
        except OSError:  # CURRENT still names the old generation: free the new one's space
            try:
                named = self.current_path.read_text().strip()
            except OSError:
                named = None
            if named != name:
                shutil.rmtree(data / name, ignore_errors=True)
            raise
        fsync_dir(self.root)
        return name

    @staticmethod
    def _write_part(path: Path, old: Path, new: bool, write: Callable[[Path], None]) -> None:
        """Write a new part, or carry the old one over (hard link: no copy of a big table)."""
        if new:
            write(path)
            os.chmod(path, file_mode())
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
        elif old.exists():
            try:
                os.link(old, path)
            except OSError:  # no hard links here (some network file systems)
                shutil.copy2(old, path)

    def _next_number(self) -> int:
        numbers = [int(m.group(1)) for p in self._data_dir().iterdir()
                   if (m := _GENERATION.fullmatch(p.name))]
        return max(numbers, default=0) + 1

    def _clean(self, keep: set[str]) -> None:
        """Delete generations other than ``keep`` and leftovers of killed writers (the lock
        is held, so no other writer is active)."""
        for path in self._data_dir().iterdir():
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)

    # -- correctness table -------------------------------------------------------------
    def has_table(self) -> bool:
        return self.table_path.exists()

    def read_table(self, *, columns: list[str] | None = None, required: bool = False,
                   categorical: bool = False) -> pd.DataFrame:
        """The correctness table (empty if none yet, or EmptyStoreError when ``required``).

        ``categorical=True`` gives the string columns as pandas categoricals, decoded from
        the Parquet dictionaries without a Python string per row (what fitting and ``info``
        use on large tables: 10M rows take ~0.5 GB instead of several GB).
        """
        if not categorical:
            if not self.has_table():
                self._empty(required)
                table = empty_table()
                return table[columns] if columns else table
            self.check_format()
            try:
                return pq.read_table(self.table_path, columns=columns).to_pandas()
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(self.table_path, f"unreadable Parquet file: {exc}",
                                 hint="restore it from a backup or delete the store and "
                                      "re-ingest") from exc
        return self.read_arrow(columns=columns, required=required).to_pandas()

    def _empty(self, required: bool) -> None:
        if required:
            raise EmptyStoreError(
                f"the store {self.root} holds no results yet: run 'lm-router ingest "
                "lm-eval RUNS_DIR' (or helm/table) first, or pass --store DIR")

    def read_arrow(self, *, columns: list[str] | None = None,
                   required: bool = False) -> pa.Table:
        """The correctness table as an Arrow table with dictionary-encoded string columns
        (schema.ARROW_DICT_SCHEMA; one chunk per Parquet row group)."""
        if not self.has_table():
            self._empty(required)
            table = ARROW_DICT_SCHEMA.empty_table()
            return table.select(columns) if columns else table
        self.check_format()
        names = columns or COLUMNS
        try:
            table = pq.read_table(self.table_path, columns=names,
                                  read_dictionary=[c for c in names if c in STRING_COLUMNS])
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(self.table_path, f"unreadable Parquet file: {exc}",
                             hint="restore it from a backup or delete the store and re-ingest"
                             ) from exc
        return table.replace_schema_metadata(None)

    def table_parts(self, keep: Any = None) -> Iterator[pa.Table]:
        """The stored table, one Arrow table (dictionary-encoded) per Parquet row group,
        optionally only the rows where ``keep`` ((n_rows,) bool) is True. The file is the
        current one when this is called (a later commit does not change what it reads)."""
        path = self.table_path
        self.check_format()

        def parts() -> Iterator[pa.Table]:
            reader = pq.ParquetFile(path, read_dictionary=STRING_COLUMNS)
            offset = 0
            for i in range(reader.num_row_groups):
                part = reader.read_row_group(i).replace_schema_metadata(None)
                n = part.num_rows
                if keep is not None:
                    part = part.filter(pa.array(keep[offset:offset + n]))
                offset += n
                yield part
        return parts()

    def distinct(self, column: str, *, required: bool = False) -> list[str]:
        """Sorted distinct values of a string column, read from its Parquet dictionaries."""
        import pyarrow.compute as pc

        values = pc.unique(self.read_arrow(columns=[column], required=required).column(column))
        return sorted(set(values.cast(pa.string()).to_pylist()) - {None})

    def write_table(self, table: pd.DataFrame) -> None:
        """Commit ``table`` as the new correctness table (metadata carried over)."""
        self.commit(table=table)

    def format_version(self) -> int:
        """The stored table's format version (1: written before versions were recorded)."""
        try:
            metadata = pq.read_schema(self.table_path).metadata or {}
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(self.table_path, f"unreadable Parquet file: {exc}",
                             hint="restore it from a backup or delete the store and re-ingest"
                             ) from exc
        try:
            return int(metadata.get(FORMAT_KEY, b"1"))
        except ValueError:
            return 1

    def check_format(self) -> None:
        """Refuse a table of another format version: its texts would mix with ours.

        Raises:
            InputError: naming the table and how to rebuild the store.
        """
        version = self.format_version()
        if version == FORMAT_VERSION:
            return
        if version < FORMAT_VERSION:
            problem = (f"the store was written by an older lm-router (table format {version}; "
                       f"this version reads format {FORMAT_VERSION}): its input_text holds the "
                       "full prompts the models saw, while this version embeds each "
                       "instance's own text, and the two must not be mixed")
        else:
            problem = (f"the store was written by a newer lm-router (table format {version}; "
                       f"this version reads format {FORMAT_VERSION})")
        raise InputError(self.table_path, problem,
                         hint="rebuild it: re-ingest your runs into a new store, e.g. "
                              "'lm-router ingest lm-eval RUNS_DIR --store NEW_STORE', then use "
                              "--store NEW_STORE (or delete the old store folder first)")

    def table_fingerprint(self) -> str:
        """Hash of the table file's bytes (changes whenever the table changes)."""
        self.check_format()  # a cached router of an old table must not be used either
        digest = hashlib.sha256()
        with open(self.table_path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()[:16]

    # -- model metadata ----------------------------------------------------------------
    def read_models(self) -> dict[str, dict[str, Any]]:
        if not self.models_path.exists():
            return {}
        try:
            return json.loads(self.models_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(self.models_path, f"unreadable model metadata: {exc}",
                             hint="fix or delete the file; re-ingest fills it again") from exc

    def write_models(self, models: dict[str, dict[str, Any]]) -> None:
        """Commit ``models`` as the new model metadata (table carried over)."""
        self.commit(models=models)

    # -- other artifacts ---------------------------------------------------------------
    def embeddings_dir(self, embedder_id: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", embedder_id)[-60:]
        tag = hashlib.sha256(embedder_id.encode()).hexdigest()[:8]
        return self.root / "embeddings" / f"{safe}-{tag}"

    def routers_dir(self) -> Path:
        return self.root / "routers"


#: Rows per Parquet row group (and per slice decoded to plain strings while writing).
ROW_GROUP_ROWS = 1 << 19


def _arrow_parts(table: Any) -> Iterator[pa.Table]:
    """Arrow tables (COLUMNS) from a DataFrame, an Arrow table, or a list/iterator of them."""
    if isinstance(table, pd.DataFrame):
        try:
            yield pa.Table.from_pandas(table[COLUMNS], schema=ARROW_SCHEMA, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # e.g. categorical columns
            yield pa.Table.from_pandas(table[COLUMNS], preserve_index=False)
    elif isinstance(table, pa.Table):
        yield table.select(COLUMNS)
    else:
        for part in table:
            yield from _arrow_parts(part)


def _write_parquet(table: Any, path: Path) -> None:
    """Write the table in the stored format (plain string columns, schema.ARROW_SCHEMA, so
    pandas, polars or DuckDB read it as before); Parquet dictionary-encodes each column chunk,
    so a text repeated for 1,000 models is stored once per row group.

    ``table``: a DataFrame, an Arrow table (dictionary columns allowed), or a list of them or
    of iterators of them (ingest passes the kept stored row groups + the new rows). Parts are
    decoded to plain strings and written one row group (ROW_GROUP_ROWS rows) at a time:
    memory stays bounded by a row group, not the table.
    """
    schema = ARROW_SCHEMA.with_metadata({FORMAT_KEY: str(FORMAT_VERSION).encode()})

    def plain(part: pa.Table) -> pa.Table:
        return pa.table([part.column(f.name).cast(f.type) for f in ARROW_SCHEMA], schema=schema)

    with pq.ParquetWriter(path, schema, compression="zstd",
                          dictionary_pagesize_limit=64 << 20) as writer:
        buffered: list[pa.Table] = []
        n_buffered = 0
        written = False
        for part in _arrow_parts(table):
            for start in range(0, part.num_rows, ROW_GROUP_ROWS):
                buffered.append(plain(part.slice(start, ROW_GROUP_ROWS)))
                n_buffered += buffered[-1].num_rows
                if n_buffered >= ROW_GROUP_ROWS:  # small parts are gathered into one group
                    group = pa.concat_tables(buffered)
                    buffered, n_buffered, written = [], 0, True
                    writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
                    del group  # one decoded row group alive at a time
        if buffered or not written:
            rest = pa.concat_tables(buffered) if buffered else plain(ARROW_SCHEMA.empty_table())
            writer.write_table(rest, row_group_size=ROW_GROUP_ROWS)
