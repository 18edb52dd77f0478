"""Saved routers: a damaged folder (a file cut short by a power loss, garbage, a missing
file) is fitted again and replaced, with one warning naming it; a save flushes its files
and its folder to disk before the rename that makes it visible."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lm_router_plugin.router.router as router_mod
from lm_router_plugin.router.persistence import fit_or_load, load_router, save_router
from lm_router_plugin.router.router import Router
from lm_router_plugin.store.schema import validate_table
from lm_router_plugin.store.store import Store

N = 24


def _table(rng: np.random.Generator) -> pd.DataFrame:
    rows = [{"source": "table", "benchmark": "", "task": f"t{i % 3}", "instance_id": str(i),
             "input_text": f"q{i}", "model": m, "metric": "acc",
             "score": float(rng.random() > .5), "threshold": np.nan, "correct": 0,
             "origin": "x"} for i in range(N) for m in ("a", "b")]
    table = pd.DataFrame(rows)
    table["correct"] = table["score"].astype(int)
    return table


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    """A store of N inputs x 2 models, embedded by a lookup (no embedding model)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 8)).astype(np.float32)
    vectors = {f"q{i}": X[i] / np.linalg.norm(X[i]) for i in range(N)}

    class Lookup:
        id = "lookup"

        def encode(self, texts):
            return np.stack([vectors[t] for t in texts])

    monkeypatch.setattr(router_mod, "make_embedder", lambda *a, **k: Lookup())
    store = Store(tmp_path / "store")
    store.write_table(validate_table(_table(rng)))
    return store


def _damage(folder: Path, how: str) -> None:
    arrays, state = folder / "arrays.npz", folder / "state.json"
    if how == "empty arrays.npz":  # what a power loss before the data reached the disk leaves
        arrays.write_bytes(b"")
    elif how == "truncated arrays.npz":
        arrays.write_bytes(arrays.read_bytes()[: arrays.stat().st_size // 2])
    elif how == "missing arrays.npz":
        arrays.unlink()
    elif how == "garbage state.json":
        state.write_text("\0\0\0")
    elif how == "state.json without keys":
        state.write_text("{}")
    elif how == "an array missing":
        with np.load(arrays) as data:
            kept = {k: data[k] for k in data.files if k != "Y_"}
        np.savez(arrays, **kept)


@pytest.mark.parametrize("how", ["empty arrays.npz", "truncated arrays.npz",
                                 "missing arrays.npz", "garbage state.json",
                                 "state.json without keys", "an array missing"])
def test_a_damaged_saved_router_is_fitted_again_and_replaced(store, how, caplog):
    first = fit_or_load(store, k=3, kappa=5)
    (folder,) = [p for p in store.routers_dir().iterdir() if not p.name.startswith(".")]
    _damage(folder, how)
    with caplog.at_level(logging.WARNING, logger="lm_router_plugin"):
        again = fit_or_load(store, k=3, kappa=5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(folder) in warnings[0], warnings
    assert "fitting it again" in warnings[0]
    np.testing.assert_array_equal(again.Y_, first.Y_)
    # the folder now holds a whole router again: the next command loads it, no warning
    assert [p.name for p in store.routers_dir().iterdir()] == [folder.name]
    np.testing.assert_array_equal(load_router(folder).Y_, first.Y_)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lm_router_plugin"):
        fit_or_load(store, k=3, kappa=5)
    assert not caplog.records


def test_save_flushes_files_and_folder_before_the_rename(store, tmp_path, monkeypatch):
    """Every file and the temporary folder are fsynced before the rename makes the folder
    visible, and the parent after it; else a power loss can leave empty files in place."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name fsynced descriptors")
    router = Router(k=3, kappa=5).fit(store.read_table(), store=store)
    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def rename(src, dst):
        events.append(("rename", str(src)))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    folder = tmp_path / "routers" / "r"
    assert save_router(router, folder)
    (position,) = [i for i, (what, _) in enumerate(events) if what == "rename"]
    tmp = events[position][1]
    synced_before = {Path(p).name if Path(p).parent == Path(tmp) else p
                     for what, p in events[:position] if what == "fsync"}
    assert {"arrays.npz", "state.json", "card.json", tmp} <= synced_before, events
    assert ("fsync", str(folder.parent)) in events[position:]
    assert json.loads((folder / "card.json").read_text())["n_models"] == 2
