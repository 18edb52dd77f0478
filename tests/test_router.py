"""Router: calibration and scoring against an independent brute-force implementation of
METHOD.md, the fallback, routing, restrictions, persistence, errors and the CLI."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import one_error
from scipy.stats import binom

from lm_router_plugin.cli.commands import main
from lm_router_plugin.embedding.embedders import SentenceTransformerEmbedder
from lm_router_plugin.errors import LMRouterError, NotFittedError, UnknownNameError
from lm_router_plugin.registry import deciders, predictors
from lm_router_plugin.router.calibration import Calibration
from lm_router_plugin.router.deciders import DecisionSettings, TaskScores, TaskView
from lm_router_plugin.router.persistence import fit_or_load, load_router, save_router
from lm_router_plugin.router.pool import build_pool
from lm_router_plugin.router.predictors import CorrectnessPredictor
from lm_router_plugin.router.router import Router
from lm_router_plugin.store.schema import validate_table
from lm_router_plugin.store.store import Store

NAN = np.nan
MODELS = ["m_big", "m_mid", "m_small"]


# -- a tiny 3-task dataset ----------------------------------------------------------------
def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_dataset(seed: int = 0):
    """(table, embeddings {(task, iid): vector}, labels {(task, iid): {model: 0/1}}).

    Tasks differ in spread around their centre, so their distances u differ. A few
    (instance, model) results are missing.
    """
    rng = np.random.default_rng(seed)
    spec = {"alpha": (4, 0.3), "beta": (5, 0.6), "gamma": (3, 1.0)}
    skill = {"m_big": 0.8, "m_mid": 0.6, "m_small": 0.35}
    rows, emb, labels = [], {}, {}
    for task, (n, spread) in spec.items():
        centre = rng.standard_normal(8)
        for i in range(n):
            key = (task, f"i{i}")
            emb[key] = _unit(centre + spread * rng.standard_normal(8))
            labels[key] = {}
            for m in MODELS:
                if (task, i, m) in {("alpha", 1, "m_mid"), ("beta", 3, "m_big"),
                                    ("gamma", 0, "m_small")}:
                    continue  # missing result
                y = int(rng.random() < skill[m])
                labels[key][m] = y
                rows.append({"task": task, "instance_id": f"i{i}", "model": m,
                             "input_text": f"{task} input {i}", "correct": y})
    return validate_table(pd.DataFrame(rows)), emb, labels


def arrays_in_sorted_order(emb, labels):
    """X (n, dim), Y (n, M), task of each row: rows sorted by (task, instance_id)."""
    keys = sorted(emb)
    X = np.stack([emb[k] for k in keys])
    Y = np.array([[labels[k].get(m, NAN) for m in MODELS] for k in keys], dtype=float)
    tasks = np.array([k[0] for k in keys])
    return keys, X, Y, tasks


# -- the brute-force reference implementation of METHOD.md ------------------------------
def knn_g(query: np.ndarray, X: np.ndarray, Y: np.ndarray, k: int, prior: np.ndarray):
    sims = X @ query
    near = np.argsort(-sims, kind="stable")[:k]
    g = np.empty(Y.shape[1])
    for m in range(Y.shape[1]):
        labelled = Y[near, m][~np.isnan(Y[near, m])]
        g[m] = labelled.mean() if len(labelled) else prior[m]
    return g


def nn_distance(query: np.ndarray, X: np.ndarray, kappa: int) -> float:
    sims = np.sort(X @ query)[::-1][:kappa]
    return float(np.mean(1 - sims))


def brute_force_calibration(X, Y, tasks, k, kappa, t=0.5):
    names = sorted(set(tasks))
    D, M = len(names), Y.shape[1]
    loo_g = np.zeros(Y.shape)
    u, p, acc = np.zeros(D), np.zeros((D, M)), np.zeros((D, M))
    for d, name in enumerate(names):
        inside = np.flatnonzero(tasks == name)
        X_other, Y_other = X[tasks != name], Y[tasks != name]  # D_-d
        prior = np.nan_to_num(np.nanmean(Y_other, axis=0))  # no leak from the held-out task
        for i in inside:
            loo_g[i] = knn_g(X[i], X_other, Y_other, k, prior)
        u[d] = np.mean([nn_distance(X[i], X_other, kappa) for i in inside])
        for m in range(M):
            has = inside[~np.isnan(Y[inside, m])]
            p[d, m] = np.mean((loo_g[has, m] > t) == (Y[has, m] == 1))
            acc[d, m] = Y[has, m].mean()
    return loo_g, u, p, acc, acc.mean(axis=0)


def brute_force_scores(Q, X, Y, u_ref, p_ref, k, kappa, sigma=0.09, t=0.5):
    prior = np.nan_to_num(np.nanmean(Y, axis=0))
    g = np.array([knn_g(q, X, Y, k, prior) for q in Q])
    u = np.mean([nn_distance(q, X, kappa) for q in Q])
    weights = np.array([np.exp(-(u - uz) ** 2 / (2 * sigma ** 2)) for uz in u_ref])
    p = (weights[:, None] * p_ref).sum(0) / weights.sum()
    S1 = g.mean(0)
    S2 = (g > t).mean(0)
    S3 = S2 * p + (1 - S2) * (1 - p)
    return g, u, p, S1, S2, S3


def exact_prob_beats(n, n_pos_a, p_a, n_pos_b, p_b):
    def pmf(n_pos, p):
        return np.convolve(binom.pmf(np.arange(n_pos + 1), n_pos, p),
                           binom.pmf(np.arange(n - n_pos + 1), n - n_pos, 1 - p))
    pa, pb = pmf(n_pos_a, p_a), pmf(n_pos_b, p_b)
    return float((pa * np.concatenate([[0.0], np.cumsum(pb)[:-1]])).sum())


@pytest.fixture(scope="module")
def data():
    table, emb, labels = make_dataset()
    keys, X, Y, tasks = arrays_in_sorted_order(emb, labels)
    rng = np.random.default_rng(42)
    Q = _unit(X[:4].mean(0) + 0.4 * rng.standard_normal((6, 8)))  # a new task near alpha
    return {"table": table, "X": X, "Y": Y, "tasks": tasks, "keys": keys, "Q": Q}


@pytest.fixture(scope="module")
def fitted(data):
    # the transformer embedder (its encode is what fake_encode replaces); default: static
    return Router(embedder="minilm").fit(data["table"], embeddings=data["X"])


# -- the pool -------------------------------------------------------------------------------
def test_build_pool_hand_case():
    table = validate_table(pd.DataFrame([
        {"task": "t2", "instance_id": "i10", "model": "b", "input_text": "q10", "correct": 1},
        {"task": "t2", "instance_id": "i2", "model": "a", "input_text": "", "correct": 0},
        {"task": "t2", "instance_id": "i2", "model": "b", "input_text": "q2 (b)", "correct": 1},
        {"task": "t1", "instance_id": "x", "model": "a", "input_text": "qx (a)", "correct": 1},
        {"task": "t1", "instance_id": "x", "model": "b", "input_text": "qx (b)", "correct": 0},
    ]))
    pool = build_pool(table)
    assert pool.models == ["a", "b"]
    assert pool.task_names == ["t1", "t2"]
    # rows sorted by task, then instance id as a string ("i10" < "i2")
    assert pool.instance_ids == ["x", "i10", "i2"]
    assert pool.task_of.tolist() == [0, 1, 1]
    # first non-empty text in model order: model a's text for x, model b's for i2 (a's empty)
    assert pool.texts == ["qx (a)", "q10", "q2 (b)"]
    np.testing.assert_array_equal(pool.Y, [[1, 0], [NAN, 1], [0, 1]])


def test_build_pool_order_matches_test_helper(data):
    pool = build_pool(data["table"])
    assert list(zip([pool.task_names[d] for d in pool.task_of], pool.instance_ids)) == data["keys"]
    np.testing.assert_array_equal(pool.Y, data["Y"])


# -- calibration -------------------------------------------------------------------------
@pytest.mark.parametrize("k,kappa", [(5, 19), (3, 4), (1, 2)])
def test_fit_calibration_matches_brute_force(data, k, kappa):
    router = Router(k=k, kappa=kappa).fit(data["table"], embeddings=data["X"])
    loo_g, u, p, acc, mean_acc = brute_force_calibration(data["X"], data["Y"], data["tasks"],
                                                         k, kappa)
    assert router.models_ == MODELS
    assert router.task_names_ == ["alpha", "beta", "gamma"]
    np.testing.assert_allclose(router.loo_g_, loo_g, rtol=1e-6)
    np.testing.assert_allclose(router.calibration_.u, u, rtol=1e-5)
    np.testing.assert_allclose(router.calibration_.p, p, rtol=1e-6)
    np.testing.assert_allclose(router.calibration_.accuracy, acc, rtol=1e-6)
    np.testing.assert_allclose(router.calibration_.mean_accuracy, mean_acc, rtol=1e-6)
    assert len(set(np.round(u, 6))) == 3  # the tasks really have different distances


def test_u_hand_case_leaves_own_task_out():
    def at(deg):
        return [np.cos(np.radians(deg)), np.sin(np.radians(deg))]

    # task A at 0 and 90 degrees, task B at 0, 60 and 180 degrees; kappa = 2
    X = np.array([at(0), at(90), at(0), at(60), at(180)], dtype=np.float32)
    table = validate_table(pd.DataFrame([
        {"task": task, "instance_id": str(i), "model": m, "input_text": f"{task}{i}",
         "correct": (i + j) % 2}
        for task, ids in (("A", [0, 1]), ("B", [0, 1, 2])) for i in ids
        for j, m in enumerate(["m1", "m2"])]))
    router = Router(k=1, kappa=2).fit(table, embeddings=X)
    r3 = np.sqrt(3) / 2
    # A at 0: B distances 0, 0.5, 2 -> (0 + 0.5) / 2;  A at 90: 1, 1 - r3, 1 -> (1 - r3 + 1) / 2
    u_a = ((0 + 0.5) / 2 + ((1 - r3) + 1) / 2) / 2
    # B at 0: A distances 0, 1;  B at 60: 0.5, 1 - r3;  B at 180: 2, 1
    u_b = ((0 + 1) / 2 + (0.5 + (1 - r3)) / 2 + (2 + 1) / 2) / 3
    np.testing.assert_allclose(router.calibration_.u, [u_a, u_b], rtol=1e-6)
    # a new task uses the whole reference set: at 90 degrees the 2 nearest are A's 90 (0)
    # and B's 60 (1 - r3)
    rec = router.recommend(embeddings=np.array([at(90)], dtype=np.float32))
    assert rec.u == pytest.approx((0 + 1 - r3) / 2, rel=1e-6)


@pytest.mark.parametrize("k,kappa", [(5, 19), (3, 4)])
def test_recommend_scores_match_brute_force(data, k, kappa):
    router = Router(k=k, kappa=kappa).fit(data["table"], embeddings=data["X"])
    _, u_ref, p_ref, _, mean_acc = brute_force_calibration(data["X"], data["Y"], data["tasks"],
                                                           k, kappa)
    g, u, p, S1, S2, S3 = brute_force_scores(data["Q"], data["X"], data["Y"], u_ref, p_ref,
                                             k, kappa)
    assert router.recommend(embeddings=data["Q"], task="new").score == "stack"  # default
    rec = router.recommend(embeddings=data["Q"], task="new", score="s3")
    assert rec.task == "new" and rec.n_inputs == 6 and rec.score == "s3"
    assert rec.u == pytest.approx(u, rel=1e-5)
    by_model = {row.model: row for row in rec.models}
    for m, name in enumerate(MODELS):
        row = by_model[name]
        assert (row.s1, row.s2, row.p, row.s3) == pytest.approx((S1[m], S2[m], p[m], S3[m]),
                                                                rel=1e-5)
        assert row.params is None
    assert [r.model for r in rec.models] == [MODELS[i] for i in np.argsort(-S3, kind="stable")]
    # the decision (eq. 3.8)
    bma = int(np.argmax(mean_acc))
    assert rec.bma == MODELS[bma]
    best = int(np.argmax(S3))
    n_pos = (g > 0.5).sum(0)
    if best == bma:
        assert rec.choice == MODELS[bma] and not rec.fallback
    else:
        expected = exact_prob_beats(6, n_pos[best], p[best], n_pos[bma], p[bma])
        assert rec.p_best_beats_bma == pytest.approx(expected, abs=0.06)
        assert rec.fallback == (rec.p_best_beats_bma <= 0.6)
        assert rec.choice == (MODELS[bma] if rec.fallback else MODELS[best])


@pytest.mark.parametrize("score", ["s1", "s2", "s3", "stack"])
def test_models_list_the_choice_first_then_by_the_deciding_score(fitted, data, score):
    rec = fitted.recommend(embeddings=data["Q"], score=score)
    assert rec.models[0].model == rec.choice
    values = [-np.inf if r.score is None else r.score for r in rec.models[1:]]
    assert values == sorted(values, reverse=True)
    if score != "stack":  # the paper's deciders rank by their own score
        assert [r.score for r in rec.models] == [getattr(r, score) for r in rec.models]
    assert set(rec.to_dict()) >= {"task", "n_inputs", "u", "choice", "bma", "fallback",
                                  "p_choice_beats_bma", "models"}
    if score not in ("s3", "stack"):
        assert not rec.fallback


def test_stack_with_too_few_reference_tasks_says_so_and_uses_s3(fitted, data):
    """3 reference tasks: the stacked switch cannot learn its rule; recommend decides with
    the paper's S3, says so, and prints no gain it did not compute."""
    from lm_router_plugin.router.deciders import MIN_STACK_TASKS

    assert len(fitted.task_names_) < MIN_STACK_TASKS
    rec = fitted.recommend(embeddings=data["Q"], score="stack")
    s3 = fitted.recommend(embeddings=data["Q"], score="s3")
    assert rec.score == "stack" and rec.decided_by == "s3"
    assert rec.choice == s3.choice and rec.fallback == s3.fallback
    assert rec.reason.startswith(f"only {len(fitted.task_names_)} reference tasks, the "
                                 f"stacked switch needs {MIN_STACK_TASKS}")
    assert all(r.stack is None for r in rec.models) and "inf" not in rec.reason
    assert rec.expected_gain_by == "posterior"


