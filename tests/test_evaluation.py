"""Strict leave-one-task-out evaluation, checked two ways:

- against a loop that refits a Router from scratch without each held-out task (every
  per-task output: scores, p, u, choices, BMA, MoE, the in-task-label sweep), on synthetic
  data with missing labels and on the lm-eval runs in examples/runs embedded with MiniLM;
- against an independent plain-loop implementation of METHOD.md's strict protocol (argsort,
  no code from the package's scoring path).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lm_router_plugin.evaluation.protocol import evaluate, regroup_tasks
from lm_router_plugin.router.deciders import StackedSwitch
from lm_router_plugin.router.pool import build_pool
from lm_router_plugin.router.router import Router
from lm_router_plugin.store.schema import validate_table

K, KAPPA, SIGMA, T = 5, 19, 0.09, 0.5


def make_data(seed: int = 0, n_tasks: int = 7, n_models: int = 4, n_per_task: int = 40,
              missing: float = 0.05):
    """Clustered synthetic embeddings (one cluster per task) and per-task model skills."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_tasks, 12))
    skill = rng.uniform(0.1, 0.95, size=(n_tasks, n_models))
    rows, vectors = [], {}
    for d in range(n_tasks):
        for i in range(n_per_task):
            v = centers[d] + 0.6 * rng.normal(size=12)
            vectors[(f"task{d}", str(i))] = v / np.linalg.norm(v)
            for m in range(n_models):
                if rng.random() < missing:
                    continue
                rows.append({"task": f"task{d}", "instance_id": str(i), "model": f"model{m}",
                             "correct": int(rng.random() < skill[d, m]),
                             "input_text": f"text {d} {i}"})
    return validate_table(pd.DataFrame(rows)), vectors


def strict_brute_force(table: pd.DataFrame, vectors: dict) -> dict:
    """METHOD.md with plain loops: for held-out d, each other task z is calibrated from the
    pool without d and z; d is scored from the pool without d."""
    models = sorted(table["model"].unique())
    tasks = sorted(table["task"].unique())
    data = {}
    for task in tasks:
        sub = table[table["task"] == task]
        ids = sorted(sub["instance_id"].unique())
        Y = np.full((len(ids), len(models)), np.nan)
        for r in sub.itertuples():
            Y[ids.index(r.instance_id), models.index(r.model)] = r.correct
        data[task] = (np.array([vectors[(task, i)] for i in ids]), Y)

    def predict(X_query, X_ref, Y_ref, prior):
        g = np.zeros((len(X_query), len(models)))
        dists = np.zeros(len(X_query))
        for q, x in enumerate(X_query):
            sims = X_ref @ x
            order = np.argsort(-sims, kind="stable")
            dists[q] = np.mean(1 - sims[order[:KAPPA]])
            for m in range(len(models)):
                labels = [Y_ref[j, m] for j in order[:K] if not np.isnan(Y_ref[j, m])]
                g[q, m] = np.mean(labels) if labels else prior[m]
        return g, dists

    def fit_on(pool_tasks, task):
        X_ref = np.vstack([data[t][0] for t in pool_tasks])
        Y_ref = np.vstack([data[t][1] for t in pool_tasks])
        prior = np.nan_to_num(np.nanmean(Y_ref, axis=0))
        return predict(data[task][0], X_ref, Y_ref, prior)

    def true_p(g, y):
        return np.array([np.mean((g[:, m] > T)[~np.isnan(y[:, m])] == (y[~np.isnan(y[:, m]), m] == 1))
                         for m in range(len(models))])

    out = {}
    for task in tasks:
        others = [t for t in tasks if t != task]
        u_z, p_z, acc_z = [], [], []
        for z in others:
            g_z, d_z = fit_on([t for t in others if t != z], z)
            u_z.append(d_z.mean())
            p_z.append(true_p(g_z, data[z][1]))
            acc_z.append(np.nanmean(data[z][1], axis=0))
        g, dists = fit_on(others, task)
        u = dists.mean()
        w = np.exp(-(u - np.array(u_z)) ** 2 / (2 * SIGMA**2))
        p_hat = (w[:, None] * np.array(p_z)).sum(0) / w.sum()
        s2 = (g > T).mean(0)
        mean_acc = np.mean(acc_z, axis=0)
        out[task] = {"s1": g.mean(0), "s2": s2, "s3": s2 * p_hat + (1 - s2) * (1 - p_hat),
                     "p": p_hat, "true_p": true_p(g, data[task][1]), "u": u,
                     "acc": np.nanmean(data[task][1], axis=0), "bma": int(np.argmax(mean_acc)),
                     "models": models}
    return out


