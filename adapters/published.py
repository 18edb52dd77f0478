"""Published lm-eval sample logs: Parquet sample files and ``hf://datasets/`` repositories.

The Hugging Face Hub converts the ``samples_<task>_<date>.jsonl`` files of a details dataset to
Parquet (one row per sample, one column per top-level key; nested values become structs,
lists, or JSON strings). :func:`parquet_records` turns each row back into the dict a JSONL line
parses to, so the lm-eval adapter reads both through one code path.

    for index, rec in parquet_records(Path("samples_gsm8k_2024-06-01T10-00-00.parquet")):
        rec["doc_id"], rec["exact_match"]

    local = download_dataset("hf://datasets/org/details@main", tasks=["gsm8k"])
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError

try:
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is a declared dependency
    import json

    _loads = json.loads

# Columns the adapter reads as JSON structures; a Parquet writer may have stored them as
# JSON text. Other string columns (target, metrics' text values) stay strings.
JSON_COLUMNS = ("doc", "arguments", "resps", "filtered_resps", "metrics")
BATCH_ROWS = 1024  # rows per decoded batch: memory is bounded by one batch, not the file
_HF_PATH = re.compile(r"hf:/+datasets/(?P<repo>[^/@\s]+/[^/@\s]+?)/?(?:@(?P<rev>[^\s]+))?")
HF_PREFIX = "hf:/"  # pathlib collapses "hf://" to "hf:/"


def _maybe_json(value: Any) -> Any:
    """``value`` json-decoded when it is a string holding a JSON object or array."""
    if type(value) is str:
        head = value.lstrip()[:1]
        if head in ("{", "["):
            try:
                return _loads(value)
            except ValueError:
                return value
    return value


def parquet_records(path: Path, batch_rows: int = BATCH_ROWS) -> Iterator[tuple[int, Any]]:
    """(1-based row number, sample dict) for each row of a Parquet sample log.

    Reads row group by row group in batches of ``batch_rows`` rows. In ``arguments``, struct
    fields that are null for this row (``gen_args_3`` of a 2-choice doc, added by the column's
    union schema) are dropped: lm-eval never logs a null argument.

    Raises:
        InputError: the file is not a readable Parquet file (names the file).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    hint = ("the Parquet file is damaged or truncated; download it again or use the "
            "samples_*.jsonl it was converted from")
    try:
        reader = pq.ParquetFile(path)
        batches = reader.iter_batches(batch_size=batch_rows)
        index = 0
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            names = batch.schema.names
            json_cols = [name for name in JSON_COLUMNS if name in names]
            for rec in batch.to_pylist():
                index += 1
                for name in json_cols:
                    rec[name] = _maybe_json(rec[name])
                args = rec.get("arguments")
                if type(args) is dict:
                    rec["arguments"] = {k: v for k, v in args.items() if v is not None}
                yield index, rec
    except (pa.ArrowException, OSError) as exc:
        raise InputError(path, f"not a readable Parquet file ({type(exc).__name__}: {exc})",
                         hint=hint) from exc


def is_hf_path(path: str | Path) -> bool:
    """True for ``hf://datasets/...`` (also after pathlib collapsed it to ``hf:/datasets/``)."""
    return str(path).startswith(HF_PREFIX)


def parse_hf_path(path: str | Path) -> tuple[str, str | None]:
    """``hf://datasets/ORG/NAME[@revision]`` -> (``ORG/NAME``, revision or None).

    Raises:
        InputError: not of that form.
    """
    match = _HF_PATH.fullmatch(str(path))
    if match is None:
        raise InputError(path, "expected hf://datasets/ORG/NAME or hf://datasets/ORG/NAME@REVISION",
                         hint="only dataset repositories hold published sample logs")
    return match.group("repo"), match.group("rev")


def allow_patterns(tasks: Sequence[str] | None = None) -> list[str]:
    """The files of a details repository worth downloading (all tasks, or ``tasks``)."""
    if not tasks:
        return ["*samples_*.jsonl", "*samples_*.parquet", "*results_*.json"]
    patterns = []
    for task in tasks:
        patterns += [f"*samples_{task}_*.jsonl", f"*samples_{task}_*.parquet"]
    return patterns + ["*results_*.json"]


def download_dataset(path: str | Path, tasks: Sequence[str] | None = None,
                     cache_dir: str | Path | None = None) -> Path:
    """Download the sample logs of ``hf://datasets/ORG/NAME[@rev]``; the local folder.

    Raises:
        InputError: offline / no network (one message naming the repo and the way round),
            or the repository or revision does not exist or is not accessible.
    """
    repo, revision = parse_hf_path(path)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled,
        RepositoryNotFoundError, RevisionNotFoundError,
    )

    where = f"hf://datasets/{repo}" + (f"@{revision}" if revision else "")
    rev_flag = f" --revision {revision}" if revision else ""
    offline_hint = (f"downloading needs network access; or make a local copy with "
                    f"'huggingface-cli download {repo} --repo-type dataset{rev_flag} "
                    f"--local-dir DIR' and ingest DIR")
    try:
        local = snapshot_download(repo, repo_type="dataset", revision=revision,
                                  allow_patterns=allow_patterns(tasks), cache_dir=cache_dir)
    except (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError) as exc:
        raise InputError(where, f"dataset repository or revision not found or not accessible "
                                f"({type(exc).__name__})",
                         hint="check the name and revision; gated or private repositories "
                              "need 'huggingface-cli login'") from exc
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, OSError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        problem = ("cannot download: HF_HUB_OFFLINE is set and the repository is not cached"
                   if offline else f"cannot download ({type(exc).__name__}: no network?)")
        raise InputError(where, problem, hint=offline_hint) from exc
    return Path(local)


__all__ = ["allow_patterns", "download_dataset", "is_hf_path", "parquet_records",
           "parse_hf_path"]
