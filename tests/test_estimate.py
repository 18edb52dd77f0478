"""Task accuracy estimates with a few labels (estimate.py): hand cases, unbiasedness of the
weighted (planned) labels by simulation, and the sampling design."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from lm_router_plugin.router.calibration import Calibration
from lm_router_plugin.router.estimate import (
    estimate,
    label_evidence,
    nearest_psd,
    prior,
    shrunk_covariance,
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


def test_label_evidence_is_the_mean_residual():
    g = np.array([[0.5, 0.5], [0.2, 0.9], [0.7, 0.1], [0.4, 0.4]])
    y = np.array([[1, 0], [0, 1], [1, np.nan], [0, 1]], float)
    mean, cov, n = label_evidence(g, y, np.eye(2) * 0.2)
    assert n.tolist() == [4, 3]
    assert mean[0] == pytest.approx(np.mean(y[:, 0] - g[:, 0]))
    assert mean[1] == pytest.approx(np.mean([-0.5, 0.1, 0.6]))
    # variance of a mean: the reference per-item variance / n (+ a tiny ridge)
    assert cov[0, 0] == pytest.approx(0.2 / 4 + 1e-5, rel=1e-6)
    assert cov[1, 1] == pytest.approx(0.2 / 3 + 1e-5, rel=1e-6)


def test_a_few_labels_do_not_set_their_own_precision():
    """10 labels all right: their sample variance is 0, but their weight comes from the
    reference per-item noise (else a lucky streak would get infinite weight)."""
    g = np.full((10, 2), 0.6)
    y = np.column_stack([np.ones(10), np.tile([0.0, 1.0], 5)])
    _, cov, _ = label_evidence(g, y, np.array([[0.2, 0.05], [0.05, 0.25]]))
    assert cov[0, 0] == pytest.approx(0.02 + 1e-5)
    assert cov[0, 1] == pytest.approx(0.005)


def _schafer_strimmer_by_hand(E):
    """The Schafer-Strimmer (2005) shrinkage intensity toward a diagonal target, written
    from the paper's formulas with loops (complete data)."""
    Z, M = E.shape
    x = (E - E.mean(0)) / E.std(0, ddof=1)
    num = den = 0.0
    for i in range(M):
        for j in range(M):
            if i == j:
                continue
            w = x[:, i] * x[:, j]
            r = w.sum() / (Z - 1)
            num += Z / (Z - 1) ** 3 * np.sum((w - w.mean()) ** 2)
            den += r**2
    return min(1.0, max(0.0, num / den))


def test_shrunk_covariance_matches_the_paper_and_keeps_the_variances():
    from lm_router_plugin.router.estimate import shrunk_covariance

    rng = np.random.default_rng(4)
    common = rng.normal(0, 0.1, (12, 1))  # a task-level effect shared by all models
    E = common + rng.normal(0, 0.03, (12, 5))
    cov, lam = shrunk_covariance(E)
    assert lam == pytest.approx(_schafer_strimmer_by_hand(E))
    sample = np.cov(E, rowvar=False)
    assert np.diag(cov) == pytest.approx(np.diag(sample))
    assert cov[0, 1] == pytest.approx((1 - lam) * sample[0, 1])
    # strongly correlated errors: little shrinkage, so the difference of two models stays
    # near what the data say (the fixed 50% shrinkage toward the diagonal used before
    # inflated its variance 7x here)
    assert lam < 0.25
    diff = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    half = 0.5 * sample + 0.5 * np.diag(np.diag(sample))
    assert diff < 0.5 * (half[0, 0] + half[1, 1] - 2 * half[0, 1])
    # independent errors: the correlations are noise, shrunk (almost) away
    _, lam_noise = shrunk_covariance(rng.normal(0, 0.1, (200, 5)))
    assert lam_noise > 0.5
    # missing entries: pairwise-complete, still a valid covariance
    E[rng.random(E.shape) < 0.2] = np.nan
    cov, lam = shrunk_covariance(E)
    assert 0 <= lam <= 1 and np.all(np.linalg.eigvalsh(cov + 1e-4 * np.eye(5)) > 0)


def test_intervals_are_predictive_for_the_items_scored():
    """The interval is for the accuracy on the n items the estimate is for: their own
    sampling noise (residual_cov / n) widens it, most on a small task."""
    rng = np.random.default_rng(2)
    cal = make_cal(rng.uniform(0.4, 0.8, (8, 2)), rng.uniform(0.4, 0.8, (8, 2)))
    small = estimate(cal, np.full((5, 2), 0.6), np.ones(2, bool))
    large = estimate(cal, np.full((5000, 2), 0.6), np.ones(2, bool))
    assert small.cov == pytest.approx(large.cov)  # the expected accuracy: same uncertainty
    sd = np.sqrt(np.diag(small.cov) + (0.2 + 1e-4) / 5)  # reference noise + its floor
    assert small.interval(0.9)[0] == pytest.approx(
        np.clip([small.mean[0] - 1.6449 * sd[0], small.mean[0] + 1.6449 * sd[0]], 0, 1))
    width = lambda e: np.diff(e.interval(0.9), axis=1)  # noqa: E731
    assert np.all(width(small) > width(large))


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