def refit_loop(table: pd.DataFrame, X: np.ndarray, *, alphas=(), repeats=0, **params) -> dict:
    """Per held-out task, a Router fitted from scratch on the other tasks: its recommend for
    each score, its per-input route, and (for the label sweep) its recommend with labels."""
    pool = build_pool(table)
    out = {}
    for d, task in enumerate(pool.task_names):
        keep = pool.task_of != d
        router = Router(**params).fit(table[table["task"] != task], embeddings=X[keep])
        rows = np.flatnonzero(~keep)
        y = pool.Y[rows]
        labelled = [m for j, m in enumerate(pool.models) if (~np.isnan(y[:, j])).any()]
        recs = {s: router.recommend(embeddings=X[rows], score=s, candidates=labelled)
                for s in ("s1", "s2", "s3", "stack")}
        routes = router.route(embeddings=X[rows], candidates=labelled)
        out[task] = {"recs": recs, "routes": [r.model for r in routes], "rows": rows}
    return out


def _embeddings(pool, vectors):
    return np.array([vectors[(pool.task_names[t], i)] for t, i in zip(pool.task_of,
                                                                      pool.instance_ids)],
                    dtype=np.float32)


def recommend_with_labels(router, pool, X, d, lab, score, candidates):
    """A Router's recommend for held-out task d given its rows ``lab`` (pool row numbers)
    as labelled docs: the task's docs are its rows in pool order, a label's instance_id is
    its doc position (as for a prompts file)."""
    rows = np.flatnonzero(pool.task_of == d)
    position = {r: i for i, r in enumerate(rows)}
    labeled = pd.DataFrame([{"task": pool.task_names[d], "instance_id": str(position[r]),
                             "model": m, "correct": pool.Y[r, j]}
                            for r in lab for j, m in enumerate(pool.models)
                            if not np.isnan(pool.Y[r, j])])
    return router.recommend(embeddings=X[rows], score=score, candidates=candidates,
                            labeled=labeled)


@pytest.fixture(scope="module")
def evaluated():
    table, vectors = make_data()
    X = _embeddings(build_pool(table), vectors)
    result = evaluate(table, embeddings=X, alphas=[0, 0.1, 0.3], repeats=3)
    return table, vectors, X, result


def assert_matches_refit(table, X, result, **params):
    """Every per-task output of ``result`` equals a Router refitted without the task."""
    expected = refit_loop(table, X, **params)
    pool = build_pool(table)
    assert [t["task"] for t in result.per_task] == pool.task_names
    for record in result.per_task:
        exp = expected[record["task"]]
        s3 = exp["recs"]["s3"]
        assert record["u"] == pytest.approx(s3.u, rel=1e-6)
        for row in s3.models:
            got = record["scores"][row.model]
            for key in ("s1", "s2", "s3", "p"):
                assert got[key] == pytest.approx(getattr(row, key), rel=1e-6, abs=1e-9), \
                    (record["task"], row.model, key)
        for score in ("s1", "s2", "s3", "stack"):
            rec = exp["recs"][score]
            assert record[score]["model"] == rec.choice, (record["task"], score)
            assert record[score].get("fallback", False) == rec.fallback
        assert record["bma"]["model"] == s3.bma
        y = pool.Y[exp["rows"]]
        picked = [y[i, pool.models.index(m)] for i, m in enumerate(exp["routes"])]
        assert record["moe"]["acc"] == pytest.approx(np.nanmean(picked))


def test_every_task_matches_a_router_refitted_without_it(evaluated):
    table, _, X, result = evaluated
    assert_matches_refit(table, X, result)


