"""The task-level kernel S1 (router/task_level.TaskKernel): its leave-out table equals explicit
fits without each pair of tasks and the bandwidth choice never reads the held-out task; and
the kernel S1 decider of the bench (bench/kernel_s1.py, an experiment outside the package)
decides from a view carrying the reference pool (else by the paper's S1)."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from lm_router_plugin.registry import deciders
from lm_router_plugin.router.calibration import calibrate
from lm_router_plugin.router.deciders import DecisionSettings, TaskView
from lm_router_plugin.router.scores import quiet_nanmean
from lm_router_plugin.router.task_level import kernel_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from kernel_s1 import (  # noqa: E402
    KernelReference,
    KernelS1,
    choose_bandwidth,
    choose_switch,
    inner_loto_accuracy,
    kernel_accuracy,
    leave_out_kernel,
    switch_choice,
)

HS = (0.02, 0.1, math.inf)


def _data(seed=0, n_tasks=6, per_task=40, M=4, dim=16, missing=0.0):
    """Tasks as clusters in embedding space; each model's accuracy depends on the task."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_tasks, dim))
    task_of = np.repeat(np.arange(n_tasks), per_task)
    X = centers[task_of] + 0.8 * rng.normal(size=(len(task_of), dim))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    skill = rng.uniform(0.2, 0.9, size=(n_tasks, M))
    Y = (rng.uniform(size=(len(task_of), M)) < skill[task_of]).astype(float)
    if missing:
        Y[rng.uniform(size=Y.shape) < missing] = np.nan
    return X.astype(np.float32), Y, task_of


def _brute(X, Y, task_of, z, e, k, hs):
    """Task z's kernel S1 from an explicit pool without z and e (None: only z)."""
    out = set([z] if e is None else [z, e])
    ref = ~np.isin(task_of, list(out))
    return kernel_accuracy(X[task_of == z], X, Y, k=k, h=hs, ref_rows=ref)


@pytest.mark.parametrize("missing, slack", [(0.0, 200), (0.1, 3), (0.1, 0)])
@pytest.mark.parametrize("keep_floats, patterns", [(2**24, 32), (0, 32), (0, 2)],
                         ids=["rows_kept", "sums_per_task", "both"])
def test_leave_out_table_equals_explicit_fits(missing, slack, keep_floats, patterns,
                                              monkeypatch):
    """Every model's per-row sums kept (small pools), the sums per label pattern (large
    pools), or both (the two commonest patterns summed per task, the rarer ones per row):
    all equal the explicit fits."""
    from lm_router_plugin.router import task_level

    monkeypatch.setattr(task_level, "KEEP_FLOATS", keep_floats)
    monkeypatch.setattr(task_level, "MAX_PATTERNS", patterns)
    X, Y, task_of = _data(missing=missing)
    k = 15
    table = leave_out_kernel(X, Y, task_of, k=k, bandwidths=HS, slack=slack)
    D = 6
    assert table.s1k.shape == (len(HS), D, D + 1, Y.shape[1])
    for z in range(D):
        for e in [None] + [e for e in range(D) if e != z]:
            want = _brute(X, Y, task_of, z, e, k, HS)
            got = table.s1k[:, z, D if e is None else e]
            np.testing.assert_allclose(got, want, atol=1e-6, err_msg=f"z={z} e={e}")
        assert np.isnan(table.s1k[:, z, z]).all()
    np.testing.assert_allclose(table.accuracy[0], quiet_nanmean(Y[task_of == 0]))


