"""Pull the Open LLM Leaderboard's per-sample "details" datasets from the Hugging Face Hub.

    result = pull_open_llm_leaderboard(["Qwen/Qwen2.5-7B-Instruct"], ["leaderboard_mmlu_pro"],
                                       store=Store("lm-router-store"))

The leaderboard (v2) pushed each model's lm-eval sample logs with lm-eval's own
``EvaluationTracker`` to the dataset ``open-llm-leaderboard/<org>__<model>-details``:

- ``main`` holds the files lm-eval wrote: ``<org>__<model>/samples_<task>_<date>.jsonl`` and
  ``<org>__<model>/results_<date>.json``, one pair per run (``<date>`` as
  ``2024-06-26T17-37-19.062048``);
- its README declares one config per (model, task), ``<org>__<model>__<task>``, with one
  split per run timestamp (``2024_06_26T17_37_19.062048``) plus ``latest``, the newest run;
- ``refs/convert/parquet`` holds the Hub's Parquet conversion of those configs:
  ``<config>/<split>/0000.parquet`` (``partial-<split>`` when only part was converted).

``fmt="jsonl"`` (the default) fetches from ``main`` the newest run's sample log of each task
asked (what ``latest`` points to) plus that run's ``results_<date>.json`` (the task configs
the adapter renders the input texts from); ``fmt="parquet"`` fetches the ``latest`` split of
each config from the conversion (smaller files, no results file). The file listing comes
from the Hub's tree API, with each file's size and SHA-256 (LFS) or git blob id, which the
download checks. Base URL: ``endpoint``, else ``$HF_ENDPOINT``, else https://huggingface.co.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from ..adapters.lmeval import get_file_task_name
from ..adapters.published import HUB_PART, choose_split, config_model_task
from ..errors import InputError, UnknownNameError, UsageError
from .common import PullResult, cache_root, did_you_mean, select
from .download import (
    DEFAULT_JOBS,
    RemoteFile,
    Source,
    fetch_files,
    fetch_json,
    read_saved_json,
    write_cache_text,
)
from .download import http_error as _http_error

logger = logging.getLogger(__name__)

DETAILS_ORG = "open-llm-leaderboard"
DEFAULT_ENDPOINT = "https://huggingface.co"
MAIN = "main"
PARQUET_REVISION = "refs/convert/parquet"
FORMATS = ("jsonl", "parquet")
_MODEL_ID = re.compile(r"[\w.-]+/[\w.-]+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?")
_TRUE = ("1", "true", "yes", "on")
_DENIED = ("access denied: the details datasets are gated; accept the terms on the dataset's "
           "page and log in with 'hf auth login' (or set HF_TOKEN)")


def details_repo(model: str) -> str:
    """``org/name`` -> ``open-llm-leaderboard/org__name-details``."""
    return f"{DETAILS_ORG}/{model.replace('/', '__')}-details"


def hub_endpoint(endpoint: str | None = None) -> str:
    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _auth() -> tuple[tuple[str, str], ...]:
    """The user's Hub token (``hf auth login`` or $HF_TOKEN) as a header, if any: the details
    datasets are gated (access granted automatically once the terms are accepted)."""
    try:
        from huggingface_hub import get_token
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency (datasets)
        token = os.environ.get("HF_TOKEN")
    else:
        token = get_token()
    return (("Authorization", f"Bearer {token}"),) if token else ()


def _manual(model: str, fmt: str, tasks: Sequence[str] | None) -> str:
    repo, folder = details_repo(model), model.replace("/", "__")
    if fmt == "parquet":
        include = " ".join(f"'{folder}__{t}/latest/*'" for t in (tasks or ["*"]))
        rev = f" --revision {PARQUET_REVISION}"
    else:
        include = " ".join(f"'{folder}/samples_{t}_*'" for t in (tasks or ["*"]))
        include += f" '{folder}/results_*'"
        rev = ""
    return (f"'hf download {repo} --repo-type dataset{rev} --include {include} --local-dir DIR' "
            "(after 'hf auth login' and accepting the dataset's terms on its page), then "
            "'lm-router ingest lm-eval DIR'")


class _Hub:
    """The few Hub API calls a pull needs, over urllib (no retries with back-off: an
    unreachable Hub is reported at once)."""

    def __init__(self, endpoint: str, source: Source):
        self.endpoint = endpoint
        self.source = source
        self.headers = _auth()

    def _get_json(self, url: str, what: str) -> tuple[Any, Any]:
        return fetch_json(url, self.source, what, self.headers)

    def tree(self, repo: str, revision: str, path: str = "") -> list[dict[str, Any]]:
        """Every file under ``path`` (recursive): dicts with path, size, oid, lfs."""
        url = (f"{self.endpoint}/api/datasets/{repo}/tree/{quote(revision, safe='')}"
               + (f"/{quote(path, safe='')}" if path else "")
               + "?" + urlencode({"recursive": "true", "expand": "false"}))
        files: list[dict[str, Any]] = []
        while url:
            page, headers = self._get_json(url, "the file listing")
            if not isinstance(page, list):
                raise InputError(url, "the Hub's tree API did not answer a list",
                                 hint=f"is {self.endpoint} a Hugging Face Hub?")
            files += [e for e in page if isinstance(e, dict) and e.get("type") == "file"]
            url = _next_link(headers.get("Link", ""))
        return files

    def search(self, author: str, text: str) -> list[str]:
        """Dataset ids of ``author`` whose name contains ``text`` (the Hub's own search)."""
        url = (f"{self.endpoint}/api/datasets?"
               + urlencode({"author": author, "search": text, "limit": "1000"}))
        try:
            found, _ = self._get_json(url, "the dataset search")
        except (InputError, urllib.error.HTTPError):
            return []
        return [d["id"] for d in found if isinstance(d, dict) and isinstance(d.get("id"), str)]


def _next_link(link: str) -> str | None:
    """The ``rel="next"`` URL of a Link header (the Hub paginates trees by 1000 entries)."""
    for part in link.split(","):
        url, _, rel = part.partition(";")
        if 'rel="next"' in rel:
            return url.strip().strip("<>")
    return None


def _error_code(exc: urllib.error.HTTPError) -> str:
    return exc.headers.get("X-Error-Code", "") if exc.headers else ""


def _unknown_model(hub: _Hub, model: str) -> UnknownNameError:
    """No details dataset for ``model``: did-you-mean from the Hub's search of the
    leaderboard's datasets for the model's organisation."""
    org = model.split("/", 1)[0]
    repos = hub.search(DETAILS_ORG, f"{org}__")
    known = [r.split("/", 1)[1][:-len("-details")].replace("__", "/", 1)
             for r in repos if r.endswith("-details") and "/" in r]
    hint = did_you_mean(model, known)
    if not hint and known:
        hint = f" ({len(known)} model(s) of {org} there, e.g. {', '.join(sorted(known)[:5])})"
    elif not known:
        hint = f" (the leaderboard has no details dataset of organisation {org!r})"
    return UnknownNameError(f"{model}: no Open LLM Leaderboard details dataset "
                            f"{details_repo(model)} on {hub.endpoint}{hint}")


def _list(hub: _Hub, model: str, revision: str, path: str, cache: Path) -> list[dict[str, Any]]:
    """The tree listing of one model's details dataset, cached for HF_HUB_OFFLINE=1 runs."""
    repo = details_repo(model)
    saved = cache / ".listing.json"
    if _offline():
        files = read_saved_json(saved)
        if isinstance(files, list):
            logger.info("%s: HF_HUB_OFFLINE is set: using the file listing saved by the last "
                        "pull (%s)", repo, saved)
            return files
        why = "this dataset was never pulled" if files is None and not saved.exists() else \
            f"the file listing saved by the last pull is damaged ({saved})"
        raise InputError(f"{hub.endpoint}/datasets/{repo}", f"HF_HUB_OFFLINE is set and {why}",
                         hint=f"unset HF_HUB_OFFLINE, or by hand: {hub.source.manual}")
    try:
        files = hub.tree(repo, revision, path)
    except urllib.error.HTTPError as exc:
        code = _error_code(exc)
        if code == "GatedRepo" or (exc.code == 403 and code != "RepoNotFound"):
            raise InputError(f"{hub.endpoint}/datasets/{repo}", "gated dataset: access not "
                             f"granted to this account (HTTP {exc.code})",
                             hint=_DENIED) from exc
        if code == "RepoNotFound" or (exc.code in (401, 404) and code == ""):
            raise _unknown_model(hub, model) from exc
        if code == "RevisionNotFound":
            raise InputError(f"{hub.endpoint}/datasets/{repo}@{revision}",
                             "the dataset has no Parquet conversion yet",
                             hint="pull with --format jsonl (the files lm-eval wrote)") from exc
        if code == "EntryNotFound":
            raise InputError(f"{hub.endpoint}/datasets/{repo}", f"no folder {path!r} in the "
                             "dataset (not the leaderboard's details layout?)",
                             hint=hub.source.manual) from exc
        raise _http_error(hub.source, exc.url or repo, exc, "the file listing") from exc
    write_cache_text(saved, json.dumps(files))  # for HF_HUB_OFFLINE=1 runs
    return files


def _remote(hub: _Hub, repo: str, revision: str, entry: dict[str, Any], cache: Path
            ) -> RemoteFile:
    path = entry["path"]
    lfs = entry.get("lfs") if isinstance(entry.get("lfs"), dict) else None
    return RemoteFile(
        url=f"{hub.endpoint}/datasets/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}",
        dest=cache / path, size=int(entry["size"]) if entry.get("size") is not None else None,
        sha256=lfs.get("oid") if lfs else None,
        git_sha1=None if lfs else entry.get("oid"), headers=hub.headers,
        manual=hub.source.manual)


def _prune_stale_parts(config: Path, keep: set[Path]) -> None:
    """Remove the Parquet files under a config folder of the cache that the current listing
    did not choose (another split, a part dropped when the split was rewritten): the ingest
    reads the whole folder, and they would bring an older run's rows with them."""
    for part in sorted(config.rglob("*.parquet")):
        if part not in keep:
            try:
                part.unlink()
            except OSError as exc:
                raise InputError(part, f"a stale cached file cannot be removed ({exc})",
                                 hint="remove it by hand, or use another --cache-dir") from exc
            logger.info("%s: not in the dataset's current listing; removed from the cache",
                        part)


def _jsonl_files(hub: _Hub, model: str, tasks: Sequence[str] | None, cache: Path
                 ) -> tuple[list[RemoteFile], list[Path], list[tuple[str, str]]]:
    """The newest run's ``samples_<task>_<date>.jsonl`` per task asked, and that run's
    results file; the sample files are what is ingested."""
    repo, folder = details_repo(model), model.replace("/", "__")
    entries = _list(hub, model, MAIN, folder, cache)
    runs: dict[str, dict[str, dict[str, Any]]] = {}  # task -> date -> entry
    results: dict[str, dict[str, Any]] = {}  # date -> results entry
    for entry in entries:
        path = entry.get("path", "")
        parent, _, name = path.rpartition("/")
        if parent != folder:
            continue
        stem, _, ext = name.rpartition(".")
        date = _DATE.search(stem)
        if date is None or not stem.endswith(date.group(0)):
            continue
        if name.startswith("samples_") and ext == "jsonl":
            runs.setdefault(get_file_task_name(stem), {})[date.group(0)] = entry
        elif name.startswith("results_") and ext == "json":
            results[date.group(0)] = entry
    where = f"{hub.endpoint}/datasets/{repo}"
    if not runs:
        raise InputError(where, f"no samples_<task>_<date>.jsonl under {folder}/",
                         hint="not the leaderboard's details layout; " + hub.source.manual)
    chosen = select(tasks, sorted(runs), "task", where)
    files, ingest, selected = [], [], []
    for task in chosen:
        date = max(runs[task])  # fixed-width ISO dates: the newest run is what 'latest' reads
        files.append(_remote(hub, repo, MAIN, runs[task][date], cache))
        ingest.append(files[-1].dest)
        selected.append((model, task))
        if date in results and all(f.dest != cache / results[date]["path"] for f in files):
            files.append(_remote(hub, repo, MAIN, results[date], cache))
    return files, ingest, selected


def _parquet_files(hub: _Hub, model: str, tasks: Sequence[str] | None, cache: Path
                   ) -> tuple[list[RemoteFile], list[Path], list[tuple[str, str]]]:
    """The ``latest`` split (else the newest timestamp split) of each config asked, from the
    Hub's Parquet conversion; the config folders are what is ingested."""
    repo, prefix = details_repo(model), model.replace("/", "__") + "__"
    entries = _list(hub, model, PARQUET_REVISION, "", cache)
    configs: dict[str, dict[str, list[dict[str, Any]]]] = {}  # task -> split dir -> entries
    for entry in entries:
        parts = entry.get("path", "").split("/")
        if len(parts) != 3 or not HUB_PART.fullmatch(parts[2]) or not parts[0].startswith(prefix):
            continue
        _, task = config_model_task(parts[0])
        if task == "results":  # <org>__<model>__results: the aggregated scores, no samples
            continue
        configs.setdefault(task, {}).setdefault(parts[1], []).append(entry)
    where = f"{hub.endpoint}/datasets/{repo}@{PARQUET_REVISION}"
    if not configs:
        raise InputError(where, f"no {prefix}<task>/<split>/NNNN.parquet files",
                         hint="pull with --format jsonl")
    chosen = select(tasks, sorted(configs), "task", where)
    files, ingest, selected = [], [], []
    for task in chosen:
        split = choose_split(sorted(configs[task]))
        if split is None:
            raise InputError(f"{where}/{prefix}{task}", "several splits and none is 'latest' "
                             f"or a run timestamp: {', '.join(sorted(configs[task]))}",
                             hint="pull with --format jsonl")
        files += [_remote(hub, repo, PARQUET_REVISION, e, cache) for e in
                  sorted(configs[task][split], key=lambda e: e["path"])]
        ingest.append(cache / f"{prefix}{task}")  # (pruned to these files before the ingest)
        selected.append((model, task))
    return files, ingest, selected


def pull_open_llm_leaderboard(models: Sequence[str], tasks: Sequence[str] | None = None, *,
                              store: Any, fmt: str = "jsonl", jobs: int = DEFAULT_JOBS,
                              cache_dir: str | Path | None = None,
                              endpoint: str | None = None, **ingest_options: Any
                              ) -> PullResult:
    """Fetch the per-sample results of ``models`` (``ORG/NAME``) on ``tasks`` (names or
    fnmatch patterns as in the file names, e.g. ``leaderboard_bbh_*``; None: all), then
    ingest them into ``store`` (a Store) with the lm-eval adapter.

    Nothing is ingested unless every file was fetched and verified; files fetched before a
    failure stay in the cache (``cache_dir``/hub/...), so the next run resumes.

    Raises:
        UsageError: a malformed model id, an unknown format, jobs < 1.
        UnknownNameError: no details dataset for a model, or a task it lacks (did-you-mean
            from the Hub's search and the dataset's file listing).
        InputError: the Hub unreachable or refusing (gated), a short or corrupt download.
    """
    from ..store.ingest import ingest

    if fmt not in FORMATS:
        raise UsageError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if jobs < 1:
        raise UsageError(f"--jobs: expected at least 1, got {jobs}")
    bad = [m for m in models if not _MODEL_ID.fullmatch(m)]
    if bad or not models:
        raise UsageError(f"--models: expected Hub model ids ORG/NAME, comma-separated, got "
                         f"{', '.join(map(repr, bad)) or 'none'}")
    base = hub_endpoint(endpoint)
    root = cache_root(cache_dir) / "hub"
    files: list[RemoteFile] = []
    paths: list[Path] = []
    selected: list[tuple[str, str]] = []
    for model in dict.fromkeys(models):  # each once, in the order given
        source = Source("the Hugging Face Hub", f"{base} ($HF_ENDPOINT or --endpoint)",
                        _manual(model, fmt, tasks), denied=_DENIED)
        hub = _Hub(base, source)
        revision = PARQUET_REVISION if fmt == "parquet" else MAIN
        cache = root / details_repo(model) / quote(revision, safe="")
        pick = _parquet_files if fmt == "parquet" else _jsonl_files
        f, p, s = pick(hub, model, tasks, cache)
        files += f
        paths += p
        selected += s
    report = fetch_files(files, source=Source("the Hugging Face Hub", base,
                                              _manual(models[0], fmt, tasks), denied=_DENIED),
                         jobs=jobs, desc="open-llm-leaderboard",
                         offline="HF_HUB_OFFLINE is set" if _offline() else "")
    if fmt == "parquet":
        keep = {f.dest for f in files}
        for folder in paths:
            _prune_stale_parts(folder, keep)
    result = PullResult(source="open-llm-leaderboard", cache=root, fetch=report, paths=paths,
                        selected=selected, store=store.root)
    result.ingest = ingest("lm-eval", paths, store, **ingest_options)
    return result


__all__ = ["DETAILS_ORG", "FORMATS", "details_repo", "hub_endpoint", "pull_open_llm_leaderboard"]
