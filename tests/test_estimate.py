"""Task accuracy estimates with a few labels (estimate.py): hand cases, unbiasedness of the
weighted (planned) labels by simulation, and the sampling design."""

from __future__ import annotations

import numpy as np
import pytest

from lm_router_plugin.calibration import Calibration
from lm_router_plugin.estimate import (
    decide_with_estimate, estimate, inclusion_probabilities, label_evidence, plan,
    planning_scores, prior, systematic_sample,
)


def make_cal(acc, s1, residual=0.2):
    acc, s1 = np.asarray(acc, float), np.asarray(s1, float)
    D, M = acc.shape
    return Calibration(u=np.ones(D), p=np.full((D, M), 0.7), accuracy=acc,
                       included=np.ones(D, bool), mean_accuracy=acc.mean(0), s1=s1,
                       residual_cov=np.eye(M) * residual)


def test_prior_corrects_each_models_bias_on_the_reference_tasks():
    # model 0's S1 is always 0.1 too low, model 1's 0.05 too high
    acc = [[0.6, 0.5], [0.7, 0.4], [0.5, 0.6]]
    s1 = [[0.5, 0.55], [0.6, 0.45], [0.4, 0.65]]
    mu, cov = prior(make_cal(acc, s1), np.array([0.3, 0.8]))
    assert mu == pytest.approx([0.4, 0.75])
    assert np.all(np.diag(cov) < 1e-3)  # the corrections are exact here: little uncertainty


def test_prior_is_excluding_a_held_out_task():
    acc = np.array([[0.6, 0.5], [0.7, 0.4], [0.0, 1.0]])
    s1 = np.array([[0.5, 0.55], [0.6, 0.45], [0.9, 0.1]])
    cal = make_cal(acc, s1)
    cal.included[2] = False  # e.g. the held-out task in evaluation: must not count
    mu, _ = prior(cal, np.array([0.3, 0.8]))
    assert mu == pytest.approx([0.4, 0.75])


def test_label_evidence_equal_weights_is_the_mean_residual():
    g = np.array([[0.5, 0.5], [0.2, 0.9], [0.7, 0.1], [0.4, 0.4]])
    y = np.array([[1, 0], [0, 1], [1, np.nan], [0, 1]], float)
    mean, cov, n = label_evidence(g, y, np.ones(4), np.eye(2) * 0.2)
    assert n.tolist() == [4, 3]
    assert mean[0] == pytest.approx(np.mean(y[:, 0] - g[:, 0]))
    assert mean[1] == pytest.approx(np.mean([-0.5, 0.1, 0.6]))
    # variance of a mean: (shrunk per-item variance) / n
    r = y[:, 0] - g[:, 0]
    per_item = (4 * np.var(r, ddof=1) + 5 * 0.2) / (4 + 5)
    assert cov[0, 0] == pytest.approx(per_item / 4 + 1e-5, rel=1e-6)  # + a tiny ridge


def test_posterior_moves_from_prior_to_labels():
    rng = np.random.default_rng(0)
    cal = make_cal(rng.uniform(0.4, 0.8, (8, 2)), rng.uniform(0.4, 0.8, (8, 2)))
    g = np.full((500, 2), 0.5)
    allowed = np.ones(2, bool)
    zero = estimate(cal, g, allowed)
    assert zero.mean == pytest.approx(zero.prior_mean) and zero.n_labels.sum() == 0
    y = np.column_stack([np.ones(400), np.zeros(400)])  # model 0 always right, 1 never
    many = estimate(cal, g[:100], allowed, lab_g=g[:400], lab_y=y)
    assert many.mean[0] > 0.9 and many.mean[1] < 0.1
    assert many.p_better(0, 1) > 0.999
    assert np.all(np.diag(many.cov) < np.diag(zero.cov))


def test_p_best_and_expected_gain():
    rng = np.random.default_rng(1)
    cal = make_cal(rng.uniform(0.4, 0.8, (8, 3)), rng.uniform(0.4, 0.8, (8, 3)))
    g = rng.uniform(0.3, 0.8, (200, 3))
    est = estimate(cal, g, np.array([True, True, False]))
    p = est.p_best(np.random.default_rng(0))
    assert p.sum() == pytest.approx(1.0) and p[2] == 0
    gains = [est.expected_gain(n, np.random.default_rng(0)) for n in (5, 50, 500)]
    assert 0 <= gains[0] <= gains[1] <= gains[2] + 1e-9
    y = (rng.random((100, 3)) < g[:100]).astype(float)
    later = estimate(cal, g[100:], est.allowed, lab_g=g[:100], lab_y=y)
    assert later.expected_gain(50, np.random.default_rng(0)) < gains[1]