def test_task_kernel_without_rows_and_in_small_blocks(monkeypatch):
    """The fit's TaskKernel (keep_rows=False, slack 0) gives the same table as the
    evaluation's; so do gathering blocks of a few rows (many models); rows_s1 is a task's
    value from the other tasks; leaving a second task out needs the rows."""
    from lm_router_plugin.router import task_level

    X, Y, task_of = _data(missing=0.1)
    full = task_level.TaskKernel(X, Y, task_of, k=15, bandwidths=HS)
    lean = task_level.TaskKernel(X, Y, task_of, k=15, bandwidths=HS, slack=0,
                                 keep_rows=False)
    np.testing.assert_allclose(lean.task_s1(), full.task_s1(), rtol=1e-12)
    np.testing.assert_allclose(full.rows_s1(np.flatnonzero(task_of == 2)),
                               full.task_s1()[:, 2], rtol=1e-12)
    monkeypatch.setattr(task_level, "GATHER_FLOATS", 3 * 15 * Y.shape[1])  # 3 rows a block
    monkeypatch.setattr(task_level, "ROW_BLOCK", 7)  # the kept per-row sums in 7-row blocks
    small = task_level.TaskKernel(X, Y, task_of, k=15, bandwidths=HS)
    for e in range(6):
        np.testing.assert_allclose(small.task_s1(e), full.task_s1(e), rtol=1e-12)
    with pytest.raises(ValueError, match="keep_rows"):
        lean.task_s1(0)


def test_uniform_kernel_with_k_neighbours_is_the_plain_mean():
    X, Y, task_of = _data()
    Q = X[task_of == 0]
    ref = task_of != 0
    Xr, Yr = X[ref], Y[ref]
    order = np.argsort(-(Q @ Xr.T), axis=1)[:, :5]
    np.testing.assert_allclose(kernel_accuracy(Q, Xr, Yr, k=5, h=math.inf),
                               Yr[order].mean(axis=1).mean(axis=0))
    # a very narrow kernel is the nearest neighbour's label
    np.testing.assert_allclose(kernel_accuracy(Q, Xr, Yr, k=5, h=1e-6),
                               Yr[order[:, 0]].mean(axis=0), atol=1e-6)
    w = kernel_weights(np.array([[0.9, 0.8, -np.inf]]), 0.1)
    np.testing.assert_allclose(w, [[1.0, math.exp(-1.0), 0.0]])


def test_the_bandwidth_choice_never_reads_the_held_out_task():
    X, Y, task_of = _data(seed=3, n_tasks=7)
    allowed = np.ones(Y.shape[1], dtype=bool)
    d = 2
    table = leave_out_kernel(X, Y, task_of, k=20, bandwidths=HS)
    h, scores = choose_bandwidth(table, allowed, held_out=d)
    # change the held-out task's labels and embeddings: the inner choice is the same
    X2, Y2 = X.copy(), Y.copy()
    rows = task_of == d
    Y2[rows] = 1 - Y2[rows]
    X2[rows] = X2[rows][::-1]
    table2 = leave_out_kernel(X2, Y2, task_of, k=20, bandwidths=HS)
    h2, scores2 = choose_bandwidth(table2, allowed, held_out=d)
    assert h == h2
    np.testing.assert_allclose(scores, scores2)
    # the inner score of a bandwidth by hand: each other task from the rest without d
    A = table.accuracy
    j = HS.index(h)
    accs = []
    for z in range(7):
        if z == d:
            continue
        s = _brute(X, Y, task_of, z, d, 20, [h])[0]
        tie = quiet_nanmean(A[[y for y in range(7) if y not in (z, d)]])
        best = max(range(Y.shape[1]), key=lambda m: (s[m], tie[m]))
        accs.append(A[z, best])
    assert scores[j] == pytest.approx(np.mean(accs))
    assert inner_loto_accuracy(table, allowed, None).shape == (len(HS),)


def _view(X, Y, task_of, d, *, reference=True):
    D = int(task_of.max()) + 1
    rows = np.flatnonzero(task_of == d)
    g = np.full(Y.shape, 0.5)
    cal = calibrate(task_of, Y, g, np.full((len(X), 3), 0.5, np.float32), 0.5, D, held_out=d)
    view = TaskView(cal=cal, models=[f"m{i}" for i in range(Y.shape[1])],
                    allowed=np.ones(Y.shape[1], dtype=bool), g=g[rows],
                    kappa_sim=np.full((len(rows), 3), 0.5, np.float32),
                    settings=DecisionSettings(n_draws=50))
    if reference:
        view.reference = KernelReference(X, Y, task_of, exclude=(d,))
        view.embeddings = X[rows]
    return view


