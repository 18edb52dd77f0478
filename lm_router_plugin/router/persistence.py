"""Saving and loading fitted routers, and the cache policy of the store's ``routers/``.

A fitted router lives in ``routers/<key>/`` (arrays.npz, state.json, card.json), where the key
hashes the table fingerprint, the embedder and the *fit* parameters (``FIT_PARAMS``). The
decision-only settings (sigma, eta, n_draws, seed) are not part of it: changing them reuses
the fitted router. A folder appears by one rename of a complete temporary folder, so a
reader sees a whole router or none; routers fitted on an older table are removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..store.schema import (
    CORRECT,
    INPUT_TEXT,
    INSTANCE_ID,
    METRIC,
    MODEL,
    SCORE,
    TASK,
    THRESHOLD,
)
from ..store.store import Store, dir_mode, fsync_dir
from .calibration import Calibration
from .neighbors import FaissIVFIndex
from .pool import ScoreScale
from .router import DECISION_PARAMS, SEARCH_PARAMS, Router
from .scores import argmax_with_ties

logger = logging.getLogger(__name__)

_ARRAYS = ("X_", "Y_", "task_of_", "loo_g_")
#: Saved-router layout; part of the cache key, so a router saved in an older layout (e.g.
#: without the calibration's s2, which the stacked switch needs) is refitted, never loaded.
ROUTER_FORMAT = 3
_IVF_FILE = "index.faiss"  # a faiss-ivf router's trained index (faiss.write_index)
_CALIBRATION = ("u", "p", "accuracy", "included", "mean_accuracy", "s1", "residual_cov", "s2",
                "n", "task_s1", "task_bandwidths")
#: calibration arrays that may be None (task_k = 0): saved as empty arrays, loaded as None
_OPTIONAL = ("task_s1", "task_bandwidths")
#: What reading a damaged router folder raises (a file cut short by a power loss, a missing
#: array or key, garbage in a JSON or npz file; faiss: RuntimeError): it is fitted again.
_DAMAGED = (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile,
            RuntimeError)


def router_card(router: Router) -> dict[str, Any]:
    """A small description of the fitted router (like a model card)."""
    from .. import __version__

    router.check_fitted()
    mean = router.calibration_.mean_accuracy
    return {"lm_router_plugin_version": __version__, "embedder": router.embedder_id_,
            "params": router.get_params(), "n_models": len(router.models_),
            "models": router.models_, "n_tasks": len(router.task_names_),
            "tasks": router.task_names_, "n_reference_inputs": int(len(router.X_)),
            "n_labels": int((~np.isnan(router.Y_)).sum()),
            "best_model_on_average": router.models_[argmax_with_ties(mean, mean)]}


def save_router(router: Router, folder: Path, card: dict[str, Any] | None = None, *,
                replace: bool = True) -> bool:
    """Write arrays + state + router card into ``folder`` atomically: a complete temporary
    folder renamed into place, so a reader sees a whole router or none.

    If ``folder`` exists: ``replace=False`` keeps it (a router of the same key is an equal
    router, e.g. fitted by a concurrent command) and returns False; ``replace=True`` moves
    it aside and ours in (putting it back if that fails). Returns True when ours is in place.
    """
    router.check_fitted()
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp", dir=folder.parent))
    aside = None
    try:
        arrays = {name: getattr(router, name) for name in _ARRAYS}
        cal = router.calibration_
        arrays.update({f"cal_{name}": np.empty(0) if getattr(cal, name) is None
                       else getattr(cal, name) for name in _CALIBRATION})
        np.savez(tmp / "arrays.npz", **arrays)
        state = {"params": router.get_params(), "models": router.models_,
                 "tasks": router.task_names_, "instance_ids": router.instance_ids_,
                 "embedder_id": router.embedder_id_,
                 # target "score": each metric's map onto [0, 1] and each task's metric
                 "scales": [s.to_dict() for s in getattr(router, "scales_", {}).values()],
                 "task_metrics": getattr(router, "task_metrics_", [])}
        (tmp / "state.json").write_text(json.dumps(state))
        (tmp / "card.json").write_text(json.dumps(card or router_card(router), indent=2) + "\n")
        index = getattr(router, "index_", None)
        if isinstance(index, FaissIVFIndex):  # minutes to train at 1M rows; seconds to read
            index.save(tmp / _IVF_FILE)
        # on disk before the rename makes them visible: a power loss then leaves the old
        # router or a whole new one, never a folder of empty files
        for file in tmp.iterdir():
            with open(file, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, dir_mode())
        fsync_dir(tmp)
        if folder.exists():
            if not replace:
                logger.debug("router %s already saved by another process", folder.name)
                return False
            aside = Path(tempfile.mkdtemp(prefix=".stale", dir=folder.parent)) / folder.name
            os.rename(folder, aside)
        try:
            os.rename(tmp, folder)  # atomic; fails if a concurrent save got there first
        except OSError:
            if aside is not None:
                os.rename(aside, folder)
                aside = None
            if not (folder / "card.json").exists():
                raise
            return False
        fsync_dir(folder.parent)
        return True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if aside is not None:
            shutil.rmtree(aside.parent, ignore_errors=True)


def load_router(folder: Path, **decision_params: Any) -> Router:
    """The router saved in ``folder``; ``decision_params`` override sigma/eta/n_draws/seed
    and the search parameters (index kind, threshold, nprobe)."""
    folder = Path(folder)
    state = json.loads((folder / "state.json").read_text())
    params = {**state["params"], **decision_params}
    router = Router(**params)
    with np.load(folder / "arrays.npz") as arrays:
        for name in _ARRAYS:
            setattr(router, name, arrays[name])
        cal = {name: arrays[f"cal_{name}"] for name in _CALIBRATION}
        router.calibration_ = Calibration(**{
            name: None if name in _OPTIONAL and value.size == 0 else value
            for name, value in cal.items()})
    router.models_ = state["models"]
    router.task_names_ = state["tasks"]
    router.instance_ids_ = state["instance_ids"]
    router.embedder_id_ = state["embedder_id"]
    router.scales_ = {s["metric"]: ScoreScale(**s) for s in state.get("scales", [])}
    router.task_metrics_ = state.get("task_metrics", [])
    router.predictor_ = router.make_predictor().fit(router.X_, router.Y_)
    if router.index == "faiss-ivf" and (folder / _IVF_FILE).exists():
        router.use_index(FaissIVFIndex.load(folder / _IVF_FILE, router.X_, router.nprobe))
    router.neighbor_index()  # exact kinds: nothing to build; attaches it to the predictor
    return router


def router_key(fingerprint: str, embedder_id: str, router: Router) -> str:
    from .. import __version__

    key = json.dumps([fingerprint, embedder_id, router.fit_params(), __version__, ROUTER_FORMAT],
                     sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def fit_or_load(store: Store, **params: Any) -> Router:
    """The store's fitted router for these parameters; fitted only when the table, the
    embedder or a fit parameter changed (decision-only settings reuse it)."""
    router = Router(**params)
    router.validate_params()
    if not store.has_table():
        store.read_table(required=True)  # raises the "ingest first" error
    embedder_id = router.embedder_object().id
    fingerprint = store.table_fingerprint()
    folder = store.routers_dir() / router_key(fingerprint, embedder_id, router)
    decision = {name: params[name] for name in DECISION_PARAMS + SEARCH_PARAMS
                if name in params}
    replace = False  # a router of this key saved meanwhile by another command is as good
    if (folder / "card.json").exists():
        try:
            loaded = load_router(folder, **decision)
        except _DAMAGED as exc:
            # removed as stale by a concurrent command (fit again), or damaged, e.g. a file
            # cut short by a power loss: fit again and put a whole router in its place
            if folder.exists():
                logger.warning("the saved router %s cannot be read (%s: %s); fitting it again",
                               folder, type(exc).__name__, str(exc).splitlines()[0]
                               if str(exc) else "")
                replace = True
        else:
            loaded.use_embedder(router.embedder_object())  # already loaded: no second load
            return loaded
    # only when fitting (a cached router needs no table), and only what build_pool reads,
    # as categoricals: a 10M-row table then takes ~0.2 GB instead of several GB of strings
    # metric, score and threshold too: --target score learns the scores, and --target
    # correct checks that no metric's correctness was guessed without a threshold (pool.py)
    table = store.read_table(columns=[TASK, INSTANCE_ID, INPUT_TEXT, MODEL, CORRECT, METRIC,
                                      SCORE, THRESHOLD], categorical=True)
    logger.info("fitting the router on %d rows (%s)", len(table), embedder_id)
    router.fit(table, store=store)
    card = router_card(router)
    card["table_fingerprint"] = fingerprint
    card["n_rows"] = int(len(table))
    save_router(router, folder, card, replace=replace)
    with store.lock():
        _remove_stale(store.routers_dir(), fingerprint, keep=folder)
    return router


def _remove_stale(routers_dir: Path, fingerprint: str, keep: Path) -> None:
    """Delete routers fitted on another table (they can never be loaded again); call under
    the store lock. A folder is renamed away first, so a reader never sees half of one."""
    for old in routers_dir.iterdir():
        if not old.is_dir() or old == keep:
            continue
        if old.name.startswith(".stale"):  # left by a command killed while cleaning
            shutil.rmtree(old, ignore_errors=True)
            continue
        if old.name.startswith("."):  # another command's save in progress
            continue
        try:
            card = json.loads((old / "card.json").read_text())
        except (OSError, ValueError):
            continue
        if card.get("table_fingerprint") != fingerprint:
            trash = Path(tempfile.mkdtemp(prefix=".stale", dir=routers_dir))
            try:
                os.rename(old, trash / old.name)
            except OSError:
                pass
            shutil.rmtree(trash, ignore_errors=True)