@pytest.mark.parametrize("params", [{"k": 3, "kappa": 7, "eta": 0.55}, {"k": 8, "kappa": 4}])
def test_refit_match_with_other_constants_and_missing_labels(params):
    table, vectors = make_data(seed=3, n_tasks=5, missing=0.3)
    X = _embeddings(build_pool(table), vectors)
    result = evaluate(table, embeddings=X, router=Router(**params), n_bootstrap=0)
    assert_matches_refit(table, X, result, **params)


def test_a_pool_smaller_than_kappa_matches_the_refit():
    """15 reference inputs in all (kappa = 19): the held-out task's u is taken over the
    neighbours there are, as in a Router fitted without it; the label rows run too."""
    table, vectors = make_data(seed=6, n_tasks=5, n_models=3, n_per_task=3, missing=0.0)
    X = _embeddings(build_pool(table), vectors)
    result = evaluate(table, embeddings=X, label_counts=[2, 50], repeats=2, n_bootstrap=0)
    assert_matches_refit(table, X, result)
    assert {"stack@2labels", "stack@50labels", "s2@2labels"} <= set(result.rows)


@pytest.mark.parametrize("setting", [("alpha", 0.2), ("labels", 12)])
def test_label_rows_match_recommend_with_labels(evaluated, setting):
    """X@alpha / X@Nlabels rows of every decider: the same random labels of d given to a
    Router fitted without d (recommend(labeled=...), the user's path) make the same choice,
    repeat by repeat."""
    table, _, X, _ = evaluated
    kind, value = setting
    result = evaluate(table, embeddings=X, repeats=2, n_bootstrap=0,
                      alphas=[value] if kind == "alpha" else [0.0],
                      label_counts=[value] if kind == "labels" else [])
    pool = build_pool(table)
    scores = ("s1", "s2", "s3", "stack")
    accs = {s: [] for s in scores}
    routers = {}
    for rep in range(2):
        tag = int(round(value * 1e6)) if kind == "alpha" else 10**9 + value
        rng = np.random.default_rng([0, rep, tag])  # evaluate's seeding
        per_score = {s: [] for s in scores}
        for d, task in enumerate(pool.task_names):
            rows = np.flatnonzero(pool.task_of == d)
            n_lab = min(max(1, int(value * len(rows))), 50) if kind == "alpha" else value
            lab = np.sort(rng.choice(rows, size=n_lab, replace=False))
            rest = np.setdiff1d(rows, lab)
            if task not in routers:
                keep = pool.task_of != d
                routers[task] = Router().fit(table[table["task"] != task], embeddings=X[keep])
            acc = np.nanmean(pool.Y[rest], axis=0)
            cands = [m for j, m in enumerate(pool.models) if not np.isnan(acc[j])]
            for score in scores:
                rec = recommend_with_labels(routers[task], pool, X, d, lab, score, cands)
                assert rec.n_labelled_docs == n_lab and rec.n_inputs == len(rest)
                per_score[score].append(acc[pool.models.index(rec.choice)])
        for score in accs:
            accs[score].append(np.mean(per_score[score]))
    suffix = f"@{value:g}" if kind == "alpha" else f"@{value}labels"
    for score in accs:
        assert result.rows[f"{score}{suffix}"]["acc"] == pytest.approx(np.mean(accs[score])), \
            score


def test_scores_match_plain_loop_brute_force(evaluated):
    table, vectors, _, result = evaluated
    expected = strict_brute_force(table, vectors)
    for record in result.per_task:
        exp = expected[record["task"]]
        assert record["u"] == pytest.approx(exp["u"], abs=1e-5)
        for j, model in enumerate(exp["models"]):
            got = record["scores"][model]
            for key in ("s1", "s2", "s3", "p", "true_p", "acc"):
                assert got[key] == pytest.approx(exp[key][j], abs=1e-5), (record["task"], model, key)
        assert record["bma"]["model"] == exp["models"][exp["bma"]]
        best = int(np.nanargmax(exp["acc"]))
        assert record["oracle"]["acc"] == pytest.approx(exp["acc"][best], abs=1e-6)


