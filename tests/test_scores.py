"""Task-level scores (METHOD.md §3.2): hand-computed toy cases and closed-form checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from lm_router_plugin.router.scores import (
    argmax_with_ties,
    kernel_smoothed_p,
    mean_neighbour_distance,
    prob_beats,
    s1,
    s2,
    s3,
    task_distance,
    thresholded_accuracy,
)

NAN = np.nan


# -- S1, S2, S3 -------------------------------------------------------------------------
def test_s1_is_mean_of_g_per_model():
    g = np.array([[0.8, 0.2, 0.0],
                  [0.6, 0.4, 1.0],
                  [0.1, 0.3, 0.5]])
    # (0.8 + 0.6 + 0.1) / 3 = 0.5, (0.2 + 0.4 + 0.3) / 3 = 0.3, (0 + 1 + 0.5) / 3 = 0.5
    np.testing.assert_allclose(s1(g), [0.5, 0.3, 0.5])


def test_s2_uses_strict_greater_than_half():
    g = np.array([[0.5, 0.6, 0.50001],
                  [0.4, 1.0, 0.5],
                  [0.9, 0.2, 0.5],
                  [0.5, 0.51, 0.0]])
    # model 0: only 0.9 > 0.5 -> 1/4; model 1: 0.6, 1.0, 0.51 -> 3/4; model 2: 0.50001 -> 1/4
    np.testing.assert_allclose(s2(g), [0.25, 0.75, 0.25])
    # another threshold
    np.testing.assert_allclose(s2(g, t=0.45), [0.75, 0.75, 0.75])


def test_s3_combines_s2_and_p():
    s2_scores = np.array([0.75, 0.2, 1.0, 0.0])
    p = np.array([0.8, 0.4, 0.3, 0.3])
    # 0.75*0.8 + 0.25*0.2 = 0.65;  0.2*0.4 + 0.8*0.6 = 0.56;  1*0.3 = 0.3;  1*(1-0.3) = 0.7
    np.testing.assert_allclose(s3(s2_scores, p), [0.65, 0.56, 0.3, 0.7])


# -- u: neighbour distances ---------------------------------------------------------------
def test_mean_neighbour_distance_ignores_missing_neighbours():
    sims = np.array([[0.9, 0.8, 0.7],
                     [1.0, 0.5, -np.inf],
                     [-np.inf, -np.inf, -np.inf]])
    # (0.1 + 0.2 + 0.3) / 3 = 0.2;  (0 + 0.5) / 2 = 0.25;  no neighbour -> 0
    np.testing.assert_allclose(mean_neighbour_distance(sims), [0.2, 0.25, 0.0])


def test_task_distance_is_mean_over_inputs():
    sims = np.array([[0.9, 0.8, 0.7],
                     [1.0, 0.5, -np.inf],
                     [0.0, -0.2, -0.4]])
    # per input: 0.2, 0.25, (1 + 1.2 + 1.4) / 3 = 1.2  ->  mean 1.65 / 3 = 0.55
    assert task_distance(sims) == pytest.approx(0.55)
    assert isinstance(task_distance(sims), float)


# -- p(d, m): thresholded accuracy ------------------------------------------------------
def test_thresholded_accuracy_hand_case_with_missing_labels():
    g = np.array([[0.8, 0.5, 0.9, 0.7],
                  [0.2, 0.6, 0.1, 0.2],
                  [0.6, 0.4, 0.3, 0.9]])
    y = np.array([[1, 0, NAN, 1],
                  [1, 1, NAN, NAN],
                  [0, 0, NAN, 0]])
    # model 0: predictions T F T vs 1 1 0 -> 1 hit / 3
    # model 1: predictions F (0.5 is not > 0.5) T F vs 0 1 0 -> 3 / 3
    # model 2: no label -> nan
    # model 3: predictions T . T vs 1 . 0 (middle missing) -> 1 / 2
    got = thresholded_accuracy(g, y)
    np.testing.assert_allclose(got, [1 / 3, 1.0, NAN, 0.5])


# -- p(d', m): kernel smoother ----------------------------------------------------------
def _k(a: float, b: float, sigma: float = 0.09) -> float:
    return math.exp(-(a - b) ** 2 / (2 * sigma ** 2))


U_REF = np.array([0.2, 0.3, 0.5])
P_REF = np.array([[0.6, NAN],
                  [0.8, 0.9],
                  [0.4, 0.5]])


def test_kernel_smoother_hand_case_sigma_009_skips_nan_pairs():
    w1, w2, w3 = _k(0.25, 0.2), _k(0.25, 0.3), _k(0.25, 0.5)
    assert w1 == pytest.approx(math.exp(-0.0025 / 0.0162))  # 0.857...
    assert w3 == pytest.approx(math.exp(-0.0625 / 0.0162))  # 0.0211...
    expected = [(0.6 * w1 + 0.8 * w2 + 0.4 * w3) / (w1 + w2 + w3),
                (0.9 * w2 + 0.5 * w3) / (w2 + w3)]  # the nan pair of model 1 is skipped
    np.testing.assert_allclose(kernel_smoothed_p(0.25, U_REF, P_REF), expected, rtol=1e-12)
    # the default bandwidth is sigma = 0.09
    np.testing.assert_allclose(kernel_smoothed_p(0.25, U_REF, P_REF, sigma=0.09), expected,
                               rtol=1e-12)


def test_kernel_smoother_other_sigma():
    w = [_k(0.25, u, 0.2) for u in U_REF]
    expected0 = (0.6 * w[0] + 0.8 * w[1] + 0.4 * w[2]) / sum(w)
    got = kernel_smoothed_p(0.25, U_REF, P_REF, sigma=0.2)
    assert got[0] == pytest.approx(expected0)


def test_kernel_smoother_excludes_held_out_pair():
    w1, w3 = _k(0.31, 0.2), _k(0.31, 0.5)
    exclude = np.array([False, True, False])
    got = kernel_smoothed_p(0.31, U_REF, P_REF, exclude=exclude)
    # without pair 1 (u=0.3), model 1 has only pair 2 left
    np.testing.assert_allclose(got, [(0.6 * w1 + 0.4 * w3) / (w1 + w3), 0.5], rtol=1e-12)
    # excluding the only labelled pairs of a model leaves it without an estimate
    got = kernel_smoothed_p(0.31, U_REF, P_REF, exclude=np.array([False, True, True]))
    np.testing.assert_allclose(got, [0.6, NAN])


def test_kernel_smoother_far_outside_range_uses_nearest_pair():
    # exp(-(10 - 0.5)^2 / 0.0162) underflows to 0 for every pair
    assert _k(10.0, 0.5) == 0.0
    np.testing.assert_allclose(kernel_smoothed_p(10.0, U_REF, P_REF), [0.4, 0.5])
    np.testing.assert_allclose(kernel_smoothed_p(-10.0, U_REF, P_REF)[0], 0.6)


def test_kernel_smoother_single_pair_is_that_pair():
    np.testing.assert_allclose(kernel_smoothed_p(0.7, np.array([0.1]), np.array([[0.3, 0.9]])),
                               [0.3, 0.9])


# -- the Monte Carlo fallback test ------------------------------------------------------
def _correct_pmf(n: int, n_pos: int, p: float) -> np.ndarray:
    """Exact pmf of Binomial(n_pos, p) + Binomial(n - n_pos, 1 - p) over 0..n."""
    a = binom.pmf(np.arange(n_pos + 1), n_pos, p)
    b = binom.pmf(np.arange(n - n_pos + 1), n - n_pos, 1 - p)
    return np.convolve(a, b)


def _exact_prob_beats(n, n_pos_a, p_a, n_pos_b, p_b) -> float:
    pa, pb = _correct_pmf(n, n_pos_a, p_a), _correct_pmf(n, n_pos_b, p_b)
    cdf_b_below = np.concatenate([[0.0], np.cumsum(pb)[:-1]])  # P(B < a) for a = 0..n
    return float((pa * cdf_b_below).sum())


def test_exact_helper_on_a_tiny_case():
    # n=1: A correct w.p. 0.9 (n_pos=1, p=0.9), B correct w.p. 0.3 (n_pos=0, p=0.7)
    # P(A > B) = P(A=1, B=0) = 0.9 * 0.7 = 0.63
    assert _exact_prob_beats(1, 1, 0.9, 0, 0.7) == pytest.approx(0.63)


def test_prob_beats_identical_models_is_half_minus_ties():
    n, n_pos, p = 100, 60, 0.7
    pmf = _correct_pmf(n, n_pos, p)
    expected = (1 - (pmf ** 2).sum()) / 2  # symmetric: P(A>B) = P(B>A) = (1 - P(tie)) / 2
    assert 0.45 < expected < 0.48
    got = prob_beats(n, n_pos, p, n_pos, p, n_draws=200_000, rng=np.random.default_rng(0))
    assert got == pytest.approx(expected, abs=0.005)


def test_prob_beats_clearly_better_is_about_one():
    # A: about 0.9*180 + 0.1*20 = 164 correct of 200; B: 0.9*40 + 0.1*160 = 52
    assert _exact_prob_beats(200, 180, 0.9, 40, 0.9) > 0.999999
    assert prob_beats(200, 180, 0.9, 40, 0.9, rng=np.random.default_rng(0)) == 1.0
    assert prob_beats(200, 40, 0.9, 180, 0.9, rng=np.random.default_rng(0)) == 0.0


@pytest.mark.parametrize("case", [(50, 30, 0.7, 25, 0.65), (80, 10, 0.4, 70, 0.55),
                                  (20, 12, 0.5, 8, 0.5)])
def test_prob_beats_matches_closed_form(case):
    expected = _exact_prob_beats(*case)
    got = prob_beats(*case, n_draws=100_000, rng=np.random.default_rng(1))
    assert got == pytest.approx(expected, abs=0.01)


def test_prob_beats_is_seeded_and_reproducible():
    args = (60, 35, 0.6, 30, 0.6)
    a = prob_beats(*args, rng=np.random.default_rng(7))
    b = prob_beats(*args, rng=np.random.default_rng(7))
    assert a == b


def test_prob_beats_no_inputs_and_clipped_p():
    assert prob_beats(0, 0, 0.9, 0, 0.1, rng=np.random.default_rng(0)) == 0.0
    # p outside [0, 1] is clipped: p=1.5 -> 1 (all 10 correct), p=-0.2 -> 0 (7 wrong + 3 right)
    assert prob_beats(10, 10, 1.5, 7, -0.2, n_draws=10, rng=np.random.default_rng(0)) == 1.0


# -- argmax with tie-break ----------------------------------------------------------------
def test_argmax_with_ties():
    assert argmax_with_ties(np.array([0.5, 0.7, 0.7]), np.array([0.9, 0.1, 0.3])) == 2
    assert argmax_with_ties(np.array([0.5, 0.7, 0.7]), np.array([0.9, 0.3, 0.1])) == 1
    # a full tie goes to the lowest index
    assert argmax_with_ties(np.array([0.7, 0.7, 0.7]), np.array([0.2, 0.2, 0.2])) == 0
    # nan never wins; -inf (a disallowed model) neither
    assert argmax_with_ties(np.array([NAN, 0.1, -np.inf]), np.array([1.0, 0.0, 2.0])) == 1
