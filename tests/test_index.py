"""The neighbour index layer (neighbors.build_index, Router(index=...)): exact faiss search
equals topk_cosine, IVF recall, the fallback without faiss, the cache key."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lm_router_plugin.cli.commands import main
from lm_router_plugin.errors import FaissNotInstalledError, LMRouterError
from lm_router_plugin.router import neighbors
from lm_router_plugin.router.neighbors import (
    GroupedNeighbors,
    build_index,
    faiss_topk,
    faiss_topk_grouped,
    ivf_nlist,
    ivf_nprobe,
    resolve_index_kind,
    topk_cosine,
)
from lm_router_plugin.router.persistence import fit_or_load, load_router, router_key, save_router
from lm_router_plugin.router.router import Router
from lm_router_plugin.store.schema import validate_table
from lm_router_plugin.store.store import Store

needs_faiss = pytest.mark.skipif(neighbors.import_faiss() is None,
                                 reason="faiss-cpu not installed (pip install -e '.[faiss]')")


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(n: int, dim: int, n_clusters: int, spread: float, seed: int):
    """(X (n, dim) unit rows sorted by cluster, cluster (n,)): clusters = tasks."""
    rng = np.random.default_rng(seed)
    cluster = np.sort(rng.integers(0, n_clusters, n))
    X = rng.standard_normal((n_clusters, dim))[cluster] + spread * rng.standard_normal((n, dim))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), cluster


@pytest.fixture
def no_faiss(monkeypatch):
    """faiss absent: ``import faiss`` raises ImportError (sys.modules entry None)."""
    monkeypatch.setitem(sys.modules, "faiss", None)


# -- exact faiss search == topk_cosine ---------------------------------------------------------
@needs_faiss
@pytest.mark.parametrize("k", [1, 5, 19, 70])
@pytest.mark.parametrize("block", [None, 13])
def test_faiss_flat_equals_topk_cosine(monkeypatch, k, block):
    if block:
        monkeypatch.setattr(neighbors, "FAISS_REF_BLOCK", block)
    rng = np.random.default_rng(0)
    Q, R = _unit(rng, 37, 24), _unit(rng, 61, 24)
    # a memmap-like chunked path is taken for float16; float32 goes in whole unless blocked
    for refs in (R, R.astype(np.float16)):
        exp_idx, exp_sim = topk_cosine(Q, refs, k)
        idx, sim = faiss_topk(Q, refs, k)
        np.testing.assert_array_equal(idx, exp_idx)
        np.testing.assert_allclose(sim, exp_sim, atol=1e-6)
        assert idx.dtype == np.int64 and sim.dtype == np.float32


def _tied_refs():
    e = np.eye(4, dtype=np.float32)
    R = np.tile(e[3], (17, 1))  # 12 rows at similarity 0 to the query
    R[[2, 9, 15]] = e[0]         # similarity 0.8
    R[[4, 11]] = e[1]            # similarity 0.6
    return (e[0] * 0.8 + e[1] * 0.6)[None, :], R


@needs_faiss
@pytest.mark.parametrize("k, expected", [(5, [2, 9, 15, 4, 11]),
                                         (7, [2, 9, 15, 4, 11, 0, 1])])
def test_faiss_flat_ties_go_to_the_lower_row(k, expected):
    # faiss itself returns tied rows highest id first; k = 7 cuts 12 tied rows, more than
    # the slack faiss is asked for, so the row is searched again exactly
    q, R = _tied_refs()
    idx, _ = faiss_topk(q, R, k)
    np.testing.assert_array_equal(idx[0], expected)
    np.testing.assert_array_equal(idx, topk_cosine(q, R, k)[0])


@needs_faiss
@pytest.mark.parametrize("contiguous", [True, False])
def test_grouped_faiss_search_equals_masked_brute_force(contiguous):
    X, groups = _clustered(300, 16, 7, 1.5, seed=1)
    if not contiguous:
        groups = np.random.default_rng(2).permutation(groups)
    exp_idx, exp_sim = topk_cosine(X, X, 19, query_groups=groups, ref_groups=groups)
    idx, sim = faiss_topk_grouped(X, groups, 19)
    np.testing.assert_array_equal(idx, exp_idx)
    np.testing.assert_allclose(sim, exp_sim, atol=1e-6)
    assert (groups[idx] != groups[:, None]).all()  # leakage-free: never its own group


@needs_faiss
def test_grouped_faiss_pads_like_brute_force_and_resolves_ties():
    rng = np.random.default_rng(2)
    R = _unit(rng, 12, 5)
    R[5] = R[3]  # a tie inside group 0 and one across the groups
    R[10] = R[3]
    groups = np.array([0] * 9 + [1] * 3)  # group 0 rows see only 3 others
    exp = topk_cosine(R, R, 5, query_groups=groups, ref_groups=groups)
    got = faiss_topk_grouped(R, groups, 5)
    np.testing.assert_array_equal(got[0], exp[0])
    np.testing.assert_allclose(got[1], exp[1], atol=1e-6)
    assert (got[0][:9, 3:] == -1).all() and np.isneginf(got[1][:9, 3:]).all()
    g_np = GroupedNeighbors(R, groups, 5, per_group=False)
    g_fa = GroupedNeighbors(R, groups, 5, per_group=False, backend="faiss")
    np.testing.assert_array_equal(g_fa.idx, g_np.idx)


@needs_faiss
def test_faiss_flat_gives_twins_one_similarity_and_keeps_the_lower_row():
    """Identical references (the same text twice) tie exactly in faiss's search as in
    numpy's, so both keep the same twin: its lower row (faiss's kernels round the same dot
    product differently by the row's place; before the fix 9 lists of 3,000 differed at
    k = 5)."""
    rng = np.random.default_rng(0)
    X = _unit(rng, 3000, 384)
    for a in range(0, 1500, 37):
        X[a + 1 + (a * 7919) % (3000 - a - 1)] = X[a]
    groups = np.arange(len(X)) // 100
    members, canon = neighbors.identical_rows(X)
    root = np.arange(len(X))
    root[members] = canon
    for idx, sim in (faiss_topk(X, X, 10), faiss_topk_grouped(X, groups, 10),
                     build_index(X, "faiss-flat").search(X, 10)):
        r = root[idx]
        same = r[:, 1:] == r[:, :-1]  # twins side by side: equal, the lower row first
        assert same.any()
        assert (sim[:, 1:][same] == sim[:, :-1][same]).all()
        assert (idx[:, 1:][same] > idx[:, :-1][same]).all()
    np.testing.assert_array_equal(faiss_topk(X, X, 5)[0], topk_cosine(X, X, 5)[0])
    np.testing.assert_array_equal(faiss_topk_grouped(X, groups, 5)[0],
                                  topk_cosine(X, X, 5, query_groups=groups,
                                              ref_groups=groups)[0])


# -- IVF ---------------------------------------------------------------------------------------
def _recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0]) & set(b)) / len(b) for a, b in zip(approx, exact)]))


@needs_faiss
def test_ivf_recall_on_a_clustered_set_and_seeded_build():
    X, _ = _clustered(4000, 32, 40, 0.8, seed=3)
    Q, _ = _clustered(200, 32, 40, 0.8, seed=3)  # same centres (same seed), new rows
    exact, _ = topk_cosine(Q, X, 19)
    ivf = build_index(X, "faiss-ivf")
    assert (ivf.kind, ivf.exact, ivf.nlist, ivf.nprobe) == ("faiss-ivf", False, 63, 8)
    idx, sim = ivf.search(Q, 19)
    assert _recall(idx, exact) > 0.9
    assert (np.diff(sim, axis=1) <= 0).all()  # sorted, best first
    again = build_index(X, "faiss-ivf").search(Q, 19)[0]
    np.testing.assert_array_equal(again, idx)  # seeded training: the same index
    ivf.set_nprobe(ivf.nlist)  # every list probed: exact
    assert _recall(ivf.search(Q, 19)[0], exact) == 1.0


def test_ivf_rules():
    assert ivf_nlist(1_000_000) == 1000 and ivf_nlist(5_000_000) == 2236
    assert ivf_nprobe(1000) == 125 and ivf_nprobe(1) == 1


# -- auto, fallback, errors --------------------------------------------------------------------
@needs_faiss
def test_auto_resolves_by_pool_size():
    assert resolve_index_kind("auto", 999, threshold=1000) == "exact"
    assert resolve_index_kind("auto", 1000, threshold=1000) == "faiss-flat"
    assert build_index(_unit(np.random.default_rng(0), 50, 4), "auto", threshold=10).exact


def test_auto_without_faiss_falls_back_with_a_note(no_faiss, caplog):
    X = _unit(np.random.default_rng(0), 50, 4)
    with caplog.at_level(logging.INFO, logger="lm_router_plugin.router.neighbors"):
        index = build_index(X, "auto", threshold=10)
    assert index.kind == "exact"
    assert "faiss-cpu is not installed" in caplog.text
    assert "pip install 'lm-router-plugin[faiss]'" in caplog.text
    np.testing.assert_array_equal(index.search(X[:3], 4)[0], topk_cosine(X[:3], X, 4)[0])


@pytest.mark.parametrize("kind", ["faiss-flat", "faiss-ivf"])
def test_explicit_faiss_without_faiss_is_one_clear_error(no_faiss, kind, tmp_path):
    with pytest.raises(FaissNotInstalledError, match=r"pip install 'lm-router-plugin\[faiss\]'"):
        Router(index=kind).validate_params()
    (tmp_path / "p.txt").write_text("What is 2+2?\n")
    (tmp_path / "c.yaml").write_text(f"index: {{kind: {kind}}}\n")
    result = CliRunner().invoke(main, ["route", "--prompts", str(tmp_path / "p.txt"),
                                       "--config", str(tmp_path / "c.yaml"),
                                       "--store", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert f"index.kind {kind} needs faiss-cpu" in result.output
    assert "lm-router-plugin[faiss]" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("params", [{"index": "annoy"}, {"index_threshold": -1},
                                    {"nlist": 0}, {"nprobe": 0}])
def test_bad_index_parameters(params):
    with pytest.raises(LMRouterError):
        Router(**params).validate_params()


def test_cli_unknown_index_is_usage_error(tmp_path):
    (tmp_path / "p.txt").write_text("What is 2+2?\n")
    (tmp_path / "c.yaml").write_text("index: {kind: hnsw}\n")
    result = CliRunner().invoke(main, ["route", "--prompts", str(tmp_path / "p.txt"),
                                       "--config", str(tmp_path / "c.yaml"),
                                       "--store", str(tmp_path / "s")])
    assert result.exit_code == 2 and "Unknown index 'hnsw'" in result.output


# -- the router --------------------------------------------------------------------------------
def _table(X: np.ndarray, task: np.ndarray, n_models: int, seed: int) -> pd.DataFrame:
    """Correctness table whose build_pool order is the row order of X."""
    rng = np.random.default_rng(seed)
    skill = rng.uniform(0.2, 0.9, (task.max() + 1, n_models))
    Y = (rng.random((len(X), n_models)) < skill[task]).astype(int)
    ids = [f"{i:04d}" for i in range(len(X))]
    return pd.DataFrame([{"task": f"t{task[i]}", "instance_id": ids[i], "model": f"m{m}",
                          "input_text": ids[i], "correct": Y[i, m]}
                         for i in range(len(X)) for m in range(n_models)])


@pytest.fixture(scope="module")
def pool():
    X, task = _clustered(400, 16, 6, 1.2, seed=4)
    Q, _ = _clustered(30, 16, 6, 1.2, seed=5)
    return _table(X, task, 4, seed=6), X, Q


def _same_recommendation(a, b) -> None:
    """Same neighbours, hence the same g, S1, S2, choice; u, p, S3 equal to float rounding
    (faiss and numpy sum the dot products in different orders: last-bit differences)."""
    a, b = a.to_dict(), b.to_dict()
    for key in ("choice", "bma", "fallback", "n_inputs"):
        assert a[key] == b[key], key
    assert [(t["task"], t["share"]) for t in a["nearest_tasks"]] == \
        [(t["task"], t["share"]) for t in b["nearest_tasks"]]
    assert a["u"] == pytest.approx(b["u"], abs=1e-6)
    assert [m["model"] for m in a["models"]] == [m["model"] for m in b["models"]]
    for ma, mb in zip(a["models"], b["models"]):
        assert (ma["s1"], ma["s2"]) == (mb["s1"], mb["s2"])
        assert (ma["s3"], ma["p"]) == pytest.approx((mb["s3"], mb["p"]), abs=1e-6)


@needs_faiss
def test_router_faiss_flat_gives_the_exact_routers_results(pool):
    table, X, Q = pool
    exact = Router(index="exact").fit(table, embeddings=X)
    flat = Router(index="auto", index_threshold=100).fit(table, embeddings=X)
    assert flat.neighbor_index().kind == "faiss-flat"
    assert exact.neighbor_index().kind == "exact"
    np.testing.assert_array_equal(flat.loo_g_, exact.loo_g_)  # fit: same calibration
    np.testing.assert_allclose(flat.calibration_.u, exact.calibration_.u, atol=1e-6)
    _same_recommendation(flat.recommend(embeddings=Q), exact.recommend(embeddings=Q))
    assert flat.route(embeddings=Q) == exact.route(embeddings=Q)
    # in-task labels: pool through faiss + labels by brute force == refit on pool + labels
    rng = np.random.default_rng(1)
    lab = pd.DataFrame([{"task": "new", "instance_id": str(doc), "model": m,
                         "correct": int(rng.random() < 0.5)}
                        for doc in (3, 10) for m in flat.models_])
    with_lab = flat.recommend(embeddings=Q, labeled=lab)
    assert with_lab.n_labelled_docs == 2
    _same_recommendation(with_lab, exact.recommend(embeddings=Q, labeled=lab))


@needs_faiss
def test_router_ivf_saved_and_loaded_not_retrained(pool, tmp_path, monkeypatch):
    table, X, Q = pool
    router = Router(index="faiss-ivf", nlist=8).fit(table, embeddings=X)
    index = router.neighbor_index()
    assert (index.kind, index.nlist, index.nprobe) == ("faiss-ivf", 8, 1)
    save_router(router, tmp_path / "r")
    assert (tmp_path / "r" / "index.faiss").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("the saved IVF index must be read, not trained again")

    monkeypatch.setattr(neighbors.FaissIVFIndex, "_build", no_training)
    loaded = load_router(tmp_path / "r")
    assert loaded.neighbor_index().nlist == 8
    assert loaded.route(embeddings=Q) == router.route(embeddings=Q)
    assert loaded.recommend(embeddings=Q).to_dict() == router.recommend(embeddings=Q).to_dict()
    loaded.nprobe = 8  # search time only: the same index, more lists probed (here all: exact)
    assert loaded.neighbor_index().nprobe == 8
    exact = Router(index="exact").fit(table, embeddings=X)
    assert loaded.route(embeddings=Q) == exact.route(embeddings=Q)


def test_cache_key_only_for_an_approximate_index(pool):
    def key(**params):
        return router_key("fp", "emb", Router(**params))

    base = key()
    assert key(index="exact") == key(index="faiss-flat") == key(index_threshold=5) == base
    assert key(index="faiss-ivf") != base
    assert key(index="faiss-ivf", nlist=64) != key(index="faiss-ivf")
    assert key(index="faiss-ivf", nprobe=3) == key(index="faiss-ivf")  # search time only


@needs_faiss
def test_fit_or_load_reuses_exact_routers_and_keeps_ivf_apart(pool, tmp_path, monkeypatch):
    import lm_router_plugin.router.router as router_mod

    table, X, Q = pool
    store = Store(tmp_path / "store")
    store.write_table(validate_table(table))
    vectors = {f"{i:04d}": X[i] for i in range(len(X))}

    class Lookup:  # the pool's own vectors by text: no embedding model in this test
        id = "lookup"

        def encode(self, texts):
            return np.stack([vectors[t] for t in texts])

    monkeypatch.setattr(router_mod, "make_embedder", lambda *a, **k: Lookup())

    def folders():
        return sorted(p.name for p in store.routers_dir().iterdir() if p.is_dir())

    first = fit_or_load(store, index="exact")
    before = folders()
    flat = fit_or_load(store, index="faiss-flat")  # exact too: the same cached router
    assert folders() == before and len(before) == 1
    assert flat.neighbor_index().kind == "faiss-flat"
    assert flat.route(embeddings=Q) == first.route(embeddings=Q)
    ivf = fit_or_load(store, index="faiss-ivf", nlist=8)  # approximate: its own router
    now = folders()
    assert len(now) == 2 and (store.routers_dir() / (set(now) - set(before)).pop()
                              / "index.faiss").exists()
    again = fit_or_load(store, index="faiss-ivf", nlist=8, nprobe=2)  # nprobe: no refit
    assert folders() == now
    assert again.neighbor_index().nprobe == 2 and ivf.neighbor_index().nprobe == 1


@needs_faiss
def test_grouped_faiss_search_keeps_the_callers_tie_rule_with_groups_in_several_runs():
    """Groups not contiguous (a caller's own rows, not a pool): the result is topk_cosine's
    in the caller's row numbers, ties to the lower row (a reordered search kept others)."""
    X = np.eye(2, dtype=np.float32)[[0, 0, 0]]
    groups = np.array([1, 0, 2])
    want = topk_cosine(X, X, 1, query_groups=groups, ref_groups=groups)
    got = faiss_topk_grouped(X, groups, 1)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[0].ravel().tolist() == [1, 0, 0]