def test_held_out_labels_do_not_reach_the_other_tasks(evaluated):
    """Flipping every label of one task changes no output of any *other* held-out task's
    calibration-dependent numbers... except through that task itself: scoring task d must
    not depend on d's labels at all (p, scores and choices of d are unchanged)."""
    table, _, X, result = evaluated
    flipped = table.copy()
    target = "task2"
    mask = flipped["task"] == target
    flipped.loc[mask, "correct"] = 1 - flipped.loc[mask, "correct"]
    again = evaluate(flipped, embeddings=X, n_bootstrap=0)
    before = next(t for t in result.per_task if t["task"] == target)
    after = next(t for t in again.per_task if t["task"] == target)
    for model, got in after["scores"].items():
        for key in ("s1", "s2", "s3", "p"):
            assert got[key] == pytest.approx(before["scores"][model][key])
    for row in ("s1", "s2", "s3", "stack"):
        assert after[row]["model"] == before[row]["model"], row


def test_rows_are_task_averages_with_gaps_and_intervals(evaluated):
    _, _, _, result = evaluated
    for name in ("s1", "s2", "s3", "s3_true_p", "bma", "oracle"):
        accs = [t[name]["acc"] for t in result.per_task]
        row = result.rows[name]
        assert row["acc"] == pytest.approx(np.mean(accs))
        low, high = row["acc_ci"]
        assert low <= row["acc"] <= high
        assert row["wins"] + row["ties"] + row["losses"] == result.n_tasks
        gains = [t[name]["acc"] - t["bma"]["acc"] for t in result.per_task]
        gaps = [t["oracle"]["acc"] - t["bma"]["acc"] for t in result.per_task]
        assert row["gap_closed"] == pytest.approx(sum(gains) / sum(gaps))
        assert row["wins"] == sum(g > 1e-12 for g in gains)
    assert result.rows["bma"]["gap_closed"] == 0 and result.rows["oracle"]["gap_closed"] == 1
    assert result.rows["bma"]["ties"] == result.n_tasks
    assert result.rows["oracle"]["ratio_to_best"] == pytest.approx(1.0)
    assert result.rows["oracle"]["rank"] == pytest.approx(1.0)
    assert result.rows["bma"]["pct_bma"] == pytest.approx(1.0)
    assert 0 < result.p_mae < 1 and 0 < result.predictor_accuracy < 1


def test_split_half_oracle_by_hand():
    """The split-half Oracle is chosen on one half and scored on the other: on a task where
    two models are equally good but each is right on a different half of the items, the
    per-task Oracle is optimistic and the split-half one is not."""
    from lm_router_plugin.evaluation.protocol import _HeldOut, _TaskScorer

    class Stub:  # only what split_halves reads
        router = Router(seed=0)

    scorer = _TaskScorer(Stub(), np.ones(2, bool), np.full(2, np.nan), ["a", "b"], None, 200)
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=(40, 2)).astype(float)  # two coin-flip models
    halves, on_b, oracle_half = scorer.split_halves(y, np.ones(2, bool), np.zeros(2), 0)
    assert halves.shape == (200, 40) and (halves.sum(1) == 20).all()
    full_oracle = np.nanmean(y, axis=0).max()
    # choosing on half A carries no information about half B for coin flips: the
    # split-half Oracle scores about the mean model, not the best of two.
    assert oracle_half < full_oracle
    assert oracle_half == pytest.approx(np.mean(on_b), abs=0.03)
    assert _HeldOut is not None


def test_split_half_rows_and_determinism(evaluated):
    table, _, X, result = evaluated
    for t in result.per_task:
        assert 0 <= t["oracle"]["acc_half"] <= t["oracle"]["acc"] + 0.25
    again = evaluate(table, embeddings=X, alphas=[0, 0.1, 0.3], repeats=3)
    assert again.rows == result.rows


def test_alpha_sweep_is_seeded_and_labels_help(evaluated):
    table, _, X, result = evaluated
    for key in ("s1@0.1", "s3@0.1", "few_shot@0.1", "s1@0.3", "s3@0.3", "few_shot@0.3"):
        assert key in result.rows and result.rows[key]["acc_std"] >= 0
    acc_by_alpha = [e["predictor_accuracy"] for e in result.alpha_sweep]
    assert acc_by_alpha[-1] > result.predictor_accuracy