def test_recommend_is_reproducible(fitted, data):
    a = fitted.recommend(embeddings=data["Q"]).to_dict()
    b = fitted.recommend(embeddings=data["Q"]).to_dict()
    assert a == b


# -- the fallback decision (eq. 3.8) -----------------------------------------------------
def decide(scores, score, *, bma, tie_break, allowed, eta, n_draws, seed):
    """The registered decider ``score`` on a view whose scores and BMA are given."""
    M = len(tie_break)
    cal = Calibration(u=np.zeros(3), p=np.full((3, M), 0.5), accuracy=np.full((3, M), 0.5),
                      included=np.ones(3, bool), mean_accuracy=np.asarray(tie_break, float))
    view = TaskView(cal=cal, models=[f"m{i}" for i in range(M)], allowed=np.asarray(allowed),
                    g=np.zeros((scores.n, M)), kappa_sim=np.ones((scores.n, 1)),
                    settings=DecisionSettings(eta=eta, n_draws=n_draws, seed=seed))
    view.__dict__.update(scores=scores, bma=bma)  # the cached properties, given
    return deciders.get(score)().decide(view)


def _scores(n, n_pos, p):
    n_pos, p = np.asarray(n_pos), np.asarray(p, dtype=float)
    s2 = n_pos / n
    return TaskScores(n=n, u=0.3, s1=s2, s2=s2, s3=s2 * p + (1 - s2) * (1 - p), p=p,
                      n_pos=n_pos)


