"""Published lm-eval sample logs: Parquet sample files and ``hf://datasets/`` repositories.

The Hugging Face Hub converts the ``samples_<task>_<date>.jsonl`` files of a details dataset to
Parquet (one row per sample, one column per top-level key; nested values become structs,
lists, or JSON strings). :func:`parquet_records` turns each row back into the dict a JSONL line
parses to, so the lm-eval adapter reads both through one code path.

    for index, rec in parquet_records(Path("samples_gsm8k_2024-06-01T10-00-00.parquet")):
        rec["doc_id"], rec["exact_match"]

    local = download_dataset("hf://datasets/org/details@main", tasks=["gsm8k"])

The Hub's automatic conversion (revision ``refs/convert/parquet``, written by the dataset
viewer's parquet-converter) lays a details dataset out as ``<config>/<split>/NNNN.parquet``
(``<config>/partial-<split>/NNNN.parquet`` when a big split was converted only in part).
In an lm-eval details dataset each config is one (model, task) sample log, named
``<org>__<model>__<task>`` (Open LLM Leaderboard), and the splits are run timestamps
(``2024_06_26T17_37_19.062048``) plus ``latest``, a copy of the newest run.
:func:`hub_configs` picks one split per config so no sample is counted twice.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
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
HUB_PART = re.compile(r"\d{4,5}\.parquet")  # the converter's file names: 0000.parquet, ...
_HUB_SPLIT_TIME = re.compile(r"\d{4}_\d{2}_\d{2}T\d{2}_\d{2}_\d{2}(?:\.\d+)?")
_PARTIAL = "partial-"  # the converter's prefix for a split converted only in part
LATEST = "latest"

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class HubConfig:
    """One config of a Hub-converted details dataset: one (model, task) sample log."""

    parts: tuple[Path, ...]  # the chosen split's files, in order (0000, 0001, ...)
    task: str
    model: str
    split: str  # the chosen split, "partial-" prefix removed
    time: float | None  # POSIX seconds of the run (the timestamp split), None if unknown


def _split_time(name: str) -> float | None:
    """``2024_06_26T17_37_19.062048`` -> POSIX seconds (read as UTC); None otherwise."""
    if not _HUB_SPLIT_TIME.fullmatch(name):
        return None
    fmt = "%Y_%m_%dT%H_%M_%S.%f" if "." in name else "%Y_%m_%dT%H_%M_%S"
    try:
        return datetime.strptime(name, fmt).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def config_model_task(config: str) -> tuple[str | None, str]:
    """``org__name__task`` -> (``org/name``, ``task``); a name without that prefix -> (None,
    the name). The Open LLM Leaderboard writes the model id with ``/`` as ``__``."""
    pieces = config.split("__")
    if len(pieces) >= 3 and pieces[0] and pieces[1] and pieces[2]:
        return f"{pieces[0]}/{pieces[1]}", "__".join(pieces[2:])
    return None, config


def _is_sample_log(path: Path) -> bool:
    """False when ``path`` is a readable Parquet file without a ``doc_id`` column (another
    config of the dataset, e.g. aggregated results); a damaged file counts as a sample log,
    so that reading it gives the one error naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return "doc_id" in pq.read_schema(path).names
    except (pa.ArrowException, OSError):
        return True


