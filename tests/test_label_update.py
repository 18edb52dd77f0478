"""The label update's building blocks (router/label_update.py) against direct computations,
and the stacked switch's label model against a leak: nothing of the task being decided."""

from __future__ import annotations

import numpy as np
import pytest

from lm_router_plugin.router.label_update import (
    error_moments,
    fill_unknown,
    item_covariances,
    relative,
)
from lm_router_plugin.router.stacking import fit_switch

from test_stacking import SIGMA, reference


def test_relative_gives_the_moments_of_differences_to_one_model():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 5)) @ rng.normal(size=(5, 5))
    P = x.T @ x / len(x)
    for b in range(5):
        d = x - x[:, [b]]
        np.testing.assert_allclose(relative(P, b), d.T @ d / len(x), atol=1e-10)
    both = relative(np.stack([P, 2 * P]), np.array([1, 3]))
    np.testing.assert_allclose(both[1], 2 * relative(P, 3))


def test_item_covariances_use_the_items_labelled_for_both():
    rng = np.random.default_rng(1)
    Y = (rng.random((40, 3)) < 0.6).astype(float)
    Y[:5, 2] = np.nan  # model 2 missing on five items
    cov = item_covariances(Y, [np.arange(20), np.arange(20, 40)], np.array([0, 1]))
    for m in range(3):
        for n in range(3):
            y = Y[:20][:, [m, n]]
            y = y[~np.isnan(y).any(1)]
            expected = np.mean(y[:, 0] * y[:, 1]) - y[:, 0].mean() * y[:, 1].mean()
            assert abs(cov[0, m, n] - expected) < 1e-12
    assert np.isnan(item_covariances(Y[:1], [np.arange(1)], np.array([0]))).all()  # one item
    filled = fill_unknown(np.full((2, 2), np.nan))
    np.testing.assert_array_equal(filled, [[1.0, 0.0], [0.0, 1.0]])


def test_error_moments_are_row_centred_sums_per_group():
    E = np.array([[[0.1, 0.3, np.nan], [0.0, 0.2, 0.4]]])  # one group, two draws
    sums, counts = error_moments(E)
    r0 = np.array([-0.1, 0.1, 0.0])  # centred over its two valid entries, nan -> 0
    r1 = np.array([-0.2, 0.0, 0.2])
    np.testing.assert_allclose(sums[0], np.outer(r0, r0) + np.outer(r1, r1), atol=1e-12)
    np.testing.assert_array_equal(counts[0].diagonal(), [2, 2, 1])


def test_the_label_model_reads_nothing_of_a_task_left_out():
    """The switch fitted without task 3 (not included) is the same whatever task 3's
    correctness: its label covariances come from the included tasks only."""
    cal, Y, rows_of = reference(s1_informative=False, n=80)
    cal.included[3] = False
    allowed = np.ones(4, dtype=bool)
    a = fit_switch(cal, allowed, sigma=SIGMA, n_labels=10, Y=Y, rows_of=rows_of)
    Y2 = Y.copy()
    Y2[rows_of[3]] = 1 - Y2[rows_of[3]]
    b = fit_switch(cal, allowed, sigma=SIGMA, n_labels=10, Y=Y2, rows_of=rows_of)
    assert a.prior_cov is not None
    np.testing.assert_array_equal(a.prior_cov, b.prior_cov)
    np.testing.assert_array_equal(a.label_cov, b.label_cov)
    assert a.tau == b.tau and a.pooling == b.pooling


def test_with_many_candidates_labels_update_the_best_on_average(monkeypatch, caplog):
    """Beyond MAX_LABEL_MODELS candidates the covariances cover the best ones on average
    (and BMA); the others keep their zero-label predictions, and the log says so."""
    from lm_router_plugin.router import stacking

    cal, Y, rows_of = reference(s1_informative=False, n=80)
    allowed = np.ones(4, dtype=bool)
    monkeypatch.setattr(stacking, "MAX_LABEL_MODELS", 2)
    with caplog.at_level("INFO", logger="lm_router_plugin.router.stacking"):
        switch = fit_switch(cal, allowed, sigma=SIGMA, n_labels=30, Y=Y, rows_of=rows_of)
    assert "labels update the 2 candidates best on average of 4" in caplog.text
    kept = switch.label_models
    assert switch.prior_cov.shape == (len(kept), len(kept)) and 0 in kept and 3 not in kept
    features = np.array([[0.0, 0, 0, 0.0], [0.0, 0.0, 0, 0.2], [0.0, 0, 0, 0.2],
                         [0.0, 0, 0, 0.3]])
    gain = switch.predict(features, allowed, n_rest=50)
    zero_label = features[:, :3] @ switch.beta
    assert gain[3] == zero_label[3]  # outside the update: its labels are not read
    assert gain[kept[kept != 0]].max() > zero_label[kept[kept != 0]].max()


def test_duplicate_models_do_not_break_the_update():
    """Two models with identical results on every item (singular covariances) get finite,
    equal updated gains."""
    cal, Y, rows_of = reference(s1_informative=False, n=80)
    Y = np.column_stack([Y, Y[:, 1]])  # model 4 = model 1
    cal.accuracy = np.column_stack([cal.accuracy, cal.accuracy[:, 1]])
    cal.mean_accuracy = cal.accuracy.mean(0)
    cal.s1 = np.column_stack([cal.s1, cal.s1[:, 1]])
    cal.s2 = np.column_stack([cal.s2, cal.s2[:, 1]])
    cal.p = np.column_stack([cal.p, cal.p[:, 1]])
    allowed = np.ones(5, dtype=bool)
    switch = fit_switch(cal, allowed, sigma=SIGMA, n_labels=30, Y=Y, rows_of=rows_of)
    assert switch.prior_cov is not None
    features = np.array([[0.0, 0, 0, 0.0], [0.0, 0, 0, 0.2], [0.0, 0, 0, 0.0],
                         [0.0, 0, 0, -0.1], [0.0, 0, 0, 0.2]])
    gain = switch.predict(features, allowed, n_rest=50)
    assert np.all(np.isfinite(gain)) and gain[1] == pytest.approx(gain[4], abs=1e-6)
    assert gain[1] > gain[2]


def test_a_model_missing_on_some_tasks_and_items_is_handled():
    """A model without results on two reference tasks and on some items of the others: the
    fit and the update stay finite; its missing labels leave it to its covariances."""
    cal, Y, rows_of = reference(s1_informative=False, n=80)
    Y = Y.copy()
    for z in (0, 1):
        Y[rows_of[z], 2] = np.nan
        cal.accuracy[z, 2] = np.nan
        cal.s1[z, 2] = np.nan
    Y[rows_of[5][:30], 2] = np.nan
    allowed = np.ones(4, dtype=bool)
    switch = fit_switch(cal, allowed, sigma=SIGMA, n_labels=30, Y=Y, rows_of=rows_of)
    assert switch.prior_cov is not None and np.all(np.isfinite(switch.prior_cov))
    assert np.all(np.isfinite(switch.label_cov))
    features = np.array([[0.0, 0, 0, 0.0], [0.0, 0, 0, 0.1], [0.0, 0, 0, np.nan],
                         [0.0, 0, 0, -0.1]])
    gain = switch.predict(features, allowed, n_rest=50)
    assert np.all(np.isfinite(gain))