def test_label_counts_rows():
    table, vectors = make_data(seed=1)
    X = _embeddings(build_pool(table), vectors)
    result = evaluate(table, embeddings=X, label_counts=[5, 10], repeats=2, n_bootstrap=0)
    assert {"s1@5labels", "s3@10labels", "few_shot@10labels"} <= set(result.rows)
    assert [e["mean_labels"] for e in result.alpha_sweep] == [5, 10]


def test_candidates_and_compare_to(evaluated):
    table, _, X, _ = evaluated
    info = {"model0": {"params": 7e9}, "model1": {"params": 13e9}, "model2": {"params": 70e9},
            "model3": {"params": 1e9}}
    result = evaluate(table, embeddings=X, max_params=13_000_000_000, compare_to="model2",
                      model_info=info, n_bootstrap=0)
    assert result.n_models == 3
    for record in result.per_task:
        for name in ("s1", "s2", "s3", "bma", "oracle"):
            assert record[name]["model"] != "model2"
        assert record["compare_to"]["model"] == "model2"
    assert result.rows["compare_to"]["params"] == pytest.approx(70e9)


def test_a_task_without_results_for_the_candidates_is_left_out_and_logged(caplog):
    """A --candidates subset that did not run a task: that task is not scored (it stays a
    reference task), the log and the settings name it; with labels too."""
    table, vectors = make_data(seed=2, n_tasks=6)
    gap = (table["task"] == "task3") & table["model"].isin(["model1", "model2"])
    table = table[~gap].reset_index(drop=True)
    X = _embeddings(build_pool(table), vectors)
    with caplog.at_level("WARNING"):
        result = evaluate(table, embeddings=X, candidates=["model1", "model2"],
                          label_counts=[5], repeats=1, n_bootstrap=0)
    assert "1 of 6 tasks have no result for any candidate" in caplog.text
    assert result.n_tasks == 5 and result.settings["tasks_without_candidates"] == ["task3"]
    assert "task3" not in [t["task"] for t in result.per_task]
    assert all(len(t["label_draws"]) == 1 for t in result.per_task)


def test_too_few_tasks():
    table, vectors = make_data(n_tasks=2)
    X = _embeddings(build_pool(table), vectors)
    with pytest.raises(Exception, match="at least 3 tasks"):
        evaluate(table, embeddings=X)


@pytest.mark.slow
def test_refit_match_on_real_lm_eval_runs_with_minilm(tmp_path):
    """Small real data: the lm-eval runs in examples/runs (4 models x 6 toy tasks, written
    by lm-eval), embedded with the packaged all-MiniLM-L6-v2."""
    from pathlib import Path

    from lm_router_plugin.store.ingest import read_rows
    from lm_router_plugin.store.store import Store

    runs = Path(__file__).resolve().parents[1] / "examples" / "runs"
    table, _ = read_rows("lm-eval", [runs])
    table = validate_table(table)
    router = Router()
    X = router.embed(build_pool(table).texts, Store(tmp_path / "store"))
    result = evaluate(table, embeddings=X, n_bootstrap=0)
    assert_matches_refit(table, X, result)


def test_regroup_by_side_table():
    table, _ = make_data(n_tasks=2, n_per_task=6)
    side = pd.DataFrame({"instance_id": [str(i) for i in range(6)],
                         "src": ["a", "a", "b", "b", "c", "c"]})
    regrouped = regroup_tasks(table, "src", side)
    assert sorted(regrouped["task"].unique()) == ["a", "b", "c"]
    assert len(regrouped) == len(table)
    with pytest.raises(KeyError, match="Did you mean"):
        regroup_tasks(table, "srcc", side)