def test_fallback_triggers_when_s3_winner_is_not_surely_better():
    # model 1 has the higher S3 (0.52 vs 0.50) but P(it beats model 0 = BMA) is about 0.5
    scores = _scores(50, n_pos=[25, 26], p=[0.6, 0.6])
    assert scores.s3[1] > scores.s3[0]
    exact = exact_prob_beats(50, 26, 0.6, 25, 0.6)
    assert 0.45 < exact < 0.55
    dec = decide(scores, "s3", bma=0, tie_break=np.array([0.9, 0.1]),
                 allowed=np.array([True, True]), eta=0.6, n_draws=1000, seed=0)
    assert dec.best_by_score == 1 and dec.fallback and dec.choice == 0
    assert dec.p_beats_bma == pytest.approx(exact, abs=0.05)
    assert dec.p_beats_bma <= 0.6
    # the same scores with S1 or S2: no fallback test
    for score in ("s1", "s2"):
        dec = decide(scores, score, bma=0, tie_break=np.array([0.9, 0.1]),
                     allowed=np.array([True, True]), eta=0.6, n_draws=1000, seed=0)
        assert not dec.fallback and dec.choice == 1


def test_fallback_does_not_trigger_for_a_clearly_better_model():
    scores = _scores(50, n_pos=[10, 45], p=[0.9, 0.9])
    exact = exact_prob_beats(50, 45, 0.9, 10, 0.9)
    assert exact > 0.999
    dec = decide(scores, "s3", bma=0, tie_break=np.array([0.9, 0.1]),
                 allowed=np.array([True, True]), eta=0.6, n_draws=1000, seed=0)
    assert not dec.fallback and dec.choice == 1 and dec.p_beats_bma > 0.99


def test_fallback_near_eta_uses_seeded_draws():
    # P(beats) about 0.71 (> eta) by the closed form: kept; seeded, so reproducible
    scores = _scores(40, n_pos=[20, 27], p=[0.7, 0.7])
    exact = exact_prob_beats(40, 27, 0.7, 20, 0.7)
    assert 0.69 < exact < 0.74
    decs = [decide(scores, "s3", bma=0, tie_break=np.zeros(2), allowed=np.ones(2, bool),
                   eta=0.6, n_draws=1000, seed=3) for _ in range(2)]
    assert [(d.choice, d.p_beats_bma, d.fallback) for d in decs] == \
        [(decs[1].choice, decs[1].p_beats_bma, decs[1].fallback)] * 2
    assert decs[0].p_beats_bma == pytest.approx(exact, abs=0.05)
    assert not decs[0].fallback and decs[0].choice == 1


