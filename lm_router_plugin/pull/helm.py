"""Pull runs of a public HELM release (the files HELM's own web front end reads).

    result = pull_helm("lite", "v1.9.0", ["mmlu:subject=philosophy,*"],
                       store=Store("lm-router-store"))

HELM publishes every project (``lite``, ``classic``, ``mmlu``, ``safety``, ...) in the public
Google Cloud Storage bucket ``crfm-helm-public``, one ``benchmark_output`` folder per project,
laid out as ``helm-summarize`` writes it (stanford-crfm/helm,
src/helm/benchmark/presentation/summarize.py) and as the front end fetches it
(helm-frontend/src/services/getRunsToRunSuites.ts, getRunSpecByName.ts, ...; its base URL
in helm-frontend/public/config.js)::

    <base>/<project>/benchmark_output/releases/<release>/runs_to_run_suites.json
        {run name: suite version}, the runs of the release
    <base>/<project>/benchmark_output/runs/<suite version>/<run name>/run_spec.json
                                                                 /scenario_state.json
                                                                 /per_instance_stats.json

with ``<base>`` = https://storage.googleapis.com/crfm-helm-public. Only the three files the
helm adapter reads are fetched per run (adapters/helm.py ``REQUIRED_FILES``), into the same
layout under the cache, so the result is a ``benchmark_output`` folder that ``lm-router
ingest helm`` reads as it is. The projects and their releases are listed by the HELM
website's ``project_metadata.json`` (what its release menu reads), used here only for
did-you-mean when a release is not found. GCS sends each object's MD5 in ``x-goog-hash``;
the download checks it and the ``Content-Length``.
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
from urllib.parse import quote

from ..adapters.helm import REQUIRED_FILES
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

DEFAULT_BASE_URL = "https://storage.googleapis.com/crfm-helm-public"
DEFAULT_PROJECTS_URL = "https://crfm.stanford.edu/helm/project_metadata.json"
BASE_URL_ENV = "LM_ROUTER_HELM_URL"
PROJECTS_URL_ENV = "LM_ROUTER_HELM_PROJECTS_URL"
RUNS_TO_SUITES = "runs_to_run_suites.json"
_NAME = re.compile(r"[A-Za-z0-9][\w.-]*")
_SAFE = "!'()*"  # left as is, as the front end's encodeURIComponent does


def helm_base_url(base_url: str | None = None) -> str:
    return (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


def _url(base: str, *parts: str) -> str:
    """``base`` + the quoted path segments, as the front end's getBenchmarkEndpoint builds it."""
    return "/".join([base] + [quote(p, safe=_SAFE) for p in parts])


def _manual(base: str, suite: str, release: str) -> str:
    gs = (f"gs://crfm-helm-public/{suite}/benchmark_output" if base == DEFAULT_BASE_URL
          else f"{base}/{suite}/benchmark_output")
    return (f"'gcloud storage cp {gs}/releases/{release}/{RUNS_TO_SUITES} .' lists each run's "
            f"suite version; 'gcloud storage cp -r {gs}/runs/SUITE_VERSION/RUN_NAME "
            "DIR/runs/SUITE_VERSION/' for each run wanted (HELM's docs/downloading_raw_results"
            ".md), then 'lm-router ingest helm DIR/runs'")


def _fetch_json(url: str, source: Source) -> Any:
    """GET and parse a JSON document. Raises urllib.error.HTTPError on an error status."""
    return fetch_json(url, source, "HELM's listing")[0]


def _not_found(url: str, suite: str, release: str, source: Source) -> Exception:
    """The release list is missing: say which name is wrong, from the projects' list."""
    projects_url = os.environ.get(PROJECTS_URL_ENV) or DEFAULT_PROJECTS_URL
    try:
        projects = _fetch_json(projects_url, source)
        releases = {str(p["id"]): [str(r) for r in p.get("releases") or []]
                    for p in projects if isinstance(p, dict) and "id" in p}
    except (InputError, urllib.error.HTTPError, TypeError, AttributeError):
        releases = {}
    if releases and suite not in releases:
        return UnknownNameError(f"--suite: no HELM project {suite!r}{did_you_mean(suite, releases)}"
                                f" (projects: {', '.join(sorted(releases))}; listed by "
                                f"{projects_url})")
    if releases and release not in releases[suite]:
        return UnknownNameError(
            f"--release: HELM {suite} has no release {release!r}"
            f"{did_you_mean(release, releases[suite])} (releases: "
            f"{', '.join(releases[suite]) or 'none'}; listed by {projects_url})")
    known = (" although the HELM website lists it (some older releases, e.g. classic before "
             "v0.3.0, were published as suites only)") if releases else ""
    return InputError(url, f"not found (HTTP 404): no release {release!r} of HELM project "
                           f"{suite!r} here{known}",
                      hint=f"check --suite and --release at https://crfm.stanford.edu/helm/; "
                           f"by hand: {source.manual}")


