"""The IRT correctness model (router/irt.py): the fit recovers a model it was drawn from, the
evaluation's irt rows equal a router refitted without the held-out task, labels move every
candidate's estimate, the intervals cover in a seeded simulation, and the decider and the
predictor run through the plugin paths (recommend --score irt, --predictor irt)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from test_evaluation import _embeddings, make_data

from lm_router_plugin.registry import deciders, predictors
from lm_router_plugin.router.deciders import ReferenceData
from lm_router_plugin.router.irt import (
    IRTDecider,
    IRTPredictor,
    fit_irt,
    fit_reference,
    informative_docs,
    reference_model,
)
from lm_router_plugin.router.pool import build_pool
from lm_router_plugin.router.router import Router


def irt_world(seed: int, n_tasks: int = 10, n_per_task: int = 60, n_models: int = 8,
              dim: int = 16, task_sd: float = 0.6):
    """Docs drawn from the model: abilities c, loadings theta (rank 1); each doc's (a, b)
    a linear function of its embedding plus a task shift and a doc residual; outcomes
    Bernoulli. Returns (X (n, dim), Y (n, M), task_of (n,), true logits (n, M), c, b)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(0.0, 1.0, n_models)
    theta = rng.normal(0.0, 1.0, (n_models, 1))
    W = rng.normal(0.0, 1.0, (dim, 2))
    centers = rng.normal(size=(n_tasks, dim))
    X, task_of, params = [], [], []
    for d in range(n_tasks):
        shift = rng.normal(0.0, task_sd, 2)
        for _ in range(n_per_task):
            x = centers[d] + 0.8 * rng.normal(size=dim)
            x /= np.linalg.norm(x)
            X.append(x)
            task_of.append(d)
            params.append(x @ W * 2.0 + shift + rng.normal(0.0, 0.3, 2))
    X, task_of, params = np.array(X), np.array(task_of), np.array(params)
    a, b = params[:, :1], params[:, 1]
    logits = c[None, :] + a @ theta.T - b[:, None]
    Y = (rng.random(logits.shape) < expit(logits)).astype(float)
    return X.astype(np.float32), Y, task_of, logits, c, b


def test_the_fit_recovers_the_model_it_was_drawn_from():
    _, Y, _, logits, _, b = irt_world(seed=0, n_tasks=10, n_per_task=60, n_models=30)
    fit = fit_irt(Y, 1, seed=0)
    assert np.corrcoef(fit.logits().ravel(), logits.ravel())[0, 1] > 0.85
    assert np.corrcoef(fit.b, b)[0, 1] > 0.85  # difficulties
    # abilities: each model's mean logit over the docs, fitted vs true
    assert np.corrcoef(fit.logits().mean(0), logits.mean(0))[0, 1] > 0.95
    again = fit_irt(Y, 1, seed=0)
    assert np.array_equal(again.theta, fit.theta) and np.array_equal(again.b, fit.b)
    with_nans = Y.copy()
    with_nans[np.random.default_rng(1).random(Y.shape) < 0.2] = np.nan
    fit2 = fit_irt(with_nans, 1, seed=0)  # missing results are skipped, not zeros
    assert np.corrcoef(fit2.logits().ravel(), logits.ravel())[0, 1] > 0.8


def test_labels_move_every_candidate_and_intervals_cover():
    """Leave each task of a simulated world out: fit the reference model on the others,
    estimate the held-out task's accuracies with 0 and 10 labelled docs. Every candidate's
    estimate moves with the labels (each labelled doc carries all candidates' outcomes),
    the labels bring the estimates closer to the truth, and the 90% intervals cover."""
    X, Y, task_of, _, _, _ = irt_world(seed=3, n_tasks=8, n_per_task=60, n_models=8)
    rng = np.random.default_rng(0)
    inside, errors = {0: [], 10: []}, {0: [], 10: []}
    for d in range(8):
        keep = task_of != d
        ref = fit_reference(X[keep], Y[keep], task_of[keep], seed=0)
        rows = np.flatnonzero(~keep)
        lab = np.sort(rng.choice(rows, 10, replace=False))
        rest = np.setdiff1d(rows, lab)
        acc = Y[rest].mean(0)
        zero = ref.estimate(X[rest])
        labelled = ref.estimate(X[rest], Q_lab=X[lab], y_lab=Y[lab])
        assert np.all(np.abs(labelled.mean - zero.mean) > 1e-4)  # every candidate moved
        for n, est in ((0, zero), (10, labelled)):
            low, high = est.interval(0.9).T
            inside[n].extend((acc >= low) & (acc <= high))
            errors[n].append(np.mean((est.mean - acc) ** 2))
    assert np.mean(errors[10]) < np.mean(errors[0])
    for n in (0, 10):
        assert 0.75 <= np.mean(inside[n]) <= 1.0, (n, np.mean(inside[n]))