def test_the_decider_chooses_the_argmax_of_the_kernel_s1(monkeypatch):
    X, Y, task_of = _data(seed=5, n_tasks=6)
    d = 1
    monkeypatch.setattr(KernelS1, "margins", None)  # no switch: the plain argmax
    view = _view(X, Y, task_of, d)
    dec = KernelS1().decide(view)
    assert dec.decided_by == "s1_kernel" and not dec.fallback
    table = leave_out_kernel(X, Y, task_of, k=KernelS1.k, bandwidths=KernelS1.bandwidths)
    h, _ = choose_bandwidth(table, view.allowed, held_out=d)
    assert dec.details["h"] == h
    want = table.s1k[list(table.bandwidths).index(h), d, 6]
    np.testing.assert_allclose(dec.scores, want, atol=1e-6)
    assert dec.choice == int(np.argmax(want)) and dec.reason
    # the cache is shared by views of other held-out tasks
    other = _view(X, Y, task_of, 3)
    other.reference = dataclasses.replace(view.reference, exclude=(3,))
    assert KernelS1().decide(other).decided_by == "s1_kernel"
    assert len(view.reference.cache) == 1


@pytest.mark.parametrize("d", [0, 2, 4])
def test_the_default_decider_switches_to_bma_below_the_inner_margin(d):
    X, Y, task_of = _data(seed=7, n_tasks=6)
    view = _view(X, Y, task_of, d)
    dec = KernelS1().decide(view)
    table = leave_out_kernel(X, Y, task_of, k=KernelS1.k, bandwidths=KernelS1.bandwidths)
    h, tau, inner = choose_switch(table, view.allowed, held_out=d)
    assert (dec.details["h"], dec.details["tau"]) == (h, tau)
    s = table.s1k[list(table.bandwidths).index(h), d, 6]
    choice, best, bma = switch_choice(s, view.allowed, view.cal.mean_accuracy, tau)
    assert (dec.choice, dec.best_by_score, dec.bma) == (choice, best, bma)
    assert dec.fallback == (choice != best) and dec.reason
    # the margin rule by hand
    assert switch_choice(np.array([0.5, 0.6]), np.ones(2, bool), np.array([0.7, 0.1]),
                         0.05)[0] == 1
    assert switch_choice(np.array([0.5, 0.6]), np.ones(2, bool), np.array([0.7, 0.1]),
                         0.2)[0] == 0


def test_without_a_reference_pool_the_paper_s1_decides():
    X, Y, task_of = _data()
    view = _view(X, Y, task_of, 0, reference=False)
    dec = KernelS1().decide(view)
    assert dec.decided_by == "s1" and "paper's S1" in dec.reason


def test_s1_kernel_is_not_registered():
    """Not a decider users get: measured not above the stacked switch beyond noise
    (bench/task_kernel_results.py); registering it needs TaskView.reference (issue 19)."""
    assert "s1_kernel" not in deciders.names()


