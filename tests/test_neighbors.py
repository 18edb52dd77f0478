"""Chunked exact top-k cosine search against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest

from lm_router_plugin.embedding.vectors import l2_normalise
from lm_router_plugin.router import neighbors
from lm_router_plugin.router.neighbors import merge_topk, topk_cosine


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute_force(Q, R, k, qg=None, rg=None):
    """Full similarity matrix, mask, then per row a plain sort by (-sim, row number)."""
    sim = Q.astype(np.float64) @ R.astype(np.float64).T
    n_q, n_r = sim.shape
    k = min(k, n_r)
    idx = np.full((n_q, k), -1)
    out = np.full((n_q, k), -np.inf)
    for i in range(n_q):
        eligible = [j for j in range(n_r) if qg is None or qg[i] != rg[j]]
        ranked = sorted(eligible, key=lambda j: (-sim[i, j], j))[:k]
        idx[i, :len(ranked)] = ranked
        out[i, :len(ranked)] = sim[i, ranked]
    return idx, out


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks much smaller than the data, so chunk merging is exercised."""
    monkeypatch.setattr(neighbors, "REF_BLOCK", 7)
    monkeypatch.setattr(neighbors, "QUERY_BLOCK", 5)


@pytest.mark.parametrize("blocks", ["default", "small"])
@pytest.mark.parametrize("k", [1, 5, 19])
def test_topk_matches_brute_force(request, blocks, k):
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    rng = np.random.default_rng(0)
    Q, R = _unit(rng, 23, 12), _unit(rng, 61, 12)
    idx, sim = topk_cosine(Q, R, k)
    exp_idx, exp_sim = _brute_force(Q, R, k)
    assert idx.shape == sim.shape == (23, k)
    np.testing.assert_array_equal(idx, exp_idx)
    np.testing.assert_allclose(sim, exp_sim, atol=1e-5)
    assert sim.dtype == np.float32 and idx.dtype == np.int64


@pytest.mark.parametrize("blocks", ["default", "small"])
def test_leave_one_group_out_masking(request, blocks):
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    rng = np.random.default_rng(1)
    X = _unit(rng, 40, 8)
    groups = rng.integers(0, 4, size=40)
    idx, sim = topk_cosine(X, X, 6, query_groups=groups, ref_groups=groups)
    exp_idx, exp_sim = _brute_force(X, X, 6, groups, groups)
    np.testing.assert_array_equal(idx, exp_idx)
    np.testing.assert_allclose(sim, exp_sim, atol=1e-5)
    assert (groups[idx] != groups[:, None]).all()  # never a neighbour of its own group


@pytest.mark.parametrize("blocks", ["default", "small"])
def test_k_larger_than_eligible_pads_with_minus_one(request, blocks):
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    rng = np.random.default_rng(2)
    R = _unit(rng, 12, 5)
    # group 0 has 9 rows, group 1 has 3: a query of group 0 has only 3 eligible references
    groups = np.array([0] * 9 + [1] * 3)
    idx, sim = topk_cosine(R, R, 5, query_groups=groups, ref_groups=groups)
    exp_idx, exp_sim = _brute_force(R, R, 5, groups, groups)
    np.testing.assert_array_equal(idx, exp_idx)
    np.testing.assert_allclose(sim, exp_sim, atol=1e-5)
    assert (idx[:9, 3:] == -1).all() and np.isneginf(sim[:9, 3:]).all()
    assert set(idx[0, :3]) == {9, 10, 11}
    assert (idx[9:] >= 0).all()  # group 1 queries have 9 eligible rows


def test_k_larger_than_reference_count_is_capped():
    rng = np.random.default_rng(3)
    Q, R = _unit(rng, 4, 6), _unit(rng, 3, 6)
    idx, sim = topk_cosine(Q, R, 10)
    assert idx.shape == (4, 3)
    np.testing.assert_array_equal(idx, _brute_force(Q, R, 3)[0])


def _tied_refs() -> tuple[np.ndarray, np.ndarray]:
    e = np.eye(4, dtype=np.float32)
    # rows 2, 9 and 15 are e0 (similarity 0.8 to the query), rows 4 and 11 are e1 (0.6),
    # the other 12 rows are e3 (similarity exactly 0)
    R = np.tile(e[3], (17, 1))
    R[[2, 9, 15]] = e[0]
    R[[4, 11]] = e[1]
    q = (e[0] * 0.8 + e[1] * 0.6)[None, :]
    return q, R


@pytest.mark.parametrize("blocks", ["default", "small"])
def test_ties_go_to_lower_row_number(request, blocks):
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    q, R = _tied_refs()
    idx, sim = topk_cosine(q, R, 5)
    np.testing.assert_array_equal(idx[0], [2, 9, 15, 4, 11])
    np.testing.assert_allclose(sim[0], [0.8, 0.8, 0.8, 0.6, 0.6], atol=1e-7)


def test_ties_straddling_k_go_to_lower_row_number():
    q, R = _tied_refs()
    idx, sim = topk_cosine(q, R, 7)  # 2 of the 12 rows at similarity 0 make the cut
    np.testing.assert_array_equal(idx[0], [2, 9, 15, 4, 11, 0, 1])


def test_memmap_and_float16_references(tmp_path):
    rng = np.random.default_rng(4)
    Q, R = _unit(rng, 9, 16), _unit(rng, 50, 16)
    path = tmp_path / "refs.f32"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=R.shape)
    mm[:] = R
    mm.flush()
    ro = np.memmap(path, dtype=np.float32, mode="r", shape=R.shape)
    np.testing.assert_array_equal(topk_cosine(Q, ro, 5)[0], _brute_force(Q, R, 5)[0])
    R16 = R.astype(np.float16)
    idx16, sim16 = topk_cosine(Q, R16, 5)
    exp_idx, exp_sim = _brute_force(Q, R16.astype(np.float32), 5)
    np.testing.assert_allclose(sim16, exp_sim, atol=1e-5)


