"""The store: a folder holding the correctness table, model metadata, the embedding cache
and fitted routers. Every write is atomic (temp file + rename), so a failed command leaves
the store as it was.

    store/
      table.parquet          the correctness table (schema.py)
      models.json            {model: {"params": int | null, "cost_per_1m": float | null}}
      embeddings/<id>/       embedding cache per embedder (embedding.py)
      routers/<fingerprint>/ fitted routers with their router card (router.py)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import EmptyStoreError, InputError
from .schema import ARROW_SCHEMA, COLUMNS, FORMAT_VERSION, empty_table

DEFAULT_STORE = "lm-router-store"
STORE_ENV = "LM_ROUTER_STORE"
#: Parquet key-value metadata key of the table's format version (schema.FORMAT_VERSION); kept
#: inside the table file so the version and the rows are written in one atomic rename.
FORMAT_KEY = b"lm_router_format_version"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temp file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def parse_params(value: Any) -> int | None:
    """Parameter count from 7e9, "7B", "13b", "350M" or None."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return int(value)
    try:
        return int(float(value))  # "7e9", "1.5e9" (YAML reads these as strings)
    except ValueError:
        pass
    match = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMbBtT]?)\s*", str(value))
    if not match:
        raise ValueError(f"cannot read a parameter count from {value!r} (use e.g. 7e9 or '7B')")
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


class Store:
    """A store folder. ``Store(None)`` uses ``$LM_ROUTER_STORE`` or ``./lm-router-store``."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root or os.environ.get(STORE_ENV) or DEFAULT_STORE)

    @property
    def table_path(self) -> Path:
        return self.root / "table.parquet"

    @property
    def models_path(self) -> Path:
        return self.root / "models.json"

    # -- correctness table -------------------------------------------------------------
    def has_table(self) -> bool:
        return self.table_path.exists()

    def read_table(self, *, columns: list[str] | None = None,
                   required: bool = False) -> pd.DataFrame:
        """The correctness table (empty if none yet, or EmptyStoreError when ``required``)."""
        if not self.has_table():
            if required:
                raise EmptyStoreError(
                    f"the store {self.root} holds no results yet: run 'lm-router ingest "
                    "lm-eval RUNS_DIR' (or helm/table) first, or pass --store DIR")
            table = empty_table()
            return table[columns] if columns else table
        self.check_format()
        try:
            return pq.read_table(self.table_path, columns=columns).to_pandas()
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(self.table_path, f"unreadable Parquet file: {exc}",
                             hint="restore it from a backup or delete the store and re-ingest"
                             ) from exc

    def write_table(self, table: pd.DataFrame) -> None:
        schema = ARROW_SCHEMA.with_metadata({FORMAT_KEY: str(FORMAT_VERSION).encode()})
        arrow = pa.Table.from_pandas(table[COLUMNS], schema=schema, preserve_index=False)
        atomic_write(self.table_path, lambda tmp: pq.write_table(arrow, tmp, compression="zstd"))

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
        atomic_write_text(self.models_path, json.dumps(models, indent=2, sort_keys=True) + "\n")

    # -- other artifacts ---------------------------------------------------------------
    def embeddings_dir(self, embedder_id: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", embedder_id)[-60:]
        tag = hashlib.sha256(embedder_id.encode()).hexdigest()[:8]
        return self.root / "embeddings" / f"{safe}-{tag}"

    def routers_dir(self) -> Path:
        return self.root / "routers"