def test_inner_choice_accuracy_equals_a_per_task_loop():
    """The vectorised inner leave-one-task-out choice equals choosing task by task with
    argmax_with_ties (ties: higher mean accuracy over the other tasks, to 12 decimals, then
    the lower index), on small tables full of ties, missing results and excluded models."""
    from lm_router_plugin.router.scores import argmax_with_ties
    from lm_router_plugin.router.task_level import inner_choice_accuracy

    rng = np.random.default_rng(1)
    for _ in range(300):
        D, M = int(rng.integers(1, 9)), int(rng.integers(1, 7))
        A = np.round(rng.random((D, M)), 1)
        A[rng.random((D, M)) < 0.2] = np.nan
        S = np.round(rng.random((3, D, M)), 1)
        S[rng.random(S.shape) < 0.1] = np.nan
        allowed = rng.random(M) < 0.8
        refs = [int(z) for z in rng.choice(D, int(rng.integers(0, D + 1)), replace=False)]
        kept = [z for z in refs if not np.isnan(A[z]).all()]
        want = []
        for j in range(3):
            accs = []
            for z in kept:
                others = [y for y in kept if y != z]
                tie = (np.nan_to_num(quiet_nanmean(A[others])).round(12) if others
                       else np.zeros(M))
                ok = allowed & ~np.isnan(A[z])
                if ok.any():
                    pick = argmax_with_ties(np.where(ok, np.nan_to_num(S[j, z], nan=-np.inf),
                                                     -np.inf), tie)
                    if not np.isnan(A[z, pick]):
                        accs.append(A[z, pick])
            want.append(np.mean(accs) if accs else np.nan)
        np.testing.assert_allclose(inner_choice_accuracy(S, A, allowed, refs), want,
                                   atol=1e-12)


def test_more_tasks_than_neighbours_take_the_per_row_path_with_the_same_values(monkeypatch):
    """With more tasks than neighbours per row, the sums per task would cost more than the
    rows' own estimates: the per-row path is taken, and the values are the brute force's.
    Where every model's per-row estimates fit KEEP_FLOATS they are kept (the path too)."""
    from lm_router_plugin.router import task_level

    X, Y, task_of = _data(n_tasks=12, per_task=10)
    kept = task_level.TaskKernel(X, Y, task_of, k=60, bandwidths=HS)
    assert kept.groups == [] and len(kept.rest) == Y.shape[1]
    monkeypatch.setattr(task_level, "KEEP_FLOATS", 0)  # a large pool
    kernel = task_level.TaskKernel(X, Y, task_of, k=5, bandwidths=HS)
    assert kernel.groups == [] and len(kernel.rest) == Y.shape[1]
    wide = task_level.TaskKernel(X, Y, task_of, k=60, bandwidths=HS)
    assert len(wide.groups) == 1  # (12 tasks x 5 < 60 x 4: the sums per task)
    for z in (0, 7):  # (float32 similarities: 1e-6)
        np.testing.assert_allclose(kernel.task_s1()[:, z], _brute(X, Y, task_of, z, None, 5, HS),
                                   atol=1e-6)
        np.testing.assert_allclose(kernel.task_s1(3)[:, z], _brute(X, Y, task_of, z, 3, 5, HS),
                                   atol=1e-6)


def test_leaving_out_a_row_s_dominant_neighbour_recomputes_it_exactly():
    """task_s1(e) updates each changed row's kept sums by e's entries; where e held nearly
    all of a row's kernel weight (one neighbour far closer than the rest, a narrow kernel),
    the difference would be rounding noise, so the row is summed again: the value is the
    explicit fit's."""
    from lm_router_plugin.router.task_level import TaskKernel

    X, Y, task_of = _data(dim=16)
    rng = np.random.default_rng(1)
    # the other tasks a little towards axis 0, task 0 away from it ...
    X[:, 0] = np.where(task_of == 0, -1.0, rng.uniform(0.1, 0.3, len(X)))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    twin = np.flatnonzero(task_of == 0)[0]
    for row in np.flatnonzero(task_of == 1)[:5]:  # ... but these and task 0's first row on it
        X[row] = 0.0
        X[row, 0] = 1.0
    X[twin] = 0.0
    X[twin, 0] = 1.0
    hs = (0.01, math.inf)
    kernel = TaskKernel(X, Y, task_of, k=15, bandwidths=hs, slack=15)
    np.testing.assert_allclose(kernel.task_s1(0)[:, 1], _brute(X, Y, task_of, 1, 0, 15, hs),
                               atol=1e-6)