def test_correlations_match_scipy():
    from scipy import stats

    from lm_router_plugin.evaluation.protocol import _average_ranks, _correlations

    rng = np.random.default_rng(0)
    for _ in range(50):
        x = rng.integers(0, 5, size=12).astype(float)  # with ties
        y = rng.random(12)
        assert np.allclose(_average_ranks(x), stats.rankdata(x))
        pearson, spearman = _correlations(x, y)
        assert pearson == pytest.approx(stats.pearsonr(x, y)[0])
        assert spearman == pytest.approx(stats.spearmanr(x, y)[0])
    assert np.isnan(_correlations(np.ones(4), rng.random(4))[0])


def test_uncertainty_check_matches_a_router_refitted_without_the_task(evaluated):
    """The zero-label uncertainty check of each held-out task is what the posterior of a
    Router refitted without it says and gets: coverage of its 90% intervals, P(best) of its
    top candidate, the expected gain of 10 more labels against 10 more drawn with
    evaluate's seeding; the stacked switch's P is recommend's."""
    from lm_router_plugin.router.estimate import estimate
    from lm_router_plugin.router.scores import argmax_with_ties
    from lm_router_plugin.task.labels import stack_gain_verdict

    table, _, X, result = evaluated
    pool = build_pool(table)
    assert result.uncertainty[0]["labels"] == 0
    assert result.uncertainty[0]["n"] == len(pool.task_names)
    checked_stack = 0
    for d, task in enumerate(pool.task_names):
        rows = np.flatnonzero(pool.task_of == d)
        keep = pool.task_of != d
        router = Router().fit(table[table["task"] != task], embeddings=X[keep])
        acc = np.nanmean(pool.Y[rows], 0)
        allowed = ~np.isnan(acc)
        est = estimate(router.calibration_, router.predict_correctness(X[rows]), allowed)
        low, high = est.interval(0.9).T
        got = result.per_task[d]["uncertainty"]
        assert got["coverage"] == pytest.approx(np.mean(((acc >= low) & (acc <= high))[allowed]))
        rng = np.random.default_rng([0, 271828, d])
        p_best = est.p_best(rng, 1000)
        top = int(np.argmax(np.where(allowed, p_best, -1)))
        assert got["p_best_top"] == pytest.approx(p_best[top])
        assert got["top_is_best"] == float(acc[top] >= np.nanmax(acc) - 1e-12)
        more = np.sort(rng.choice(rows, size=10, replace=False))
        rest = np.setdiff1d(rows, more)
        acc2 = np.nanmean(pool.Y[rest], 0)
        later = estimate(router.calibration_, router.predict_correctness(X[rest]), allowed,
                         lab_g=router.predict_correctness(X[more]), lab_y=pool.Y[more])
        # ties (means clipped at 1) go to the higher mean reference accuracy, as everywhere
        tie = router.calibration_.mean_accuracy
        before = argmax_with_ties(np.where(allowed, est.mean, -np.inf), tie)
        after = argmax_with_ties(np.where(allowed, later.mean, -np.inf), tie)
        assert got["gain_realised"] == pytest.approx(acc2[after] - acc2[before])
        assert got["gain_predicted"] == pytest.approx(est.expected_gain(10, rng, 1000))
        # the stacked switch's expected gain of those 10 labels and what they gave it
        allowed2 = ~np.isnan(acc2)
        assert got["stack_gain_predicted"] == pytest.approx(
            stack_gain_verdict(router, allowed2, 0)[0]["10"])
        cands2 = [m for m, a in zip(pool.models, allowed2) if a]
        after = pool.models.index(
            recommend_with_labels(router, pool, X, d, more, "stack", cands2).choice)
        before = pool.models.index(result.per_task[d]["stack"]["model"])
        assert got["stack_gain_realised"] == pytest.approx(acc2[after] - acc2[before])
        if "stack_p" in got:
            checked_stack += 1
            rec = router.recommend(embeddings=X[rows], score="stack",
                                   candidates=[m for m, a in zip(pool.models, allowed) if a])
            assert got["stack_p"] == pytest.approx(rec.p_best_beats_bma)
    summary = result.uncertainty[0]
    assert summary["coverage"] == pytest.approx(
        np.mean([t["uncertainty"]["coverage"] for t in result.per_task]))
    assert summary["stack_n"] == checked_stack
    # one entry per label setting of the sweep, pooled over repeats
    assert [e.get("alpha") for e in result.uncertainty[1:]] == [0.1, 0.3]
    assert all(e["n"] == 3 * len(pool.task_names) for e in result.uncertainty[1:])