def hub_configs(root: Path, parts: Sequence[Path], model: str | None = None) -> list[HubConfig]:
    """Group ``<config>/<split>/NNNN.parquet`` files found under ``root`` into sample logs.

    Split: ``latest`` when present, else the newest timestamp split, else the only split.
    Task: the config name after a leading ``<org>__<model>__``, else the config name. Model:
    that prefix (``org__name`` -> ``org/name``), else ``model`` (``-o model=``), else the
    folder holding the config folders when it is a folder inside ``root`` or ``root`` itself
    is named ``ORG__NAME``.

    Raises:
        InputError: no model can be told for a config (names the config folder), or a config
            has several splits none of which is ``latest`` or a timestamp.
    """
    by_config: dict[Path, dict[Path, list[Path]]] = {}
    for part in parts:
        by_config.setdefault(part.parent.parent, {}).setdefault(part.parent, []).append(part)
    root_key = root.resolve()
    out = []
    chosen_by: dict[str, int] = {}  # how the split was chosen -> configs
    for config_dir, splits in sorted(by_config.items()):
        named = {}
        for split_dir in sorted(splits, key=lambda d: (d.name.startswith(_PARTIAL), d.name)):
            name = split_dir.name[len(_PARTIAL):] if split_dir.name.startswith(_PARTIAL) \
                else split_dir.name
            named.setdefault(name, split_dir)  # a complete split before a partial one
        times = {name: _split_time(name) for name in named}
        stamped = [name for name, t in times.items() if t is not None]
        newest = max(stamped, key=lambda n: (times[n], n)) if stamped else None
        if LATEST in named:
            chosen = LATEST
        elif newest is not None:
            chosen = newest
        elif len(named) == 1:
            chosen = next(iter(named))
        else:
            raise InputError(config_dir, f"several splits ({', '.join(sorted(named))}) and none "
                                         f"is '{LATEST}' or a run timestamp: cannot tell which "
                                         "run to read",
                             hint="keep one split folder per config")
        files = sorted(splits[named[chosen]], key=lambda p: (int(p.stem), p.name))
        if not _is_sample_log(files[0]):
            logger.debug("%s: no doc_id column; not an lm-eval sample log, ignored", config_dir)
            continue
        config_model, task = config_model_task(config_dir.name)
        if config_model is None:
            config_model = model
        if config_model is None:
            folder = config_dir.parent
            if folder.resolve() != root_key or "__" in folder.name:
                config_model = folder.name.replace("__", "/")
        if not config_model:
            raise InputError(config_dir, f"cannot tell the model of config '{config_dir.name}': "
                                         "its name has no '<org>__<model>__' prefix and its "
                                         f"folder '{config_dir.parent.name}' is not a model "
                                         "folder",
                             hint="pass -o model=ORG/NAME, or move the config folders into a "
                                  "folder named ORG__NAME")
        ignored = [name for name in sorted(named) if name != chosen]
        how = ("latest" if chosen == LATEST else "newest timestamp" if chosen == newest
               else "only split")
        chosen_by[how] = chosen_by.get(how, 0) + 1
        logger.debug("%s: task %s, model %s: reading split %s (%d file(s))%s", config_dir, task,
                    config_model, named[chosen].name, len(files),
                    f"; ignored split(s) {', '.join(ignored)}" if ignored else "")
        when = times[chosen] if times[chosen] is not None else (
            times[newest] if newest is not None else None)
        out.append(HubConfig(tuple(files), task, config_model, chosen, when))
    if out:  # one line for thousands of configs; each config's choice at DEBUG level
        logger.info("%s: Hub Parquet conversion layout, %d sample-log config(s); one split read "
                    "per config: %s", root, len(out),
                    ", ".join(f"{how} ({n})" for how, n in sorted(chosen_by.items())))
    return out


def choose_split(split_dirs: Sequence[str]) -> str | None:
    """The split folder :func:`hub_configs` reads among one config's ``split_dirs`` (names
    as in the repository, ``partial-`` prefix kept): ``latest``, else the newest timestamp,
    else the only one; a complete split before a partial one. None when none of these
    applies (several splits, none ``latest`` nor a timestamp). For choosing the files to
    download before they exist locally (lm_router_plugin.pull)."""
    named: dict[str, str] = {}
    for folder in sorted(split_dirs, key=lambda d: (d.startswith(_PARTIAL), d)):
        named.setdefault(folder[len(_PARTIAL):] if folder.startswith(_PARTIAL) else folder,
                         folder)
    if LATEST in named:
        return named[LATEST]
    stamped = [(t, name) for name in named if (t := _split_time(name)) is not None]
    if stamped:
        return named[max(stamped)[1]]
    return next(iter(named.values())) if len(named) == 1 else None


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
    """The files of a details repository worth downloading (all tasks, or ``tasks``), as
    ``fnmatch`` patterns (``*`` also matches ``/``): ``samples_*`` files, and the Hub
    conversion's ``<config>/<split>/NNNN.parquet`` with config ``TASK`` or ``*__TASK``."""
    if not tasks:
        return ["*samples_*.jsonl", "*samples_*.parquet", "*results_*.json",
                "*/*/[0-9][0-9][0-9][0-9]*.parquet"]
    patterns = []
    for task in tasks:
        patterns += [f"*samples_{task}_*.jsonl", f"*samples_{task}_*.parquet",
                     f"{task}/*/[0-9][0-9][0-9][0-9]*.parquet",
                     f"*/{task}/*/[0-9][0-9][0-9][0-9]*.parquet",
                     f"*__{task}/*/[0-9][0-9][0-9][0-9]*.parquet"]
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
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
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


__all__ = ["HUB_PART", "HubConfig", "allow_patterns", "choose_split", "config_model_task",
           "download_dataset", "hub_configs", "is_hf_path", "parquet_records", "parse_hf_path"]