def test_p_best_and_gain_draw_over_the_leaders_only():
    """With more candidates than MC_LEADERS, only the leaders by posterior mean are drawn:
    P(best) sums to 1 over them and is 0 for the rest; the gain stays finite and >= 0."""
    from lm_router_plugin.router.estimate import MC_LEADERS

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


def test_prior_variance_is_the_predictive_variance_of_a_new_task():
    """The bias is a mean over D reference tasks, so a new task's error has variance
    s^2 (1 + 1/D), not s^2: simulated over many draws of D = 5 reference tasks, the mean
    prior variance matches the mean squared error of the bias-corrected prediction on a
    new task (without the 1/D term it falls 17% short)."""
    rng = np.random.default_rng(0)
    D, s, sims = 5, 0.05, 4000
    stated, realised = [], []
    for _ in range(sims):
        errors = rng.normal(0.02, s, (D + 1, 2))  # task x model; the last task is new
        s1 = np.full((D, 2), 0.5)
        mu, cov = prior(make_cal(s1[:D] + errors[:D], s1), np.array([0.5, 0.5]))
        stated.append(cov[0, 0] - 1e-4)  # without the variance floor
        realised.append((0.5 + errors[D, 0] - mu[0]) ** 2)
    assert np.mean(stated) == pytest.approx(s**2 * (1 + 1 / D), rel=0.05)
    assert np.mean(realised) == pytest.approx(np.mean(stated), rel=0.06)


def test_prior_bias_uncertainty_counts_the_tasks_each_model_has():
    """With missing results the bias term is pairwise: Sigma_ij n_ij / (n_i n_j)."""
    acc = np.array([[0.6, 0.5], [0.7, np.nan], [0.5, 0.6], [0.65, 0.45]])
    s1 = np.full((4, 2), 0.55)
    cal = make_cal(acc, s1)
    _, cov = prior(cal, np.array([0.5, 0.5]))
    errors = acc - s1
    raw, _ = shrunk_covariance(errors - np.nanmean(errors, 0))
    n_i, n_j, n_ij = 4, 3, 3
    assert cov[0, 0] == pytest.approx(raw[0, 0] * (1 + 1 / n_i) + 1e-4)
    assert cov[1, 1] == pytest.approx(raw[1, 1] * (1 + 1 / n_j) + 1e-4)
    assert cov[0, 1] == pytest.approx(raw[0, 1] * (1 + n_ij / (n_i * n_j)))


def test_prior_and_posterior_stay_positive_semidefinite_with_models_missing_on_tasks():
    """Pairwise covariances over the tasks each pair shares: models 0 and 1 agree where both
    ran, 0 and 2 agree, 1 and 2 disagree (impossible together): no negative eigenvalue
    reaches P(best) or the intervals."""
    nan = np.nan
    e = np.array([[1, 1, nan], [-1, -1, nan], [1, nan, 1], [-1, nan, -1],
                  [nan, 1, -1], [nan, -1, 1]]) * 0.1
    acc = 0.5 + e
    s1 = np.where(np.isnan(e), nan, 0.5)
    cal = make_cal(acc, s1)
    cal.residual_cov = np.array([[1, 1, 1], [1, 1, -1], [1, -1, 1]]) * 0.2  # pairwise too
    assert np.linalg.eigvalsh(cal.residual_cov).min() < 0
    _, cov = prior(cal, np.full(3, 0.5))
    assert np.linalg.eigvalsh(cov).min() > 0
    est = estimate(cal, np.full((20, 3), 0.5), np.ones(3, bool),
                   lab_g=np.full((5, 3), 0.5), lab_y=np.ones((5, 3)))
    assert np.linalg.eigvalsh(est.predictive_cov()).min() > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns when it draws from a non-PSD matrix
        assert est.p_best(np.random.default_rng(0), 500).sum() == pytest.approx(1.0)
    a = np.array([[1.0, 0.9], [0.9, -0.2]])
    np.testing.assert_allclose(nearest_psd(np.diag([1.0, 2.0])), np.diag([1.0, 2.0]))
    assert np.linalg.eigvalsh(nearest_psd(a)).min() >= -1e-12