def test_decide_best_is_bma_and_disallowed_models():
    scores = _scores(30, n_pos=[25, 29, 5], p=[0.8, 0.8, 0.8])
    dec = decide(scores, "s3", bma=0, tie_break=np.array([0.9, 0.5, 0.1]),
                 allowed=np.array([True, False, True]), eta=0.6, n_draws=1000, seed=0)
    # model 1 has the best S3 but is not allowed; model 0 wins and is the BMA
    assert dec.choice == 0 and dec.best_by_score == 0 and not dec.fallback
    assert dec.p_beats_bma == 0.5


# -- per-instance routing ------------------------------------------------------------------
def _route_table():
    # t1: x1 = e0, x2 = e1; t2: x3 = e2, x4 = e3. a_weak: t1 1 1, t2 0 0 (mean 0.5);
    # b_strong: t1 1 0, t2 1 1 (mean 0.75)
    labels = {"a_weak": [1, 1, 0, 0], "b_strong": [1, 0, 1, 1]}
    rows = [{"task": t, "instance_id": i, "model": m, "input_text": f"{t}{i}",
             "correct": labels[m][n]}
            for m in labels for n, (t, i) in enumerate([("t1", "1"), ("t1", "2"),
                                                        ("t2", "3"), ("t2", "4")])]
    return validate_table(pd.DataFrame(rows)), np.eye(4, dtype=np.float32)


def test_route_tie_rule_hand_case():
    table, X = _route_table()
    router = Router(k=1).fit(table, embeddings=X)
    np.testing.assert_allclose(router.calibration_.mean_accuracy, [0.5, 0.75])
    Q = np.eye(4, dtype=np.float32)[:3]
    decisions = router.route(embeddings=Q)
    # e0: both g = 1 -> tie -> b_strong (higher mean accuracy, although a_weak comes first)
    # e1: a_weak 1 vs b_strong 0;  e2: a_weak 0 vs b_strong 1
    assert [d.model for d in decisions] == ["b_strong", "a_weak", "b_strong"]
    assert [d.index for d in decisions] == [0, 1, 2]
    assert decisions[0].g == {"a_weak": 1.0, "b_strong": 1.0}
    restricted = router.route(embeddings=Q, candidates=["a_weak"])
    assert [d.model for d in restricted] == ["a_weak"] * 3
    assert restricted[1].g == {"a_weak": 1.0}


def test_route_matches_brute_force(data, fitted):
    _, _, _, _, mean_acc = brute_force_calibration(data["X"], data["Y"], data["tasks"], 5, 19)
    prior = np.nan_to_num(np.nanmean(data["Y"], axis=0))
    g = np.array([knn_g(q, data["X"], data["Y"], 5, prior) for q in data["X"]])
    expected = [MODELS[i] for i in np.argmax(g + 0.01 * mean_acc, axis=1)]
    decisions = fitted.route(embeddings=data["X"])
    assert [d.model for d in decisions] == expected
    for d in decisions:
        np.testing.assert_allclose([d.g[m] for m in MODELS], g[d.index], rtol=1e-6)


# -- restricting candidates ----------------------------------------------------------------
def test_candidates_restriction(fitted, data):
    rec = fitted.recommend(embeddings=data["Q"], candidates=["m_small", "m_mid"])
    assert {r.model for r in rec.models} == {"m_small", "m_mid"}
    assert rec.choice in {"m_small", "m_mid"} and rec.bma in {"m_small", "m_mid"}
    single = fitted.recommend(embeddings=data["Q"], candidates=["m_small"])
    assert single.choice == single.bma == "m_small" and not single.fallback


def test_unknown_candidate_did_you_mean(fitted, data):
    message = r"Unknown model 'm_bgi'\. Did you mean: m_big\b.*\? Available: m_big, m_mid, m_small$"
    with pytest.raises(UnknownNameError, match=message):
        fitted.recommend(embeddings=data["Q"], candidates=["m_bgi"])
    with pytest.raises(UnknownNameError, match="Did you mean"):
        fitted.route(embeddings=data["Q"], candidates=["m_smal"])


def test_max_params(fitted, data, caplog):
    info = {"m_big": {"params": 70_000_000_000}, "m_mid": {"params": 13_000_000_000}}
    with caplog.at_level(logging.WARNING, logger="lm_router_plugin"):
        rec = fitted.recommend(embeddings=data["Q"], max_params=13_000_000_000, model_info=info)
    assert [r.model for r in rec.models] == ["m_mid"]  # m_small has no parameter count
    assert rec.models[0].params == 13_000_000_000
    assert rec.choice == "m_mid"
    with pytest.raises(LMRouterError, match="no candidate model is left"):
        fitted.recommend(embeddings=data["Q"], max_params=1_000, model_info=info)
    with pytest.raises(LMRouterError, match="no candidate model is left"):
        fitted.recommend(embeddings=data["Q"], candidates=["m_big"], max_params=13e9,
                         model_info=info)


# -- errors ----------------------------------------------------------------------------------
def test_not_fitted(data, tmp_path):
    for call in (lambda r: r.recommend(embeddings=data["Q"]),
                 lambda r: r.route(embeddings=data["Q"]),
                 lambda r: save_router(r, tmp_path / "r")):
        with pytest.raises(NotFittedError, match="Router is not fitted yet"):
            call(Router())


def test_empty_embeddings(fitted):
    with pytest.raises(LMRouterError, match="task 'x' has no inputs"):
        fitted.recommend(embeddings=np.zeros((0, 8), np.float32), task="x")


def test_empty_prompt_list(fitted):
    with pytest.raises(LMRouterError, match="no inputs"):
        fitted.recommend([], task="x")


def test_unknown_score(fitted, data):
    with pytest.raises(UnknownNameError, match="Unknown decider 's4'. Did you mean: s"):
        fitted.recommend(embeddings=data["Q"], score="s4")


def test_fit_errors(data):
    with pytest.raises(LMRouterError, match="empty"):
        Router().fit(data["table"].iloc[:0], embeddings=np.zeros((0, 8)))
    one_task = data["table"][data["table"]["task"] == "alpha"]
    with pytest.raises(LMRouterError, match="at least 2 tasks"):
        Router().fit(one_task, embeddings=data["X"][:4])
    with pytest.raises(ValueError, match="decision.kappa: must be an integer >= 1, got 0"):
        Router(kappa=0).fit(data["table"], embeddings=data["X"])