def test_informative_docs_pick_where_the_leaders_disagree():
    X, Y, task_of, _, _, _ = irt_world(seed=4, n_tasks=6, n_per_task=40)
    ref = fit_reference(X[task_of > 0], Y[task_of > 0], task_of[task_of > 0], seed=0)
    mu = ref.mu(X[task_of == 0])
    allowed = np.ones(Y.shape[1], bool)
    picked = informative_docs(ref, mu, 8, allowed, np.zeros(Y.shape[1]), seed=0)
    assert len(set(picked.tolist())) == 8
    assert np.array_equal(picked, informative_docs(ref, mu, 8, allowed,
                                                   np.zeros(Y.shape[1]), seed=0))


@pytest.fixture(autouse=True)
def irt_registered():
    """irt is not registered by default (docs/irt.md); these tests add it for their run."""
    from lm_router_plugin.router import irt

    irt.register()
    yield
    irt.unregister()


def test_not_registered_by_default():
    from lm_router_plugin.router import irt

    irt.unregister()
    assert "irt" not in deciders.names() and "irt" not in predictors.names()
    irt.register()


@pytest.fixture(scope="module")
def small_world():
    table, vectors = make_data(seed=5, n_tasks=6, n_models=4, n_per_task=30, missing=0.05)
    X = _embeddings(build_pool(table), vectors)
    return table, X


def test_evaluation_irt_rows_equal_a_refit_without_the_held_out_task(small_world):
    """For every held-out task d: the reference pool evaluate gives the irt decider is the
    one Router.fit holds for the table without d (same IRT fit, same estimates), and the
    decisions with and without labels equal recommend(score="irt") of that router."""
    from lm_router_plugin.evaluation.protocol import _HeldOut, _TaskScorer, evaluate

    table, X = small_world
    result = evaluate(table, embeddings=X, label_counts=[6], repeats=1, n_bootstrap=0)
    assert {"irt", "irt@6labels"} <= set(result.rows)
    pool = build_pool(table)
    router = Router()
    ev = _HeldOut(router, X, pool.Y, pool.task_of, len(pool.task_names))
    scorer = _TaskScorer(ev, np.ones(len(pool.models), bool), np.full(len(pool.models), np.nan),
                         pool.models, None, 4)
    for d, task in enumerate(pool.task_names):
        keep = pool.task_of != d
        refit = Router().fit(table[table["task"] != task], embeddings=X[keep])
        rows = np.flatnonzero(~keep)
        y = pool.Y[rows]
        labelled = [m for j, m in enumerate(pool.models) if (~np.isnan(y[:, j])).any()]
        allowed = np.isin(pool.models, labelled)
        mine = reference_model(scorer.reference(d))
        theirs = reference_model(refit.reference_data())
        assert np.allclose(mine.fit.theta, theirs.fit.theta)
        assert np.allclose(mine.fit.b, theirs.fit.b)
        est = IRTDecider().decide(scorer.view(d, rows, allowed))
        rec = refit.recommend(embeddings=X[rows], score="irt", candidates=labelled)
        record = next(t for t in result.per_task if t["task"] == task)
        assert record["irt"]["model"] == rec.choice == pool.models[est.choice]
        assert record["irt"]["fallback"] == rec.fallback
        scores = {r.model: r.score for r in rec.models}
        for j, m in enumerate(pool.models):
            if allowed[j]:
                assert scores[m] == pytest.approx(est.scores[j], rel=1e-9)
        # the held-out task's own outcomes never reach its reference model
        flipped = pool.Y.copy()
        flipped[rows] = 1 - flipped[rows]
        data = ReferenceData(X, flipped, pool.task_of, rows=np.flatnonzero(keep))
        assert np.allclose(reference_model(data).fit.theta, mine.fit.theta)
        # with labels: the draw evaluate made, given to the refitted router
        draw = next(x for x in record["label_draws"] if x["n_labels"] == 6)
        position = {i: k for k, i in enumerate(np.asarray(pool.instance_ids)[rows])}
        labeled = pd.DataFrame([{"task": task, "instance_id": str(position[i]),
                                 "model": m, "correct": y[position[i], j]}
                                for i in draw["labelled"] for j, m in enumerate(pool.models)
                                if not np.isnan(y[position[i], j])])
        rec = refit.recommend(embeddings=X[rows], score="irt", candidates=labelled,
                              labeled=labeled)
        assert draw["choice"]["irt"] == rec.choice


def test_the_decider_and_the_predictor_register_as_plugins(small_world):
    assert deciders.get("irt") is IRTDecider and predictors.get("irt") is IRTPredictor
    table, X = small_world
    pool = build_pool(table)
    router = Router(predictor="irt").fit(table, embeddings=X)
    g = router.predict_correctness(X[:5])
    assert g.shape == (5, len(pool.models)) and np.all((g > 0) & (g < 1))


def test_recommend_score_irt_through_the_api(small_world):
    table, X = small_world
    pool = build_pool(table)
    rows = np.flatnonzero(pool.task_of == 0)
    router = Router().fit(table[pool_task(table) != pool.task_names[0]],
                          embeddings=X[pool.task_of != 0])
    rec = router.recommend(embeddings=X[rows], score="irt")
    assert rec.score == rec.decided_by == "irt" and "IRT estimate" in rec.reason
    assert rec.models[0].model == rec.choice
    assert all(m.score is not None and 0 < m.score < 1 for m in rec.models)


def pool_task(table: pd.DataFrame) -> pd.Series:
    return table["task"]