def test_label_rows_have_split_half_gaps_and_intervals_over_tasks(evaluated):
    """Label rows: scored on half-splits of the unlabelled items against the split-half
    Oracle, with bootstrap intervals over tasks of each task's repeat-averaged accuracy and
    gain over BMA (seeded: the same on a second run)."""
    table, _, X, _ = evaluated
    result = evaluate(table, embeddings=X, label_counts=[5], repeats=3, n_bootstrap=200)
    again = evaluate(table, embeddings=X, label_counts=[5], repeats=3, n_bootstrap=200)
    for name in ("s1", "s2", "s3", "few_shot", "stack"):
        row = result.rows[f"{name}@5labels"]
        low, high = row["gain_over_bma_ci"]
        assert low <= row["gain_over_bma"] <= high
        low, high = row["acc_ci"]
        assert low <= row["acc"] <= high
        assert 0 <= row["acc_half"] <= 1 and row["gap_closed_half"] == row["gap_closed_half"]
        assert row["gain_over_bma_ci"] == again.rows[f"{name}@5labels"]["gain_over_bma_ci"]
    # no resamples, no interval
    plain = evaluate(table, embeddings=X, label_counts=[5], repeats=1, n_bootstrap=0)
    assert plain.rows["stack@5labels"]["gain_over_bma_ci"] is None


def test_label_draws_let_another_implementation_redo_every_repeat(evaluated):
    """per_task[d]["label_draws"] names the labelled instances of every repeat and every
    row's choice: from the table alone (pandas, none of the package's code) the few-shot
    baseline, BMA and the Oracle come out the same on the unlabelled items, and a Router
    refitted without the task and given those labels (recommend(labeled=...)) makes the
    same S1 and S3 choices. The rows' accuracies are the means of the recorded ones."""
    table, _, X, _ = evaluated
    result = evaluate(table, embeddings=X, label_counts=[5], alphas=[0.2], repeats=2,
                      n_bootstrap=0)
    pool = build_pool(table)
    task_acc = table.groupby(["task", "model"])["correct"].mean().unstack()
    for record in result.per_task:
        task = record["task"]
        draws = record["label_draws"]
        assert sorted(str((d.get("labels"), d.get("alpha"), d["repeat"])) for d in draws) == \
            sorted(str(s) for s in [(5, None, r) for r in range(2)] + [(None, 0.2, r)
                                                                      for r in range(2)])
        sub = table[table["task"] == task]
        mean_other = task_acc.drop(index=task).mean()  # BMA's ranking without the task
        for draw in draws:
            labelled = set(draw["labelled"])
            assert len(labelled) == draw["n_labels"] == len(draw["labelled"])
            assert labelled <= set(sub["instance_id"])
            lab = sub[sub["instance_id"].isin(labelled)].groupby("model")["correct"].mean()
            rest = sub[~sub["instance_id"].isin(labelled)].groupby("model")["correct"].mean()
            few = max(lab.index, key=lambda m: (lab[m], mean_other[m]))
            bma = max(rest.index, key=lambda m: mean_other[m])
            assert draw["choice"]["few_shot"] == few, (task, draw)
            assert draw["choice"]["bma"] == bma
            assert draw["acc"]["oracle"] == pytest.approx(rest.max())
            for name, model in draw["choice"].items():
                assert draw["acc"][name] == pytest.approx(rest[model]), (task, name)
    for setting, row in ((("labels", 5), "@5labels"), (("alpha", 0.2), "@0.2")):
        for name in ("few_shot", "s1", "s2", "stack"):
            per_repeat = [np.mean([d["acc"][name] for t in result.per_task
                                   for d in t["label_draws"]
                                   if d.get(setting[0]) == setting[1] and d["repeat"] == r])
                          for r in range(2)]
            assert result.rows[name + row]["acc"] == pytest.approx(np.mean(per_repeat))
    # S1 and S3 with the drawn labels in the pool, on two tasks, by a refitted Router
    for record in result.per_task[:2]:
        task = record["task"]
        d = pool.task_names.index(task)
        keep = pool.task_of != d
        router = Router().fit(table[table["task"] != task], embeddings=X[keep])
        rows = np.flatnonzero(~keep)
        ids = [pool.instance_ids[r] for r in rows]
        for draw in record["label_draws"]:
            lab = rows[[i in set(draw["labelled"]) for i in ids]]
            rest = rows[[i not in set(draw["labelled"]) for i in ids]]
            acc = np.nanmean(pool.Y[rest], axis=0)
            cands = [m for j, m in enumerate(pool.models) if not np.isnan(acc[j])]
            for score in ("s1", "s3", "stack"):
                rec = recommend_with_labels(router, pool, X, d, lab, score, cands)
                assert draw["choice"][score] == rec.choice, (task, draw["repeat"], score)