@pytest.mark.parametrize("params, message", [
    ({"k": 0}, "predictor.k: must be an integer >= 1, got 0"),
    ({"k": 2.5}, "predictor.k: must be an integer >= 1"),
    ({"task_k": -1}, "predictor.task_k: must be an integer >= 0, got -1"),
    ({"task_k": "abc"}, "predictor.task_k: must be an integer >= 0"),
    ({"sigma": 0}, r"decision.sigma: must be a number in \(0.0, inf\]"),
    ({"sigma": float("nan")}, "decision.sigma"),
    ({"eta": 1.5}, r"decision.eta: must be a number in \[0.0, 1.0\], got 1.5"),
    ({"t": -0.1}, "decision.t: must be a number"),
    ({"n_draws": 0}, "decision.n_draws: must be an integer >= 1"),
    ({"seed": -1}, "decision.seed: must be an integer >= 0"),
    ({"max_seq_length": 0}, "embedder.max_seq_length"),
    ({"predictor_params": {"n_neighbours": 3}}, "knn has no parameter"),
])
def test_every_constant_is_range_checked(params, message):
    from lm_router_plugin.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=message):
        Router(**params).validate_params()


def test_fit_rejects_an_invalid_table(data):
    table = data["table"].copy()
    table.loc[0, "correct"] = 7
    with pytest.raises(LMRouterError, match="correct=7 .* must be 0 or 1"):
        Router().fit(table, embeddings=data["X"])
    dup = pd.concat([data["table"], data["table"].iloc[:1]])
    with pytest.raises(LMRouterError, match="repeats the key"):
        Router().fit(dup, embeddings=data["X"])