def test_decision_keeps_bma_unless_surely_better():
    acc = np.array([[0.7, 0.5], [0.7, 0.5], [0.7, 0.5]])  # model 0 is the BMA
    cal = make_cal(acc, acc)
    g = np.column_stack([np.full(50, 0.6), np.full(50, 0.62)])
    est = estimate(cal, g, np.ones(2, bool))
    choice, p, bma = decide_with_estimate(est, cal, eta=0.99)
    assert bma == 0 and choice == 0 and 0.5 < p < 0.99  # 1 leads, but not surely
    choice, _, _ = decide_with_estimate(est, cal, eta=0.5)
    assert choice == 1


def test_systematic_sample_has_the_stated_inclusion_probabilities():
    rng = np.random.default_rng(2)
    pi = inclusion_probabilities(rng.uniform(0, 1, 30), 8)
    assert pi.sum() == pytest.approx(8) and pi.max() <= 1
    counts = np.zeros(30)
    for _ in range(4000):
        chosen = systematic_sample(pi, rng)
        assert len(chosen) == 8
        counts[chosen] += 1
    assert counts / 4000 == pytest.approx(pi, abs=0.03)


def test_planned_labels_give_an_unbiased_estimate():
    """Labels drawn by plan() (unequal probabilities) and weighted by 1/pi estimate the
    task's mean residual without bias; unweighted they would be biased."""
    rng = np.random.default_rng(3)
    n_items = 60
    g = np.column_stack([rng.uniform(0.05, 0.95, n_items), rng.uniform(0.05, 0.95, n_items)])
    y = (rng.random((n_items, 2)) < np.clip(g + 0.15 * (g > 0.5), 0, 1)).astype(float)
    truth = np.mean(y - g, axis=0)
    cal = make_cal(np.full((4, 2), 0.6), np.full((4, 2), 0.6))
    est0 = estimate(cal, g, np.ones(2, bool))
    weighted, plain = [], []
    for _ in range(3000):
        chosen, pi = plan(g, est0, 12, rng)
        mean, _, _ = label_evidence(g[chosen], y[chosen], 1 / pi[chosen], cal.residual_cov)
        weighted.append(mean)
        plain.append(np.mean(y[chosen] - g[chosen], axis=0))
    assert np.mean(weighted, axis=0) == pytest.approx(truth, abs=0.01)
    scores = planning_scores(g, np.array([0, 1]))
    assert scores.argmax() == np.argmax(np.mean(g * (1 - g), axis=1))


def test_plan_never_picks_excluded_items():
    rng = np.random.default_rng(4)
    g = rng.uniform(0, 1, (20, 2))
    cal = make_cal(np.full((3, 2), 0.5), np.full((3, 2), 0.5))
    exclude = np.zeros(20, bool)
    exclude[:15] = True
    chosen, pi = plan(g, estimate(cal, g, np.ones(2, bool)), 10, rng, exclude=exclude)
    assert len(chosen) == 5 and set(chosen) == set(range(15, 20)) and pi[:15].sum() == 0


def test_p_best_and_gain_draw_over_the_leaders_only():
    """With more candidates than MC_LEADERS, only the leaders by posterior mean are drawn:
    P(best) sums to 1 over them and is 0 for the rest; the gain stays finite and >= 0."""
    from lm_router_plugin.estimate import MC_LEADERS

    M = MC_LEADERS + 36
    rng = np.random.default_rng(0)
    acc = rng.uniform(0.3, 0.7, size=(6, M))
    s1 = acc + rng.normal(0, 0.02, size=acc.shape)
    g = np.tile(np.linspace(0.2, 0.8, M), (30, 1))  # model M-1 leads, model 0 trails
    est = estimate(make_cal(acc, s1), g, np.ones(M, bool))
    leaders = est.leaders()
    assert len(leaders) == MC_LEADERS and M - 1 in leaders
    p = est.p_best(np.random.default_rng(1), n_draws=500)
    assert p.sum() == pytest.approx(1.0) and np.all(np.delete(p, leaders) == 0)
    assert est.expected_gain(10, np.random.default_rng(2), n_draws=200) >= 0