def release_runs(suite: str, release: str, *, base_url: str | None = None,
                 cache_dir: str | Path | None = None) -> tuple[dict[str, str], Path]:
    """``{run name: suite version}`` of a HELM release and the cache's benchmark_output
    folder. The list is fetched once and kept (a published release does not change)."""
    base = helm_base_url(base_url)
    source = Source("HELM's public bucket", f"{base} (${BASE_URL_ENV} or --base-url)",
                    _manual(base, suite, release))
    output = cache_root(cache_dir) / "helm" / suite / "benchmark_output"
    saved = output / "releases" / release / RUNS_TO_SUITES
    url = _url(base, suite, "benchmark_output", "releases", release, RUNS_TO_SUITES)
    data = read_saved_json(saved)  # None: never fetched, or damaged: fetched again
    if not (isinstance(data, dict) and all(isinstance(k, str) and isinstance(v, str)
                                           for k, v in data.items())):
        try:
            data = _fetch_json(url, source)
        except urllib.error.HTTPError as exc:
            if exc.code in (403, 404):  # GCS answers 403 for a missing object of some buckets
                raise _not_found(url, suite, release, source) from exc
            raise _http_error(source, url, exc, "the release's run list") from exc
        if not (isinstance(data, dict) and all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in data.items())):
            raise InputError(url, "expected a JSON object {run name: suite version}",
                             hint=f"is {base} HELM's public bucket?")
        write_cache_text(saved, json.dumps(data, indent=1))
    return data, output


def pull_helm(suite: str, release: str, runs: Sequence[str] | None = None, *, store: Any,
              jobs: int = DEFAULT_JOBS, cache_dir: str | Path | None = None,
              base_url: str | None = None, **ingest_options: Any) -> PullResult:
    """Fetch the runs of HELM ``suite`` (the project: lite, classic, mmlu, safety, ...)
    release ``release`` whose names match ``runs`` (exact run names or fnmatch patterns, e.g.
    ``mmlu:*model=openai_gpt2*``; None: every run), then ingest them into ``store`` with the
    helm adapter (``ingest_options``: its -o options, thresholds, replace).

    Nothing is ingested unless every file was fetched and verified; completed files stay in
    the cache, so the next run resumes.

    Raises:
        UsageError: a malformed suite or release name, jobs < 1.
        UnknownNameError: an unknown project or release (did-you-mean from the HELM website's
            project list) or a run pattern that matches no run of the release (did-you-mean
            from its run list).
        InputError: the bucket unreachable, an HTTP error, a short or corrupt download.
    """
    from ..store.ingest import ingest

    for option, value in (("--suite", suite), ("--release", release)):
        if not _NAME.fullmatch(value or ""):
            raise UsageError(f"{option}: expected a name such as lite or v1.9.0, got {value!r}")
    if jobs < 1:
        raise UsageError(f"--jobs: expected at least 1, got {jobs}")
    base = helm_base_url(base_url)
    mapping, output = release_runs(suite, release, base_url=base, cache_dir=cache_dir)
    where = f"HELM {suite} release {release}"
    chosen = select(runs, sorted(mapping), "run", where)
    files, folders = [], []
    for run in chosen:
        version = mapping[run]
        folder = output / "runs" / version / run
        folders.append(folder)
        files += [RemoteFile(url=_url(base, suite, "benchmark_output", "runs", version, run,
                                      name), dest=folder / name)
                  for name in REQUIRED_FILES]
    source = Source("HELM's public bucket", f"{base} (${BASE_URL_ENV} or --base-url)",
                    _manual(base, suite, release))
    report = fetch_files(files, source=source, jobs=jobs, desc=f"helm {suite} {release}")
    result = PullResult(source="helm", cache=output, fetch=report, paths=folders,
                        selected=[(run, mapping[run]) for run in chosen], store=store.root)
    result.ingest = ingest("helm", folders, store, **ingest_options)
    return result


__all__ = ["DEFAULT_BASE_URL", "helm_base_url", "pull_helm", "release_runs"]
