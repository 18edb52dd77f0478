"""What both sources share: the cache folder, did-you-mean errors, the result of a pull."""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UnknownNameError
from .download import FetchReport

CACHE_ENV = "LM_ROUTER_CACHE_DIR"  # the same variable as the static embedder's cache


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where pulled files are kept: ``cache_dir``, else $LM_ROUTER_CACHE_DIR/pull, else
    $XDG_CACHE_HOME/lm-router/pull, else ~/.cache/lm-router/pull. Outside the store, so a
    failed pull leaves the store as it was."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / "pull"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lm-router" / "pull"


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'a', 'b'?"``: up to 3 names close in spelling (difflib), else up
    to 3 that contain ``name`` (``mmlu_pro`` -> ``leaderboard_mmlu_pro``); or ``""``."""
    names = sorted(set(known))
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if not close:
        close = [k for k in names if name.lower() in k.lower()][:3]
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def select(asked: Sequence[str] | None, known: Sequence[str], what: str, where: str) -> list[str]:
    """The names of ``known`` that ``asked`` names (exact names or fnmatch patterns such as
    ``leaderboard_bbh_*``); all of them when ``asked`` is None.

    Raises:
        UnknownNameError: a name or pattern matches nothing: did-you-mean from ``known``.
    """
    if not asked:
        return sorted(known)
    chosen: list[str] = []
    for name in asked:
        hits = [k for k in known if k == name] or fnmatch.filter(known, name)
        if not hits:
            shown = ", ".join(sorted(known)[:12]) + (", ..." if len(known) > 12 else "")
            raise UnknownNameError(
                f"{where}: no {what} {name!r}{did_you_mean(name, known)} ({len(known)} "
                f"{what}s listed there: {shown or 'none'})")
        chosen += [h for h in sorted(hits) if h not in chosen]
    return chosen


@dataclass
class PullResult:
    """What one ``pull`` did: the files fetched and the ingest of them."""

    source: str  # "open-llm-leaderboard" or "helm"
    cache: Path  # the folder the files were fetched into
    fetch: FetchReport
    paths: list[Path]  # what was ingested (files or run folders in the cache)
    selected: list[tuple[str, str]] = field(default_factory=list)  # (model or run, task/suite)
    ingest: Any = None  # store.ingest.IngestReport
    store: Path | None = None


__all__ = ["PullResult", "cache_root", "did_you_mean", "select"]