def test_stack_rows_are_s3_below_the_reference_task_minimum():
    """With 5 tasks each held-out task has 4 reference tasks, fewer than the stacked switch
    needs (MIN_STACK_TASKS): its rows are the paper's S3, as recommend does."""
    from lm_router_plugin.router.deciders import MIN_STACK_TASKS

    table, vectors = make_data(seed=5, n_tasks=5)
    assert 5 - 1 < MIN_STACK_TASKS
    X = _embeddings(build_pool(table), vectors)
    result = evaluate(table, embeddings=X, label_counts=[5], repeats=1, n_bootstrap=0)
    for record in result.per_task:
        assert record["stack"]["model"] == record["s3"]["model"]
        for draw in record["label_draws"]:
            assert draw["choice"]["stack"] == draw["choice"]["s3"]


@pytest.mark.parametrize("task_k", [200, 7, 0])
def test_the_stacks_task_level_s1_matches_a_router_refitted_without_the_task(task_k):
    """The stacked switch's S1 feature (the task-level kernel S1, task_k neighbours per doc)
    in the strict evaluation: each reference task's value in the fit without held-out d and
    d's own value equal those of a Router fitted on the table without d (task_k = 7 leaves
    most rows with too few kept neighbours once d is dropped: searched again); the switch
    built on them (its bandwidth, weights and threshold) and its choice are the refit's."""
    from lm_router_plugin.evaluation.protocol import _HeldOut, _TaskScorer

    table, vectors = make_data(seed=5, n_tasks=8, missing=0.1)
    pool = build_pool(table)
    X = _embeddings(pool, vectors)
    ev = _HeldOut(Router(task_k=task_k), X, pool.Y, pool.task_of, len(pool.task_names))
    allowed = np.ones(len(pool.models), bool)
    scorer = _TaskScorer(ev, allowed, np.full(len(pool.models), np.nan), pool.models, None, 0)
    for d in (0, 3, 7):
        keep = pool.task_of != d
        task = pool.task_names[d]
        router = Router(task_k=task_k).fit(table[table["task"] != task], embeddings=X[keep])
        cal = ev.calibration_without(d)
        others = [z for z in range(len(pool.task_names)) if z != d]
        rows = np.flatnonzero(~keep)
        if task_k == 0:
            assert cal.task_s1 is None and router.calibration_.task_s1 is None
            assert ev.task_s1(rows) is None
        else:
            # float32 similarities of pools of different shapes: last-bit differences
            np.testing.assert_allclose(cal.task_s1[:, others], router.calibration_.task_s1,
                                       rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(ev.task_s1(rows), router.task_level_s1(X[rows]),
                                       rtol=1e-6, atol=1e-9)
        mine, theirs = scorer.switch(d, 0, allowed), router.stacked_switch(allowed)
        assert (mine.task_h is None) == (task_k == 0)
        assert (mine.task_h, mine.tau) == (theirs.task_h, theirs.tau)
        np.testing.assert_allclose(mine.beta, theirs.beta, rtol=1e-6, atol=1e-9)
        rec = router.recommend(embeddings=X[rows], score="stack")
        view = scorer.view(d, rows, allowed)
        assert pool.models[StackedSwitch().decide(view).choice] == rec.choice
