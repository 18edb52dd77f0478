"""The stacked switch (stacking.py) on synthetic reference tasks where the right answer is
known: it must learn to switch where the scores carry the truth, stay with the best model on
average where they carry noise, and use labels when only the labels carry it."""

from __future__ import annotations

import numpy as np
import pytest

from lm_router_plugin.router.calibration import Calibration
from lm_router_plugin.router.deciders import DecisionSettings, StackedSwitch, TaskView
from lm_router_plugin.router.stacking import TAUS, Switch, fit_switch

T, SIGMA = 0.5, 0.09


def stacked_decision(cal, g, sim, allowed, *, t, sigma, labels=None, n_labels=0, Y=None,
                     rows_of=None, seed=0):
    """The stacked-switch decider on one task: (choice, best by predicted gain, BMA,
    predicted gains (M,), P(best beats BMA), the switch). ``labels`` (M,): the accuracy on
    ``n_labels`` labelled items (given as that many rows of those accuracies)."""
    lab_y = None if labels is None else np.tile(np.asarray(labels, float), (n_labels, 1))
    view = TaskView(cal=cal, models=[f"m{i}" for i in range(len(allowed))], allowed=allowed,
                    g=g, kappa_sim=sim, settings=DecisionSettings(sigma=sigma, t=t, seed=seed),
                    lab_y=lab_y,
                    switches=lambda n: fit_switch(cal, allowed, sigma=sigma, n_labels=n,
                                                  Y=Y if n else None,
                                                  rows_of=rows_of if n else None, seed=seed))
    dec = StackedSwitch().decide(view)
    return (dec.choice, dec.best_by_score, dec.bma, dec.scores, dec.p_beats_bma,
            dec.details["switch"])