def test_merge_topk_matches_brute_force():
    rng = np.random.default_rng(5)
    Q, A, B = _unit(rng, 7, 6), _unit(rng, 20, 6), _unit(rng, 8, 6)
    idx_a, sim_a = topk_cosine(Q, A, 4)
    idx_b, sim_b = topk_cosine(Q, B, 4)
    idx, sim = merge_topk(idx_a, sim_a, idx_b + len(A), sim_b, 4)  # B rows after A rows
    exp_idx, exp_sim = _brute_force(Q, np.vstack([A, B]), 4)
    np.testing.assert_array_equal(idx, exp_idx)
    np.testing.assert_allclose(sim, exp_sim, atol=1e-5)


def test_merge_topk_hand_case_with_padding():
    idx_a = np.array([[3, -1]])
    sim_a = np.array([[0.5, -np.inf]], dtype=np.float32)
    idx_b = np.array([[10, 7]])
    sim_b = np.array([[0.9, 0.5]], dtype=np.float32)
    idx, sim = merge_topk(idx_a, sim_a, idx_b, sim_b, 3)
    np.testing.assert_array_equal(idx, [[10, 3, 7]])  # 0.5 tie: row 3 before row 7
    np.testing.assert_allclose(sim, [[0.9, 0.5, 0.5]])


def test_l2_normalise():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]])
    np.testing.assert_allclose(l2_normalise(x), [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]])
    assert l2_normalise(x).dtype == np.float32


def test_excluded_group_names_are_compared_whole():
    """A group name longer than the pool's names is no group of the pool ("bbx" is not "bb")."""
    from lm_router_plugin.router.neighbors import in_groups
    from lm_router_plugin.router.predictors import KNNPredictor

    groups = np.array(["a", "a", "bb", "bb", "c", "c"])
    assert not in_groups(groups, ["bbx"]).any()
    assert in_groups(groups, ["bb"]).tolist() == [False, False, True, True, False, False]
    assert in_groups(np.arange(4), [2]).tolist() == [False, False, True, False]
    rng = np.random.default_rng(3)
    X = l2_normalise(rng.normal(size=(6, 4)).astype(np.float32))
    Y = np.array([[1.0], [0.0], [1.0], [0.0], [1.0], [1.0]])
    knn = KNNPredictor(n_neighbors=2)
    np.testing.assert_array_equal(
        knn.predict_left_out(X, Y, groups, np.arange(6), exclude=["bbx"]),
        knn.predict_left_out(X, Y, groups, np.arange(6)))
    assert not np.array_equal(knn.predict_left_out(X, Y, groups, np.arange(6), exclude=["bb"]),
                              knn.predict_left_out(X, Y, groups, np.arange(6)))


def _pool_with_twins(n=3000, dim=384, seed=0):
    """Unit rows with identical twins scattered over the pool (the same question in two
    places); numpy's matrix product rounds some twin dot products differently."""
    rng = np.random.default_rng(seed)
    X = l2_normalise(rng.normal(size=(n, dim)).astype(np.float32))
    pairs = [(i, i + 1 + (i * 7919) % (n - i - 1)) for i in range(0, n // 2, 37)]
    for a, b in pairs:
        X[b] = X[a]
    return X, pairs


def test_identical_rows_finds_every_twin_and_its_lowest_row():
    X, pairs = _pool_with_twins()
    members, canon = neighbors.identical_rows(X)
    first, want = {}, {}
    for i, row in enumerate(X):  # brute force: the first row with the same bytes
        first.setdefault(row.tobytes(), []).append(i)
    for rows in first.values():
        want.update({i: rows[0] for i in rows} if len(rows) > 1 else {})
    assert len(want) >= len(pairs)
    assert dict(zip(members.tolist(), canon.tolist())) == want
    assert [len(a) for a in neighbors.identical_rows(X[:1])] == [0, 0]


def test_twins_tie_and_the_lower_row_is_kept_whatever_the_pool_layout():
    """Identical references get one similarity (the tie goes to the lower row), so a search
    over the pool without some of its rows keeps the same twin as the whole pool's: what a
    strict evaluation's lists must equal (a refit without the held-out task)."""
    X, pairs = _pool_with_twins()
    groups = np.arange(len(X)) // 100
    idx, sim = topk_cosine(X, X, 10, query_groups=groups, ref_groups=groups)
    members, canon = neighbors.identical_rows(X)
    root = np.arange(len(X))
    root[members] = canon
    for q in range(len(X)):
        r = root[idx[q]]
        for j in range(1, 10):  # twins adjacent, equal, lower row first
            if r[j] == r[j - 1]:
                assert sim[q, j] == sim[q, j - 1] and idx[q, j] > idx[q, j - 1]
    keep = groups != 3  # a pool without group 3: rows renumbered
    rows = np.flatnonzero(keep)
    i2, s2 = topk_cosine(X[keep], X[keep], 5, query_groups=groups[keep],
                         ref_groups=groups[keep])
    whole = neighbors.GroupedNeighbors(X, groups, 10)
    i3, s3 = whole.query(rows, [3])
    np.testing.assert_array_equal(rows[i2], i3[:, :5])
    np.testing.assert_allclose(s2, s3[:, :5], atol=1e-6)  # (other rows: the last bit)
