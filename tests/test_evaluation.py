"""Leave-one-task-out evaluation against an independent brute-force implementation of
METHOD.md (plain loops and argsort, no code from the package's scoring path)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lm_router_plugin.evaluation import evaluate, regroup_tasks
from lm_router_plugin.router import build_pool
from lm_router_plugin.schema import validate_table

K, KAPPA, SIGMA, T = 5, 19, 0.09, 0.5


def make_data(seed: int = 0, n_tasks: int = 6, n_models: int = 4, n_per_task: int = 40,
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


def brute_force(table: pd.DataFrame, vectors: dict) -> dict:
    """Per held-out task: s1, s2, s3, p_hat, true p, acc per model; BMA; oracle."""
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

    calib = {}
    for task in tasks:
        X_ref = np.vstack([data[t][0] for t in tasks if t != task])
        Y_ref = np.vstack([data[t][1] for t in tasks if t != task])
        prior = np.nan_to_num(np.nanmean(Y_ref, axis=0))  # fallback: the other tasks' mean
        g, dists = predict(data[task][0], X_ref, Y_ref, prior)
        y = data[task][1]
        p = np.array([np.mean((g[:, m] > T)[~np.isnan(y[:, m])] == (y[~np.isnan(y[:, m]), m] == 1))
                      for m in range(len(models))])
        calib[task] = (g, dists.mean(), p, np.nanmean(y, axis=0))
    out = {}
    for task in tasks:
        g, u, p_true, acc = calib[task]
        others = [t for t in tasks if t != task]
        w = np.array([np.exp(-(u - calib[t][1]) ** 2 / (2 * SIGMA**2)) for t in others])
        p_hat = (w[:, None] * np.array([calib[t][2] for t in others])).sum(0) / w.sum()
        s1 = g.mean(0)
        s2 = (g > T).mean(0)
        s3 = s2 * p_hat + (1 - s2) * (1 - p_hat)
        mean_acc = np.mean([calib[t][3] for t in others], axis=0)
        out[task] = {"s1": s1, "s2": s2, "s3": s3, "p": p_hat, "true_p": p_true, "acc": acc,
                     "u": u, "bma": int(np.argmax(mean_acc)), "models": models}
    return out


@pytest.fixture(scope="module")
def evaluated():
    table, vectors = make_data()
    pool = build_pool(table)
    X = np.array([vectors[(pool.task_names[t], i)] for t, i in zip(pool.task_of, pool.instance_ids)])
    result = evaluate(table, embeddings=X, alphas=[0, 0.1, 0.3], repeats=3)
    return table, vectors, X, result


def test_scores_match_brute_force(evaluated):
    table, vectors, _, result = evaluated
    expected = brute_force(table, vectors)
    assert result.n_tasks == len(expected)
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
        s1_choice = int(np.argmax(exp["s1"]))
        if np.sum(exp["s1"] == exp["s1"][s1_choice]) == 1:  # unique argmax
            assert record["s1"]["model"] == exp["models"][s1_choice]


def test_rows_are_task_averages(evaluated):
    _, _, _, result = evaluated
    for name in ("s1", "s2", "s3", "s3_true_p", "bma", "oracle"):
        accs = [t[name]["acc"] for t in result.per_task]
        assert result.rows[name]["acc"] == pytest.approx(np.mean(accs))
    assert result.rows["oracle"]["ratio_to_best"] == pytest.approx(1.0)
    assert result.rows["oracle"]["rank"] == pytest.approx(1.0)
    assert result.rows["bma"]["pct_bma"] == pytest.approx(1.0)
    assert result.rows["oracle"]["acc"] >= max(result.rows[n]["acc"] for n in ("s1", "s2", "s3"))
    assert 0 < result.p_mae < 1 and 0 < result.predictor_accuracy < 1


def test_alpha_sweep_is_seeded_and_labels_help(evaluated):
    table, _, X, result = evaluated
    again = evaluate(table, embeddings=X, alphas=[0, 0.1, 0.3], repeats=3)
    assert again.rows["s1@0.3"] == result.rows["s1@0.3"]
    for key in ("s1@0.1", "s3@0.1", "few_shot@0.1", "s1@0.3", "s3@0.3", "few_shot@0.3"):
        assert key in result.rows and result.rows[key]["acc_std"] >= 0
    # In-task labels are the nearest neighbours of in-task inputs: predictors get better.
    acc_by_alpha = [e["predictor_accuracy"] for e in result.alpha_sweep]
    assert acc_by_alpha[-1] > result.predictor_accuracy


def test_candidates_and_compare_to(evaluated):
    table, _, X, _ = evaluated
    info = {"model0": {"params": 7e9}, "model1": {"params": 13e9}, "model2": {"params": 70e9},
            "model3": {"params": 1e9}}
    result = evaluate(table, embeddings=X, max_params=13_000_000_000, compare_to="model2",
                      model_info=info)
    assert result.n_models == 3
    for record in result.per_task:
        for name in ("s1", "s2", "s3", "bma", "oracle"):
            assert record[name]["model"] != "model2"
        assert record["compare_to"]["model"] == "model2"
    assert result.rows["compare_to"]["params"] == pytest.approx(70e9)


def test_regroup_by_side_table():
    table, _ = make_data(n_tasks=2, n_per_task=6)
    side = pd.DataFrame({"instance_id": [str(i) for i in range(6)],
                         "src": ["a", "a", "b", "b", "c", "c"]})
    regrouped = regroup_tasks(table, "src", side)
    assert sorted(regrouped["task"].unique()) == ["a", "b", "c"]
    assert len(regrouped) == len(table)
    with pytest.raises(KeyError, match="Did you mean"):
        regroup_tasks(table, "srcc", side)


def test_label_calibrated_p_by_hand():
    from lm_router_plugin.evaluation import label_calibrated_p

    # 10 labels at 0.9 against a kernel p of 0.5 worth 10 pseudo-labels -> 0.7;
    # no labels -> the kernel p; a model without labels (nan) keeps the kernel p.
    got = label_calibrated_p(np.array([0.5, 0.4, 0.6]), np.array([0.9, 0.1, np.nan]),
                             np.array([10.0, 0.0, 0.0]), strength=10.0)
    assert got == pytest.approx([0.7, 0.4, 0.6])


def test_label_p_row_in_sweep(evaluated):
    _, _, _, result = evaluated
    assert "s3_label_p@0.1" in result.rows and "s3_label_p@0.3" in result.rows


def test_correlations_match_scipy():
    from scipy import stats

    from lm_router_plugin.evaluation import _average_ranks, _correlations

    rng = np.random.default_rng(0)
    for _ in range(50):
        x = rng.integers(0, 5, size=12).astype(float)  # with ties
        y = rng.random(12)
        assert np.allclose(_average_ranks(x), stats.rankdata(x))
        pearson, spearman = _correlations(x, y)
        assert pearson == pytest.approx(stats.pearsonr(x, y)[0])
        assert spearman == pytest.approx(stats.spearmanr(x, y)[0])
    assert np.isnan(_correlations(np.ones(4), rng.random(4))[0])