# -- persistence -----------------------------------------------------------------------------
def test_save_load_round_trip(fitted, data, tmp_path):
    folder = tmp_path / "routers" / "r1"
    save_router(fitted, folder)
    save_router(fitted, folder)  # overwriting an existing router works
    assert sorted(p.name for p in folder.iterdir()) == ["arrays.npz", "card.json", "state.json"]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp left
    loaded = load_router(folder)
    for name in ("X_", "Y_", "task_of_", "loo_g_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(fitted, name))
    for name in ("u", "p", "accuracy", "mean_accuracy", "task_s1", "task_bandwidths"):
        np.testing.assert_array_equal(getattr(loaded.calibration_, name),
                                      getattr(fitted.calibration_, name))
    assert fitted.calibration_.task_s1.shape == (6, 3, len(MODELS))  # (H, D, M)
    assert loaded.get_params() == fitted.get_params()
    assert loaded.models_ == fitted.models_ and loaded.task_names_ == fitted.task_names_
    assert loaded.recommend(embeddings=data["Q"]).to_dict() == \
        fitted.recommend(embeddings=data["Q"]).to_dict()
    assert loaded.route(embeddings=data["Q"]) == fitted.route(embeddings=data["Q"])
    card = json.loads((folder / "card.json").read_text())
    assert card["models"] == MODELS and card["n_tasks"] == 3 and card["n_reference_inputs"] == 12
    assert card["embedder"] == "precomputed"
    assert card["n_labels"] == 33  # 12 inputs x 3 models - 3 missing


def test_a_router_without_the_task_level_s1_saves_and_loads(data, tmp_path):
    """task_k = 0: no task-level S1 (None), saved as empty arrays and read back as None;
    the stacked switch then reads the kNN's S1 and says nothing of a bandwidth."""
    router = Router(task_k=0).fit(data["table"], embeddings=data["X"])
    assert router.calibration_.task_s1 is None and router.task_level_s1(data["Q"]) is None
    save_router(router, tmp_path / "r0")
    loaded = load_router(tmp_path / "r0")
    assert loaded.calibration_.task_s1 is None and loaded.calibration_.task_bandwidths is None
    allowed = np.ones(len(MODELS), bool)
    assert loaded.stacked_switch(allowed).task_h is None
    assert "task-level" not in loaded.stacked_switch(allowed).describe()


# -- a pluggable predictor -------------------------------------------------------------------
class MeanPredictor(CorrectnessPredictor):
    """g_m(x) = mean label of m over the pool, whatever x."""

    def fit(self, X, Y):
        self.X_, self.Y_ = X, np.asarray(Y, dtype=float)
        return self

    def predict_proba(self, Q):
        return np.tile(np.nanmean(self.Y_, axis=0), (len(Q), 1))


@pytest.fixture
def mean_predictor():
    predictors.register("mean-test", MeanPredictor)
    yield "mean-test"
    predictors.unregister("mean-test")


def test_router_with_registered_predictor(data, mean_predictor):
    router = Router(predictor=mean_predictor).fit(data["table"], embeddings=data["X"])
    X, Y, tasks = data["X"], data["Y"], data["tasks"]
    for i in range(len(X)):
        np.testing.assert_allclose(router.loo_g_[i], np.nanmean(Y[tasks != tasks[i]], axis=0))
    rec = router.recommend(embeddings=data["Q"])
    np.testing.assert_allclose([{r.model: r.s1 for r in rec.models}[m] for m in MODELS],
                               np.nanmean(Y, axis=0), rtol=1e-6)


def test_unknown_predictor(data):
    with pytest.raises(UnknownNameError, match="Unknown predictor 'knm'. Did you mean: knn"):
        Router(predictor="knm").fit(data["table"], embeddings=data["X"])


# -- in-task labelled samples and fit_or_load with a fake embedder -------------------------
FAKE_DIM = 8
FAKE_VECTORS: dict[str, np.ndarray] = {}


def fake_vector(text: str) -> np.ndarray:
    if text in FAKE_VECTORS:
        return FAKE_VECTORS[text]
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return _unit(np.random.default_rng(seed).standard_normal(FAKE_DIM))


@pytest.fixture
def fake_encode(monkeypatch):
    """SentenceTransformerEmbedder.encode replaced by a lookup / hash; records its calls."""
    calls: list[list[str]] = []

    def encode(self, texts):
        calls.append(list(texts))
        return np.stack([fake_vector(t) for t in texts]).astype(np.float32)

    monkeypatch.setattr(SentenceTransformerEmbedder, "encode", encode)
    return calls


def test_labeled_samples_join_the_pool(data, fitted, fake_encode):
    """Two of the new task's docs labelled (instance_id = their position): their embeddings
    and labels join the predictor's pool, and the S scores are for the other docs."""
    labeled = validate_table(pd.DataFrame([
        {"task": "new", "instance_id": str(i), "model": m, "input_text": f"new {i}",
         "correct": int(m == "m_small")} for i in range(2) for m in MODELS]))
    rec = fitted.recommend(embeddings=data["Q"], labeled=labeled)
    assert fake_encode == []  # the docs' own embeddings, nothing embedded again
    assert rec.n_labelled_docs == 2 and rec.n_inputs == len(data["Q"]) - 2
    X = np.vstack([data["X"], data["Q"][:2]])
    Y = np.vstack([data["Y"], [[0, 0, 1], [0, 0, 1]]])
    prior = np.nan_to_num(np.nanmean(data["Y"], axis=0))  # the fitted prior: reference pool
    g = np.array([knn_g(q, X, Y, 5, prior) for q in data["Q"][2:]])
    s1 = {r.model: r.s1 for r in rec.models}
    np.testing.assert_allclose([s1[m] for m in MODELS], g.mean(0), rtol=1e-6)


def _write_store(root, table) -> Store:
    store = Store(root)
    store.write_table(table)
    return store


def test_fit_or_load_embeds_and_fits_once(tmp_path, data, fake_encode):
    store = _write_store(tmp_path / "store", data["table"])
    first = fit_or_load(store, embedder="minilm")
    assert sum(len(c) for c in fake_encode) == 12

    def folders():
        return sorted(p.name for p in store.routers_dir().iterdir() if p.is_dir())

    current = folders()
    assert len(current) == 1
    second = fit_or_load(store, embedder="minilm")
    assert sum(len(c) for c in fake_encode) == 12  # loaded: nothing embedded again
    np.testing.assert_array_equal(first.calibration_.p, second.calibration_.p)
    # decision-only settings: the same fitted router, neither refitted nor deleted
    mtime = (store.routers_dir() / current[0] / "arrays.npz").stat().st_mtime_ns
    decided = fit_or_load(store, embedder="minilm", eta=0.9, sigma=0.2, n_draws=50, seed=3)
    assert folders() == current
    assert (store.routers_dir() / current[0] / "arrays.npz").stat().st_mtime_ns == mtime
    assert (decided.eta, decided.sigma, decided.n_draws, decided.seed) == (0.9, 0.2, 50, 3)
    other = fit_or_load(store, embedder="minilm", k=3)  # a fit parameter: refit, cached vectors
    assert sum(len(c) for c in fake_encode) == 12
    assert other.k == 3
    assert len(folders()) == 2 and set(current) < set(folders())  # both kept (same table)
    # a changed table: refit, the routers of the old table are dropped
    store.write_table(data["table"][data["table"]["model"] != "m_mid"])
    third = fit_or_load(store, embedder="minilm")
    assert third.models_ == ["m_big", "m_small"]
    assert len([p for p in store.routers_dir().iterdir() if p.is_dir()]) == 1


# -- CLI ---------------------------------------------------------------------------------------
@pytest.fixture
def restore_logging():
    """The CLI points the package logger at the runner's stderr; put it back afterwards."""
    logger = logging.getLogger("lm_router_plugin")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
def cli(restore_logging):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture
def cli_store(tmp_path, data):
    store = _write_store(tmp_path / "store", data["table"])
    store.write_models({"m_big": {"params": 70_000_000_000, "cost_per_1m": None},
                        "m_mid": {"params": 7_000_000_000, "cost_per_1m": None},
                        "m_small": {"params": None, "cost_per_1m": None}})
    return store


def test_cli_recommend_empty_store(cli, tmp_path):
    (tmp_path / "p.txt").write_text("What is 2+2?\n")
    result = cli("recommend", "--prompts", tmp_path / "p.txt", "--store", tmp_path / "empty")
    assert result.exit_code == 1
    assert "holds no results yet" in one_error(result)


@pytest.mark.parametrize("args", [[], ["--task", "x", "--prompts", "p.txt"]])
def test_cli_recommend_needs_exactly_one_of_task_and_prompts(cli, tmp_path, args):
    (tmp_path / "p.txt").write_text("What is 2+2?\n")
    args = [tmp_path / "p.txt" if a == "p.txt" else a for a in args]
    result = cli("recommend", *args, "--store", tmp_path / "s")
    assert result.exit_code == 2
    assert "exactly one of --task NAME or --prompts FILE" in result.output


def test_cli_prompts_file_missing(cli, cli_store, tmp_path, fake_encode):
    missing = tmp_path / "nope.jsonl"
    result = cli("-q", "recommend", "--prompts", missing, "--store", cli_store.root)
    assert result.exit_code == 2  # click's usage error, before anything is read
    assert f"'{missing}' does not exist" in result.output and "Traceback" not in result.output


def test_cli_prompts_file_garbled(cli, cli_store, tmp_path, fake_encode):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "What is 2+2?"}\n{"prompt": oops\n')
    result = cli("-q", "recommend", "--prompts", bad, "--store", cli_store.root)
    assert result.exit_code == 1
    assert f"{bad} line 2: not valid JSON" in one_error(result)
    bad.write_text('{"prompt": "a"}\n\n{"text": "b"}\n')
    result = cli("-q", "route", "--prompts", bad, "--store", cli_store.root)
    assert result.exit_code == 1
    assert f"{bad} line 3: no 'prompt' key" in one_error(result)


def test_cli_unknown_candidate(cli, cli_store, tmp_path, fake_encode):
    prompts = tmp_path / "p.txt"
    prompts.write_text("alpha input 0\nsomething new\n")
    result = cli("-q", "recommend", "--prompts", prompts, "--store", cli_store.root,
                 "--candidates", "m_big,m_smal")
    assert result.exit_code == 2
    assert "Unknown model 'm_smal'. Did you mean: m_small" in result.output


def test_cli_max_params_and_bad_value(cli, cli_store, tmp_path, fake_encode):
    prompts = tmp_path / "p.txt"
    prompts.write_text("alpha input 0\nsomething new\n")
    result = cli("-q", "recommend", "--prompts", prompts, "--store", cli_store.root,
                 "--max-params", "13B", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [m["model"] for m in out["models"]] == ["m_mid"]
    assert out["models"][0]["params"] == 7_000_000_000
    result = cli("-q", "recommend", "--prompts", prompts, "--store", cli_store.root,
                 "--max-params", "lots")
    assert result.exit_code == 2
    assert "--max-params" in result.output


def test_cli_recommend_human_output(cli, cli_store, tmp_path, fake_encode):
    prompts = tmp_path / "p.txt"
    prompts.write_text("alpha input 0\nbeta input 1\n")
    result = cli("-q", "recommend", "--prompts", prompts, "--store", cli_store.root)
    assert result.exit_code == 0, result.output
    assert "choice: " in result.stdout and "why: " in result.stdout
    assert all(m in result.stdout for m in MODELS)


# -- end to end with the real packaged MiniLM --------------------------------------------------
E2E_TASKS = {
    "arithmetic": [f"Question: What is {a} plus {b}? Answer with a number." for a, b in
                   [(12, 7), (33, 41), (5, 98), (250, 17), (64, 64), (81, 3)]],
    "translation": [f"Translate the following sentence into French: '{s}'" for s in
                    ["The cat sleeps on the sofa.", "I would like a cup of coffee.",
                     "Where is the train station?", "My brother plays the guitar.",
                     "It is raining today.", "We are going to the beach tomorrow."]],
    "geography": [f"Question: What is the capital city of {c}?" for c in
                  ["Kenya", "Peru", "Norway", "Vietnam", "Canada", "Egypt"]],
}
E2E_SKILLS = {"calc-llm": {"arithmetic"}, "polyglot-llm": {"translation"},
              "atlas-llm": {"geography", "translation"}}


@pytest.fixture(scope="module")
def e2e_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    rows = [{"task": task, "instance_id": str(i), "model": model, "input_text": text,
             "correct": int(task in skills or i % 3 == 0)}
            for task, texts in E2E_TASKS.items() for i, text in enumerate(texts)
            for model, skills in E2E_SKILLS.items()]
    tsv = root / "results.tsv"
    pd.DataFrame(rows).to_csv(tsv, sep="\t", index=False)
    store = Store(root / "store")
    try:
        from lm_router_plugin.registry import adapters
        adapters.get("table")
        table_adapter = True
    except (ImportError, LMRouterError):
        table_adapter = False
    if table_adapter:
        from lm_router_plugin.store.ingest import ingest
        report = ingest("table", [tsv], store)
        assert report.n_added == len(rows)
    else:  # the table adapter is not there yet
        store.write_table(validate_table(pd.DataFrame(rows)))
    return store


@pytest.fixture
def count_real_encode(monkeypatch):
    calls: list[int] = []
    original = SentenceTransformerEmbedder.encode

    def encode(self, texts):
        calls.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(SentenceTransformerEmbedder, "encode", encode)
    return calls


@pytest.mark.slow
def test_cli_end_to_end_with_minilm(cli, e2e_store, tmp_path, count_real_encode, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    new_prompts = [f"Question: What is {a} plus {b}? Answer with a number."
                   for a, b in [(3, 4), (120, 45), (9, 9), (77, 18)]]
    prompts = tmp_path / "new.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in new_prompts))
    args = ["recommend", "--prompts", prompts, "--store", e2e_store.root, "--embedder",
            "minilm", "--json"]
    result = cli("-q", *args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) >= {"task", "n_inputs", "u", "choice", "bma", "fallback",
                        "p_choice_beats_bma", "models"}
    assert out["task"] == str(prompts) and out["n_inputs"] == 4
    assert isinstance(out["fallback"], bool) and 0 <= out["p_choice_beats_bma"] <= 1
    assert [set(m) for m in out["models"]] == \
        [{"model", "s1", "s2", "s3", "p", "params", "stack", "score"}] * 3
    # the default decision (the stacked switch, or S3 below its reference-task minimum)
    assert out["score"] == "stack" and out["models"][0]["model"] == out["choice"]
    s1 = {m["model"]: m["s1"] for m in out["models"]}
    # arithmetic prompts sit next to the arithmetic references, where only calc-llm is right
    assert s1["calc-llm"] == 1.0 and max(s1["polyglot-llm"], s1["atlas-llm"]) < 0.5
    assert 18 + 4 == sum(count_real_encode)  # references + new prompts, each embedded once

    count_real_encode.clear()
    again = cli("-q", *args)
    assert again.exit_code == 0 and json.loads(again.stdout) == out
    assert count_real_encode == []  # second run: router loaded, prompts cached

    route = cli("-q", "route", "--prompts", prompts, "--store", e2e_store.root, "--embedder",
                "minilm", "--json")
    assert route.exit_code == 0, route.output
    lines = [json.loads(line) for line in route.stdout.splitlines()]
    assert [line["index"] for line in lines] == [0, 1, 2, 3]
    assert all(set(line) == {"index", "model", "g"} for line in lines)
    assert all(set(line["g"]) == set(E2E_SKILLS) for line in lines)
    assert [line["model"] for line in lines] == ["calc-llm"] * 4
    assert count_real_encode == []
    plain = cli("-q", "route", "--prompts", prompts, "--store", e2e_store.root, "--embedder",
                "minilm")
    assert plain.stdout.splitlines() == [f"{i}\tcalc-llm" for i in range(4)]



# -- validation before any work (exit 2 bad usage, 1 bad data; nothing embedded or fitted) --
@pytest.mark.parametrize("config, message", [
    ("predictor: {k: 0}", "predictor.k: must be an integer >= 1, got 0"),
    ("decision: {sigma: 0}", "decision.sigma: must be a number in (0.0, inf]"),
    ("decision: {eta: 1.5}", "decision.eta: must be a number in [0.0, 1.0], got 1.5"),
    ("decision: {n_draws: 0}", "decision.n_draws: must be an integer >= 1"),
    ("predictor: {params: {n_neighbours: 3}}", "knn has no parameter"),
    ("decision: {etta: 0.5}", "unknown key in 'decision' 'etta'. Did you mean 'eta'?"),
    ("decisions: {eta: 0.5}", "unknown section 'decisions'. Did you mean 'decision'?"),
    ("decision: [1, 2]", "'decision' must be a mapping"),
    ("decision: {eta: [", "not valid YAML"),
    (None, "--max-params: cannot read a parameter count from 'abc'"),
])
@pytest.mark.parametrize("command", ["recommend", "route", "evaluate"])
def test_cli_bad_settings_are_usage_errors(cli, cli_store, tmp_path, fake_encode, config,
                                           message, command):
    (tmp_path / "p.txt").write_text("What is 2+2?\n")
    prompts = [] if command == "evaluate" else ["--prompts", tmp_path / "p.txt"]
    if config is None:
        args = ["--max-params", "abc"]
    else:
        (tmp_path / "c.yaml").write_text(config + "\n")
        args = ["--config", tmp_path / "c.yaml"]
    result = cli(command, *prompts, *args, "--store", cli_store.root)
    assert result.exit_code == 2, result.output
    assert message in result.output
    if config is not None and "YAML" not in message:
        assert str(tmp_path / "c.yaml") in result.output or "decision." in message \
            or "predictor." in message or "knn" in message
    assert "Traceback" not in result.output
    assert fake_encode == []  # nothing embedded
    assert not cli_store.routers_dir().exists() or not any(cli_store.routers_dir().iterdir())


def test_cli_unknown_decider_and_predictor_are_usage_errors(cli, cli_store, tmp_path,
                                                            fake_encode):
    (tmp_path / "p.txt").write_text("What is 2+2?\n")
    base = ["recommend", "--prompts", tmp_path / "p.txt", "--store", cli_store.root]
    result = cli(*base, "--score", "stak")
    assert result.exit_code == 2 and "Unknown decider 'stak'. Did you mean: stack" in \
        result.output
    result = cli(*base, "--predictor", "knnn")
    assert result.exit_code == 2 and "Unknown predictor 'knnn'. Did you mean: knn" in \
        result.output
    result = cli("ingest", "lm-evl", tmp_path, "--store", cli_store.root)
    assert result.exit_code == 2 and "Unknown adapter 'lm-evl'" in result.output
    assert fake_encode == []


def test_cli_candidate_typo_is_reported_before_the_task_is_built(cli, cli_store, fake_encode,
                                                                monkeypatch):
    import lm_router_plugin.task.docs as tasks

    def boom(*args, **kwargs):
        raise AssertionError("the lm-eval task must not be built before the checks")

    monkeypatch.setattr(tasks, "task_prompts", boom)
    result = cli("recommend", "--task", "anything", "--candidates", "m_bigg",
                 "--store", cli_store.root)
    assert result.exit_code == 2
    assert "Unknown model 'm_bigg'. Did you mean: m_big" in result.output
    assert fake_encode == []
    result = cli("recommend", "--task", "anything", "--max-params", "1M",
                 "--store", cli_store.root)
    assert result.exit_code == 1 and "no candidate model is left" in one_error(result)


def test_library_recommend_matches_the_cli(cli, cli_store, tmp_path, fake_encode):
    from lm_router_plugin.api import recommend

    (tmp_path / "p.txt").write_text("alpha input 0\nbeta input 1\n")
    (tmp_path / "c.yaml").write_text("predictor: {k: 3}\n")
    rec = recommend(cli_store.root, prompts_file=tmp_path / "p.txt",
                    settings={"predictor": {"k": 3}})
    assert recommend(cli_store.root, prompts_file=tmp_path / "p.txt",
                     settings=tmp_path / "c.yaml").to_dict() == rec.to_dict()
    result = cli("recommend", "--prompts", tmp_path / "p.txt", "--config", tmp_path / "c.yaml",
                 "--json", "--store", cli_store.root)
    assert json.loads(result.stdout) == json.loads(json.dumps(rec.to_dict()))


def test_labeled_rows_use_the_stored_thresholds(tmp_path):
    """--labeled rows get the eta the store's rows were labelled with, not the defaults."""
    from lm_router_plugin.api import labelling_thresholds

    store = Store(tmp_path / "s")
    table = pd.DataFrame({"task": ["a", "a"], "instance_id": ["1", "2"], "model": ["m", "m"],
                          "metric": ["f1_score", "f1_score"], "score": [0.5, 0.9],
                          "threshold": [0.8, 0.8], "correct": [0, 1]})
    store.write_table(validate_table(table))
    rule = labelling_thresholds(store).rule("new_task", "f1_score")
    assert rule.threshold == 0.8 and rule.apply(0.7) == (0.8, 0)
    yaml_file = tmp_path / "t.yaml"
    yaml_file.write_text("metrics:\n  f1_score: 0.3\n")
    assert labelling_thresholds(store, yaml_file).rule("new_task", "f1_score").threshold == 0.3


def test_plan_note_and_header_count_the_candidates_and_the_labelled_docs(fitted, data, capsys):
    """With --candidates, the plan's coverage counts the candidates' labels only (a model
    left out has none); the header says how many inputs are unlabelled and labelled."""
    from lm_router_plugin.cli.display import print_recommendation
    from lm_router_plugin.task.labels import LabelPlan

    lab = pd.DataFrame([{"task": "prompts", "instance_id": str(i), "model": m, "correct": 1}
                        for i in (0, 1) for m in ("m_big", "m_mid")])
    plan = LabelPlan(task="prompts", kind="prompts", include_path=None, limit=None,
                     leaves=[("prompts", 6)], n_docs=6, docs=[0, 1, 2])
    rec = fitted.recommend(embeddings=data["Q"], labeled=lab, plan=plan,
                           candidates=["m_big", "m_mid"])
    assert rec.plan_note.startswith("2 of the plan's 3 docs have labels (from 2 to 2 of 2 "
                                    "models each)")
    print_recommendation(rec)
    assert "task prompts: 4 unlabelled inputs (+ 2 labelled)," in capsys.readouterr().out


@pytest.mark.parametrize("shape", [(8,), (2, 7), (2, 0)])
def test_embeddings_of_the_wrong_shape_are_one_error(fitted, data, shape):
    """Query embeddings must be (n, dim) with the fitted references' dim; reference ones
    (n, dim >= 1): one LMRouterError, not a numpy traceback."""
    bad = np.ones(shape, np.float32)
    with pytest.raises(LMRouterError, match="expected"):
        fitted.route(embeddings=bad)
    with pytest.raises(LMRouterError, match="expected"):
        fitted.recommend(embeddings=bad)
    with pytest.raises(LMRouterError, match=r"expected \(n, dim\) with dim >= 1"):
        Router().fit(data["table"], embeddings=np.zeros((len(data["X"]), 0), np.float32))