def reference(s1_informative: bool, *, D: int = 30, M: int = 4, n: int = 60, seed: int = 0):
    """D reference tasks: model 0 is best on average; on a third of the tasks model 1 (or 2)
    is far better. S1 follows the true accuracies (informative) or is pure noise. Returns
    (calibration, Y (D * n, M), rows_of)."""
    rng = np.random.default_rng(seed)
    acc = np.tile([0.70, 0.55, 0.55, 0.40], (D, 1))[:, :M]
    special = rng.permutation(D)[: D // 3]
    for z in special:
        acc[z, 1 + z % 2] = 0.90
    Y = (rng.random((D * n, M)) < np.repeat(acc, n, axis=0)).astype(float)
    rows_of = [np.arange(z * n, (z + 1) * n) for z in range(D)]
    measured = np.array([Y[r].mean(0) for r in rows_of])
    s1 = (measured + rng.normal(0, 0.01, measured.shape) if s1_informative
          else 0.6 + rng.normal(0, 0.1, measured.shape))
    cal = Calibration(u=np.full(D, 0.5), p=np.full((D, M), 0.7), accuracy=measured,
                      included=np.ones(D, dtype=bool), mean_accuracy=measured.mean(0), s1=s1,
                      residual_cov=np.eye(M) * 0.2, s2=(s1 > T).astype(float),
                      n=np.full(D, n))
    return cal, Y, rows_of


def new_task(means: list[float], n: int = 40):
    """(g (n, M) with the given column means, kappa similarities (n, 5))."""
    g = np.tile(np.asarray(means, dtype=float), (n, 1))
    return g, np.full((n, 5), 0.5)


def test_learns_to_switch_when_the_scores_carry_the_truth():
    cal, _, _ = reference(s1_informative=True)
    allowed = np.ones(4, dtype=bool)
    switch = fit_switch(cal, allowed, sigma=SIGMA)
    assert switch.tau < np.inf and switch.beta[0] > 0.5  # follows S1 leads
    assert switch.inner_gain.max() > 0.05  # switching paid on the reference tasks
    g, sim = new_task([0.70, 0.90, 0.55, 0.40])
    choice, best, bma, gain, p, _ = stacked_decision(cal, g, sim, allowed, t=T, sigma=SIGMA)
    assert (choice, best, bma) == (1, 1, 0)
    assert gain[1] > 0.1 and gain[0] == 0 and 0.5 < p <= 1
    g, sim = new_task([0.70, 0.55, 0.55, 0.40])  # nothing leads: stays with BMA
    assert stacked_decision(cal, g, sim, allowed, t=T, sigma=SIGMA)[0] == 0


def test_stays_with_the_best_on_average_when_the_scores_are_noise():
    cal, _, _ = reference(s1_informative=False)
    allowed = np.ones(4, dtype=bool)
    switch = fit_switch(cal, allowed, sigma=SIGMA)
    g, sim = new_task([0.50, 0.80, 0.55, 0.40])  # a large S1 lead that means nothing
    choice, _, bma, _, _, _ = stacked_decision(cal, g, sim, allowed, t=T, sigma=SIGMA)
    assert bma == 0 and choice == 0
    # the inner leave-one-task-out saw that switching loses (or at best ties)
    assert switch.inner_gain[list(TAUS).index(np.inf)] >= switch.inner_gain.max() - 1e-12


def test_candidates_restrict_the_choice():
    cal, _, _ = reference(s1_informative=True)
    allowed = np.array([True, False, True, True])
    g, sim = new_task([0.70, 0.95, 0.55, 0.40])
    choice, best, _, gain, _, _ = stacked_decision(cal, g, sim, allowed, t=T, sigma=SIGMA)
    assert choice != 1 and best != 1 and gain[1] == -np.inf


def test_labels_are_used_when_they_carry_what_the_scores_do_not():
    cal, Y, rows_of = reference(s1_informative=False, n=80)
    allowed = np.ones(4, dtype=bool)
    switch = fit_switch(cal, allowed, sigma=SIGMA, n_labels=30, Y=Y, rows_of=rows_of)
    assert switch.n_labels == 30 and switch.features[-1] == "labels"
    assert switch.prior_cov is not None and switch.label_weights(50)[1] > 0.3
    g, sim = new_task([0.6, 0.6, 0.6, 0.6])
    labels = np.array([0.70, 0.95, 0.55, 0.40])  # model 1 far ahead on 30 labelled items
    choice = stacked_decision(cal, g, sim, allowed, t=T, sigma=SIGMA, labels=labels,
                              n_labels=30, Y=Y, rows_of=rows_of)[0]
    assert choice == 1


def test_label_simulation_is_seeded():
    cal, Y, rows_of = reference(s1_informative=False, n=80)
    allowed = np.ones(4, dtype=bool)
    a = fit_switch(cal, allowed, sigma=SIGMA, n_labels=10, Y=Y, rows_of=rows_of, seed=1)
    b = fit_switch(cal, allowed, sigma=SIGMA, n_labels=10, Y=Y, rows_of=rows_of, seed=1)
    assert np.array_equal(a.beta, b.beta) and a.tau == b.tau
    assert np.array_equal(a.prior_cov, b.prior_cov) and np.array_equal(a.label_cov, b.label_cov)
    with pytest.raises(ValueError, match="reference correctness"):
        fit_switch(cal, allowed, sigma=SIGMA, n_labels=10)


def _labelled_switch(prior_cov, label_cov):
    return Switch(beta=np.array([1.0, 0.0, 0.0]), tau=0.0, n_labels=10,
                  inner_gain=np.zeros(len(TAUS)), bias=0.0, sd=0.1, n_tasks=20,
                  features=("s1", "mean_accuracy", "s3", "labels"), prior_cov=prior_cov,
                  label_cov=label_cov, bma=0)


FEATURES_4 = np.array([[0.0, 0, 0, 0.0], [0.01, 0, 0, 0.10], [0.03, 0, 0, -0.10],
                       [0.02, 0, 0, np.nan]])


def test_labels_update_the_prediction_by_their_precision():
    """With diagonal covariances the update is per candidate: gain = d0 + w (L - d0),
    w = S / (S + V (1/n + 1/N)): a model that rarely differs from BMA is compared precisely
    by few labels, one that often differs is not; a model without labels keeps its
    zero-label prediction (nothing ties it to the others)."""
    S, V = np.diag([0.0, 0.004, 0.004, 0.004]), np.diag([0.0, 0.02, 0.4, 0.2])
    switch = _labelled_switch(S, V)
    features = FEATURES_4
    w = 0.004 / (0.004 + np.diag(V) * (1 / 10 + 1 / 90))
    expected = features[:, 0] + w * (np.nan_to_num(features[:, 3]) - features[:, 0])
    expected[[0, 3]] = [0.0, 0.02]
    gain = switch.predict(features, np.ones(4, bool), n_rest=90)
    np.testing.assert_allclose(gain, expected, atol=1e-8)
    np.testing.assert_allclose(switch.label_weights(90)[1:], w[1:])
    assert w[1] > 0.5 > 0.1 > w[2]  # the near-copy of BMA is decided by its labels
    choice, best, _, _ = switch.decide(features, np.ones(4, bool), 0, np.zeros(4), n_rest=90)
    assert best == choice == 1  # its labels outweigh model 2's larger zero-label lead
    zero = Switch(**{**switch.__dict__, "n_labels": 0, "prior_cov": None, "label_cov": None})
    assert zero.decide(features[:, :3], np.ones(4, bool), 0, np.zeros(4))[1] == 2


def test_labels_inform_every_candidate_through_the_covariances():
    """The Gaussian conditional E[d | L] = d0 + S_.J (S_JJ + f V_JJ)^-1 (L - d0)_J, checked
    against the textbook formula on the labelled block: a model without labels moves with a
    model its true gains go with (covariance 0.003 of 0.004), and a shared label noise
    (V's off-diagonal) is not counted twice."""
    S = np.array([[0, 0, 0, 0], [0, 0.004, 0, 0.003], [0, 0, 0.004, 0], [0, 0.003, 0, 0.004]])
    V = np.array([[0, 0, 0, 0], [0, 0.2, 0.1, 0], [0, 0.1, 0.4, 0], [0, 0, 0, 0.2]])
    switch = _labelled_switch(S, V)
    gain = switch.predict(FEATURES_4, np.ones(4, bool), n_rest=90)
    d0, lab, f = FEATURES_4[:, 0], FEATURES_4[:, 3], 1 / 10 + 1 / 90
    J = [1, 2]
    x = np.linalg.inv(S[np.ix_(J, J)] + f * V[np.ix_(J, J)]) @ (lab[J] - d0[J])
    np.testing.assert_allclose(gain, d0 + S[:, J] @ x, atol=1e-9)
    assert gain[3] > d0[3]  # unlabelled, raised by model 1's good labels
    # the same labels with the noise taken as independent move model 2 less far down
    indep = _labelled_switch(S, np.diag(np.diag(V))).predict(FEATURES_4, np.ones(4, bool), 90)
    assert gain[2] != pytest.approx(indep[2])


def test_label_weight_grows_with_the_label_count():
    """Where only labels carry the truth, the fitted weight of the label difference rises
    with the number of labels (a regression guard on the values, seeded)."""
    cal, Y, rows_of = reference(s1_informative=False, n=80)
    allowed = np.ones(4, dtype=bool)
    weights = [fit_switch(cal, allowed, sigma=SIGMA, n_labels=n, Y=Y, rows_of=rows_of)
               .label_weights(70)[1:] for n in (5, 10, 30)]
    assert np.all(weights[0] < weights[1]) and np.all(weights[1] < weights[2])
    np.testing.assert_allclose([w.max() for w in weights], [0.29, 0.75, 0.81], atol=0.01)


def test_nested_gain_by_hand():
    """Each task is scored with the (c, tau) that gained most on the other tasks (ties: the
    earlier config, i.e. the smaller c and the larger tau)."""
    from lm_router_plugin.router.stacking import _nested_gain

    per_config = np.array([[0.0, 0.10, 0.02],
                           [0.0, -0.05, 0.04],
                           [0.0, 0.03, 0.03]])
    # task 0: others' means (0, -0.01, 0.035) -> config 2 -> 0.02
    # task 1: others (0, 0.065, 0.025) -> config 1 -> -0.05
    # task 2: others (0, 0.025, 0.03) -> config 2 -> 0.03
    assert _nested_gain(per_config) == pytest.approx((0.02 - 0.05 + 0.03) / 3)
    assert _nested_gain(np.zeros((3, 2))) == 0.0  # ties: the first config
    assert np.isnan(_nested_gain(per_config[:1]))


def test_expected_gain_is_what_the_rule_realised_on_tasks_it_was_not_tuned_on():
    """Where labels carry the truth, the rule for 30 labels is expected to gain more than
    the zero-label rule; where switching never pays, neither gains (both stay near 0)."""
    cal, Y, rows_of = reference(s1_informative=False, n=80)
    allowed = np.ones(4, dtype=bool)
    zero = fit_switch(cal, allowed, sigma=SIGMA)
    many = fit_switch(cal, allowed, sigma=SIGMA, n_labels=30, Y=Y, rows_of=rows_of)
    assert many.expected_gain > zero.expected_gain + 0.02
    # never above what the fitted (c, tau) itself gained on all tasks (no tuning on them)
    assert many.expected_gain <= many.inner_gain.max() + 1e-12
    assert abs(zero.expected_gain) < 0.02


def test_a_switch_that_never_switches_is_described_in_words():
    """No "threshold inf" for users: a switch whose inner leave-one-task-out found no
    threshold that paid says it never switches."""
    switch = Switch(beta=np.array([-8.11, 0.0, 8.27]), tau=np.inf, n_labels=0,
                    inner_gain=np.zeros(len(TAUS)), bias=0.0, sd=0.1, n_tasks=6,
                    features=("s1", "mean_accuracy", "s3"))
    text = switch.describe()
    assert "inf" not in text and "never switches" in text and "6 reference tasks" in text
    finite = Switch(**{**switch.__dict__, "tau": 0.02})
    assert finite.describe().startswith("threshold 0.02 learned leave-one-task-out over 6")


def test_a_labelled_switch_says_how_its_labels_count():
    """The reason names the labels, the prior's spread (accuracy units) and, when the prior
    keeps part of the models' covariances, how much."""
    S = np.array([[0, 0, 0], [0, 0.0016, 0.0008], [0, 0.0008, 0.0016]])
    switch = Switch(beta=np.array([0.5, 0.0, 1.0]), tau=0.01, n_labels=10,
                    inner_gain=np.zeros(len(TAUS)), bias=0.0, sd=0.1, n_tasks=12,
                    features=("s1", "mean_accuracy", "s3", "labels"), prior_cov=S,
                    label_cov=np.eye(3) * 0.3, pooling=0.5, bma=0)
    text = switch.describe()
    assert "10 labels update every candidate with prior sd 0.040" in text
    assert "50% of the prior from how the models went together" in text
    pooled = Switch(**{**switch.__dict__, "pooling": 1.0}).describe()
    assert "prior sd 0.040" in pooled and "went together" not in pooled


def test_a_model_without_kernel_neighbours_falls_back_to_the_knn_s1():
    """A model with results on few tasks can have no result among a task's task_k nearest
    reference inputs: its kernel S1 is nan there. The switch then reads the kNN's S1 for
    that cell (never nan weights, nor a switch that silently never switches)."""
    cal, _, _ = reference(s1_informative=True)
    allowed = np.ones(4, dtype=bool)
    kernel = cal.s1 + 0.02  # a kernel S1 that differs from the kNN's
    sparse = kernel.copy()
    sparse[::3, 3] = np.nan  # model 3: no kernel neighbour with a result on these tasks
    cal.task_bandwidths = np.array([np.inf])
    cal.task_s1 = sparse[None]
    switch = fit_switch(cal, allowed, sigma=SIGMA)
    assert np.isfinite(switch.beta).all() and switch.tau < np.inf
    cal.task_s1 = np.where(np.isnan(sparse), cal.s1, sparse)[None]  # the fallback by hand
    np.testing.assert_allclose(fit_switch(cal, allowed, sigma=SIGMA).beta, switch.beta)
    g, sim = new_task([0.70, 0.55, 0.55, 0.95])
    view = TaskView(cal=cal, models=[f"m{i}" for i in range(4)], allowed=allowed, g=g,
                    kappa_sim=sim, settings=DecisionSettings(sigma=SIGMA, t=T),
                    switches=lambda n: switch,
                    task_s1=lambda j: np.array([0.72, 0.57, 0.57, np.nan]))
    dec = StackedSwitch().decide(view)
    assert np.isfinite(dec.scores).all() and dec.choice == 3  # its kNN S1 0.95 leads


def test_predicted_gains_stay_in_the_range_of_an_accuracy_difference():
    """A linear prediction far outside the reference tasks (features of one odd prompt) is
    clipped to [-1, 1], what a gain over BMA can be."""
    switch = Switch(beta=np.array([3.0, 0.0, 0.0]), tau=0.0, n_labels=0,
                    inner_gain=np.zeros(len(TAUS)), bias=0.0, sd=0.1, n_tasks=10,
                    features=("s1", "mean_accuracy", "s3"))
    features = np.array([[0.0, 0, 0], [0.5, 0, 0], [-0.6, 0, 0]])
    gain = switch.predict(features, np.ones(3, bool))
    np.testing.assert_allclose(gain, [0.0, 1.0, -1.0])
