"""Store writes: one commit point for table + metadata, concurrent ingests through the real
CLI lose nothing, a SIGKILL at any point leaves the old or the new state, files follow the
umask, and router folders are renamed into place."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lm_router_plugin.store.store import Store

N_ROWS = 40  # rows per model file


def write_results(folder: Path, model: str, n: int = N_ROWS) -> tuple[Path, Path]:
    """(table CSV of ``n`` rows of ``model``, models YAML giving its size)."""
    csv = folder / f"{model}.csv"
    csv.write_text("task,instance_id,model,input_text,score,metric\n" + "".join(
        f"qa,{i},{model},question {i},{(i * 7 % 10) / 10},f1_score\n" for i in range(n)))
    models = folder / f"{model}.yaml"
    models.write_text(f"{model}: {{params: {len(model)}B}}\n")
    return csv, models


def cli_process(store: Path, csv: Path, models: Path, **env: str) -> subprocess.Popen:
    """``lm-router ingest table CSV --models YAML`` as a real separate process."""
    return subprocess.Popen(
        [sys.executable, "-m", "lm_router_plugin.cli", "-q", "ingest", "table", str(csv),
         "--models", str(models), "--store", str(store)],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before {path.name}: "
                                 f"{proc.stderr.read()}")
        assert time.monotonic() < deadline, f"{path.name} never reached"
        time.sleep(0.02)


def state(root: Path) -> tuple[set[str], set[str], int]:
    """(models in the table, models in the metadata, rows) as a fresh reader sees them."""
    store = Store(root)
    table = store.read_table()
    return set(table["model"]), set(store.read_models()), len(table)


def test_concurrent_ingests_lose_nothing(tmp_path):
    store = tmp_path / "store"
    files = [write_results(tmp_path, m) for m in ("alpha", "beta", "gamma")]
    # alpha holds the lock and sleeps inside its commit; beta and gamma read their files
    # meanwhile and must wait, then merge into alpha's table rather than into the empty one.
    first = cli_process(store, *files[0], LM_ROUTER_TEST_PAUSE_AT="generation-written",
                        LM_ROUTER_TEST_PAUSE_FILE=str(tmp_path / "mark"),
                        LM_ROUTER_TEST_PAUSE_SECONDS="2")
    wait_for(tmp_path / "mark.generation-written", first)
    others = [cli_process(store, *f) for f in files[1:]]
    for proc in [first, *others]:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    models, metadata, n_rows = state(store)
    assert models == metadata == {"alpha", "beta", "gamma"}
    assert n_rows == 3 * N_ROWS
    # one generation per commit was made; only the newest two are kept, no temp folders
    assert sorted(p.name[:8] for p in (store / "data").iterdir()) == ["g-000002", "g-000003"]


@pytest.mark.parametrize("point", ["generation-written", "before-current", "after-current"])
def test_sigkill_at_each_commit_point_leaves_old_or_new_state(tmp_path, point):
    store = tmp_path / "store"
    old_csv, old_models = write_results(tmp_path, "alpha")
    assert cli_process(store, old_csv, old_models).wait(timeout=120) == 0
    proc = cli_process(store, *write_results(tmp_path, "beta"),
                       LM_ROUTER_TEST_PAUSE_AT=point,
                       LM_ROUTER_TEST_PAUSE_FILE=str(tmp_path / "mark"))
    wait_for(tmp_path / f"mark.{point}", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    models, metadata, n_rows = state(store)
    if point == "after-current":  # CURRENT was switched: the new state, whole
        assert models == metadata == {"alpha", "beta"} and n_rows == 2 * N_ROWS
    else:
        assert models == metadata == {"alpha"} and n_rows == N_ROWS
    # the next writer works and removes what the killed one left behind
    assert cli_process(store, *write_results(tmp_path, "gamma")).wait(timeout=120) == 0
    models, metadata, _ = state(store)
    assert models == metadata == ({"alpha", "beta", "gamma"} if point == "after-current"
                                  else {"alpha", "gamma"})
    assert not [p for p in (store / "data").iterdir() if p.name.startswith(".")]


def test_sigkill_after_random_delays(tmp_path):
    """Kill ingests at seeded random moments: every time the store reads as a whole state."""
    rng = random.Random(0)
    store = tmp_path / "store"
    assert cli_process(store, *write_results(tmp_path, "base")).wait(timeout=120) == 0
    expected = {"base"}
    for attempt in range(5):
        model = f"m{attempt}"
        proc = cli_process(store, *write_results(tmp_path, model, n=2000))
        time.sleep(rng.uniform(0.3, 2.5))  # python start-up + reading + commit take ~1-3 s
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        models, metadata, n_rows = state(store)
        assert models == metadata, attempt
        assert models in (expected, expected | {model}), attempt
        expected = models
        assert n_rows == N_ROWS + 2000 * (len(models) - 1)


def test_commit_is_one_unit_and_metadata_only_commits_keep_the_table(tmp_path):
    store = Store(tmp_path / "store")
    table = pd.DataFrame({"source": "table", "benchmark": "", "task": "t",
                          "instance_id": ["1", "2"], "input_text": ["a", "b"], "model": "m",
                          "metric": "acc", "score": [1.0, 0.0], "threshold": np.nan,
                          "correct": [1, 0], "origin": "x.csv", "prompt_hash": "",
                          "text_rule": "table"})
    store.write_table(table)
    fingerprint = store.table_fingerprint()
    store.write_models({"m": {"params": 7, "cost_per_1m": None}})
    assert store.table_fingerprint() == fingerprint  # the table file was carried over
    reader = Store(tmp_path / "store")
    assert reader.read_models() == {"m": {"params": 7, "cost_per_1m": None}}
    assert len(reader.read_table()) == 2
    # a reader keeps its snapshot across later commits until it refreshes
    pinned = reader.generation()
    store.write_models({})
    assert reader.generation() == pinned and reader.read_models() != {}
    reader.refresh()
    assert reader.read_models() == {}


def test_old_layout_store_is_read_and_migrated(tmp_path):
    root = tmp_path / "store"
    new = Store(root)
    new.write_models({"m": {"params": None, "cost_per_1m": 1.0}})
    # rebuild the old layout: files at the top, no CURRENT
    root.mkdir(exist_ok=True)
    (root / "models.json").write_bytes(new.models_path.read_bytes())
    (root / "CURRENT").unlink()
    old = Store(root)
    assert old.models_path == root / "models.json"
    assert old.read_models() == {"m": {"params": None, "cost_per_1m": 1.0}}
    old.write_models({"n": {"params": 1, "cost_per_1m": None}})
    assert not (root / "models.json").exists()
    assert Store(root).read_models() == {"n": {"params": 1, "cost_per_1m": None}}


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_store_files_follow_the_umask(tmp_path, umask):
    csv, models = write_results(tmp_path, "alpha")
    script = ("import os, sys; os.umask(int(sys.argv[1], 8)); "
              "from lm_router_plugin.cli.commands import main; main(sys.argv[2:])")
    proc = subprocess.run([sys.executable, "-c", script, oct(umask), "-q", "ingest", "table",
                           str(csv), "--models", str(models), "--store",
                           str(tmp_path / "store")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    store = Store(tmp_path / "store")
    for path in (store.table_path, store.models_path, store.current_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert stat.S_IMODE(store.generation().stat().st_mode) == 0o777 & ~umask


def test_router_save_renames_into_place(tmp_path):
    from lm_router_plugin.router.persistence import load_router, save_router
    from lm_router_plugin.router.router import Router

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 8)).astype(np.float32)
    table = pd.DataFrame([
        {"source": "table", "benchmark": "", "task": f"t{i % 4}", "instance_id": str(i),
         "input_text": f"q{i}", "model": m, "metric": "acc", "score": float(rng.random() > .5),
         "threshold": np.nan, "correct": 0, "origin": "x"}
        for i in range(20) for m in ("a", "b")])
    table["correct"] = table["score"].astype(int)
    router = Router(k=3, kappa=5).fit(table, embeddings=X)
    folder = tmp_path / "routers" / "r"
    assert save_router(router, folder, {"n": 1}, replace=False)
    # the same name again: the folder in place stays, ours is discarded, nothing left over
    assert not save_router(router, folder, {"n": 2}, replace=False)
    assert json.loads((folder / "card.json").read_text()) == {"n": 1}
    assert save_router(router, folder, {"n": 3})  # replace=True swaps it
    assert json.loads((folder / "card.json").read_text()) == {"n": 3}
    assert sorted(p.name for p in folder.parent.iterdir()) == ["r"]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~_umask()
    np.testing.assert_array_equal(load_router(folder).Y_, router.Y_)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("damage", ["garbage", "missing-generation"])
def test_damaged_current_pointer_is_one_clear_error(tmp_path, damage):
    from click.testing import CliRunner

    from lm_router_plugin.cli.commands import main

    csv, models = write_results(tmp_path, "alpha")
    store = tmp_path / "store"
    assert CliRunner().invoke(main, ["ingest", "table", str(csv), "--store", str(store)]
                              ).exit_code == 0
    if damage == "garbage":
        (store / "CURRENT").write_text("\x00\x01nonsense")
    else:
        import shutil
        shutil.rmtree(Store(store).generation())
    result = CliRunner().invoke(main, ["info", "--store", str(store)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert str(store / "CURRENT") in result.output and "restore the store" in result.output


# -- validate_table and parse_params: one error naming the column (or value) ----------------
@pytest.mark.parametrize("column, value, expected", [
    ("score", "abc", "table: column 'score' must be a number, got 'abc' at row 1"),
    ("threshold", "high", "table: column 'threshold' must be a number, got 'high' at row 1"),
    ("task", None, "table: column 'task' is null at row 1"),
    ("model", float("nan"), "table: column 'model' is null at row 1"),
])
def test_validate_table_rejects_text_scores_and_null_keys(column, value, expected):
    from lm_router_plugin.errors import SchemaError
    from lm_router_plugin.store.schema import validate_table

    df = pd.DataFrame({"task": ["t", "t"], "instance_id": ["1", "2"], "model": ["m", "m"],
                       "correct": [1, 0], "score": [1.0, None], "threshold": [None, None]})
    out = validate_table(df)
    assert np.isnan(out["score"].iloc[1])  # a null score stays allowed
    df[column] = df[column].astype(object)
    df.loc[1, column] = value
    with pytest.raises(SchemaError) as info:
        validate_table(df)
    assert str(info.value).startswith(expected), str(info.value)


def test_parse_params_rejects_lists_bools_and_non_finite():
    from lm_router_plugin.store.store import parse_params

    assert parse_params("7B") == 7_000_000_000 and parse_params(np.int64(3)) == 3
    assert parse_params(1.5e9) == 1_500_000_000 and parse_params(None) is None
    for value in ([7], {"a": 1}, True, float("nan"), float("inf"), -1, "seven"):
        with pytest.raises(ValueError, match="cannot read a parameter count"):
            parse_params(value)


def test_a_commit_that_cannot_write_is_one_error_and_changes_nothing(tmp_path):
    """A file-size limit (as a full disk would) stops the commit: one error line naming the
    store and the reason, the old state intact, no temporary folder left."""
    import resource

    store = tmp_path / "store"
    first = cli_process(store, *write_results(tmp_path, "alpha"))
    assert first.wait(timeout=120) == 0, first.stderr.read()
    before = state(store), (store / "CURRENT").read_text(), sorted(os.listdir(store / "data"))
    limit = Store(store).table_path.stat().st_size + 4096  # the table can no longer grow
    csv, models = write_results(tmp_path, "beta", n=5000)
    proc = subprocess.run(
        [sys.executable, "-m", "lm_router_plugin.cli", "-q", "ingest", "table", str(csv),
         "--models", str(models), "--store", str(store)],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, proc.stderr
    assert f"cannot write the store {store}: " in errors[0]
    assert "File too large" in errors[0] and "nothing was changed" in errors[0]
    assert (state(store), (store / "CURRENT").read_text(),
            sorted(os.listdir(store / "data"))) == before
