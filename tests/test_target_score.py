"""``--target score`` (issue 20): the router learns raw metric values, each metric mapped
onto [0, 1] (min-max over the table, flipped where lower is better).

Checked on real Parquet stores written by ``lm-router ingest table`` (raw scores, a
lower-is-better metric declared in a thresholds file), against brute-force computations:
the normalisation and its direction, evaluate's raw means, route's g in the metric's units;
then the bad inputs (text, nan and inf scores; correctness guessed without a threshold;
an unknown target; S2/S3 under score), each one error with nothing written, and the
parity of the CLI and the library.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pandas as pd
import pytest
from conftest import one_error

from lm_router_plugin import Store, api
from lm_router_plugin.errors import InvalidParameterError, SchemaError
from lm_router_plugin.evaluation.protocol import evaluate
from lm_router_plugin.router.persistence import fit_or_load, router_key
from lm_router_plugin.router.pool import ScoreScale, build_pool
from lm_router_plugin.router.router import Router
from lm_router_plugin.store.thresholds import Thresholds, metric_directions

MODELS = ("m_a", "m_b", "m_c")
WORDS = ("apple", "river", "violin", "planet", "copper", "tiger", "pepper", "glacier")
THRESHOLDS = ("metrics:\n  bleu_points: {threshold: 30, higher_is_better: true}\n"
              "  loss: {threshold: 1.0, higher_is_better: false}\n")


def raw_rows(seed: int = 0, n_tasks: int = 8, n_items: int = 10, metrics=("bleu_points", "loss")
             ) -> pd.DataFrame:
    """Raw results of 3 models on n_tasks tasks: the first half scored with bleu_points
    (0-100, higher better), the rest with loss (0-3, lower better); each task has its best
    model. Texts share a topic word per task (so embeddings cluster by task)."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(n_tasks):
        metric = metrics[0] if d < n_tasks // 2 else metrics[-1]
        for i in range(n_items):
            for j, model in enumerate(MODELS):
                skill = 0.35 + 0.1 * j + (0.3 if d % 3 == j else 0.0) + rng.normal(0, 0.1)
                skill = float(np.clip(skill, 0, 1))
                score = 100 * skill if metric == "bleu_points" else 3 * (1 - skill)
                rows.append({"task": f"task{d}", "instance_id": str(i), "model": model,
                             "input_text": f"{WORDS[d % len(WORDS)]} question number {i}",
                             "metric": metric, "score": round(score, 4)})
    return pd.DataFrame(rows)


def ingest(cli, tmp_path, table: pd.DataFrame, name: str = "results", thresholds=THRESHOLDS,
           store=None):
    """Ingest ``table`` as a Parquet file through the table adapter (+ a thresholds file)."""
    path = tmp_path / f"{name}.parquet"
    table.to_parquet(path, index=False)
    root = store or cli.store
    args = ["-q", "ingest", "table", path, "--store", root]
    if thresholds:
        th = tmp_path / f"{name}.thresholds.yaml"
        th.write_text(thresholds)
        args += ["--thresholds", th]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return Store(root)


def embeddings(pool, dim: int = 16) -> np.ndarray:
    """Deterministic unit vectors: one cluster per topic word, a small hash offset per text."""
    out = []
    for text in pool.texts:
        word = text.split()[0]
        base = np.random.default_rng(WORDS.index(word)).normal(size=dim)
        # crc32, not hash(): str hashes change with each process (PYTHONHASHSEED)
        offset = np.random.default_rng(zlib.crc32(text.encode())).normal(size=dim)
        v = base + 0.3 * offset
        out.append(v / np.linalg.norm(v))
    return np.asarray(out, np.float32)


def fitted_near(cli, tmp_path, rows: pd.DataFrame, near: list[int]):
    """Ingest ``rows``, fit Router(target="score", k=3) on them with :func:`embeddings`, and
    queries just beside the pool rows ``near``: (stored table, pool, X, router, Q)."""
    table = ingest(cli, tmp_path, rows).read_table()
    pool = build_pool(table, target="score")
    X = embeddings(pool)
    router = Router(target="score", k=3).fit(table, embeddings=X)
    Q = X[near] + 0.01
    return table, pool, X, router, Q / np.linalg.norm(Q, axis=1, keepdims=True)


@pytest.fixture
def raw_store(cli, tmp_path):
    return ingest(cli, tmp_path, raw_rows())


# -- normalisation, direction ---------------------------------------------------------------
def test_scores_are_mapped_per_metric_with_their_direction(raw_store):
    table = raw_store.read_table()
    pool = build_pool(table, target="score")
    raw = table.pivot_table(index=["task", "instance_id"], columns="model", values="score")
    metric = table.groupby("task")["metric"].first()
    assert pool.task_metrics == [metric[t] for t in pool.task_names]
    assert set(pool.scales) == {"bleu_points", "loss"}
    for name, hib in (("bleu_points", True), ("loss", False)):  # loss: from the thresholds file
        values = table.loc[table.metric == name, "score"]
        assert pool.scales[name] == ScoreScale(name, values.min(), values.max(), hib)
    for r, (task, iid) in enumerate(zip(np.array(pool.task_names)[pool.task_of],
                                        pool.instance_ids)):
        lo, hi = (table.loc[table.metric == metric[task], "score"].agg(["min", "max"]))
        for j, model in enumerate(pool.models):
            x = raw.loc[(task, iid), model]
            expected = (x - lo) / (hi - lo) if metric[task] == "bleu_points" else (hi - x) / (hi - lo)
            assert pool.Y[r, j] == pytest.approx(expected, abs=1e-6)
            assert pool.scales[metric[task]].raw(pool.Y[r, j]) == pytest.approx(x, abs=1e-4)
    assert np.nanmin(pool.Y) == 0 and np.nanmax(pool.Y) == pytest.approx(1)


def test_direction_is_read_back_from_the_thresholded_rows():
    """The store keeps no direction column: a row's eta and correct say which it was."""
    rows = pd.DataFrame({"task": "t", "instance_id": ["1", "2", "3"], "model": "m",
                         "metric": ["my_err", "my_err", "acc"], "score": [0.2, 0.9, 1.0],
                         "threshold": [0.5, 0.5, np.nan], "correct": [1, 0, 1]})
    assert metric_directions(rows) == {"my_err": False, "acc": True}
    flipped = rows.assign(correct=[0, 1, 1])
    assert metric_directions(flipped)["my_err"] is True
    mixed = rows.assign(score=[0.2, 0.9, 0.7], metric="my_err", threshold=0.5, correct=[1, 1, 1])
    with pytest.raises(SchemaError, match="thresholded in both directions"):
        metric_directions(mixed)
    # no thresholded row: the shipped table's lower_is_better list
    binary = pd.DataFrame({"task": "t", "instance_id": ["1"], "model": "m",
                           "metric": ["wer_score"], "score": [1.0], "threshold": [np.nan],
                           "correct": [0]})
    assert metric_directions(binary, Thresholds.load()) == {"wer_score": False}


# -- evaluate and route against brute force ---------------------------------------------------
def test_evaluate_raw_means_equal_a_brute_force_computation(raw_store):
    table = raw_store.read_table()
    pool = build_pool(table, target="score")
    result = evaluate(table, embeddings=embeddings(pool), router=Router(target="score"),
                      n_bootstrap=50).to_dict()
    assert "s2" not in result["rows"] and "s3" not in result["rows"]  # they threshold g at t
    assert {"s1", "stack", "moe", "bma", "oracle"} <= set(result["rows"])
    raw_mean = table.groupby(["task", "model"])["score"].mean()
    metric = table.groupby("task")["metric"].first()
    by_row: dict[str, dict[str, list[float]]] = {}
    for record in result["per_task"]:
        task = record["task"]
        for name in ("s1", "stack", "bma", "oracle"):
            expected = raw_mean[(task, record[name]["model"])]
            assert record[name]["acc_raw"] == pytest.approx(expected, rel=1e-6), (task, name)
            by_row.setdefault(name, {}).setdefault(metric[task], []).append(expected)
        # the Oracle is the best raw mean in the metric's own direction
        best = (raw_mean[task].max() if metric[task] == "bleu_points" else raw_mean[task].min())
        assert record["oracle"]["acc_raw"] == pytest.approx(best, rel=1e-6)
    for name, per_metric in by_row.items():
        got = result["rows"][name]["acc_raw_by_metric"]
        assert got == pytest.approx({m: np.mean(v) for m, v in per_metric.items()})
        assert result["rows"][name]["acc_raw"] is None  # two metrics: no single unit
    assert result["settings"]["target"] == "score"
    assert result["settings"]["scales"]["loss"]["higher_is_better"] is False


def test_route_g_is_the_neighbours_mean_raw_value(cli, tmp_path):
    """One metric in the store: g per model is in its units, the mean raw value of the k
    nearest reference inputs (brute force over the embeddings)."""
    _, pool, X, router, queries = fitted_near(cli, tmp_path, raw_rows(metrics=("bleu_points",)),
                                              [0, 25, 47])
    decisions = router.route(embeddings=queries)
    raw = np.stack([pool.scales["bleu_points"].raw(pool.Y[:, j]) for j in range(3)], 1)
    allowed = np.ones(3, bool)
    tau = router.route_margin(allowed)
    bma = int(np.argmax(router.calibration_.mean_accuracy))
    for q, dec in zip(queries, decisions):
        near = np.argsort(-(X @ q), kind="stable")[:3]
        expected = raw[near].mean(0)
        assert dec.units == "bleu_points"
        assert [dec.g[m] for m in pool.models] == pytest.approx(expected, rel=1e-5)
        best = int(np.argmax(expected))  # leaves BMA only for a lead above the margin
        span = pool.scales["bleu_points"].hi - pool.scales["bleu_points"].lo
        lead = (expected[best] - expected[bma]) / span
        assert dec.model == pool.models[best if lead > tau else bma]
    # two metrics: no common unit, g stays normalised
    mixed = Router(target="score", k=3).fit(build_pool_table := raw_rows(),
                                            embeddings=embeddings(build_pool(build_pool_table, target="score")))
    dec = mixed.route(embeddings=queries[:1])[0]
    assert dec.units == "normalised" and all(0 <= v <= 1 for v in dec.g.values())


def test_target_is_saved_with_the_router_and_part_of_its_key(raw_store):
    score = Router(target="score", embedder="static")
    correct = Router(embedder="static")
    assert router_key("f", "e", score) != router_key("f", "e", correct)
    assert "target" not in correct.fit_params()  # the keys of routers fitted before --target
    first = fit_or_load(raw_store, embedder="static", target="score")
    again = fit_or_load(raw_store, embedder="static", target="score")  # loaded, not refitted
    assert again.target == "score" and again.scales_ == first.scales_
    np.testing.assert_array_equal(again.Y_, first.Y_)
    assert len(list(raw_store.routers_dir().iterdir())) == 1
    assert fit_or_load(raw_store, embedder="static").target == "correct"
    assert len(list(raw_store.routers_dir().iterdir())) == 2


def test_few_reference_tasks_keep_the_best_model_on_average(cli, tmp_path):
    """Under score the stacked switch hands over to BMA (not to S3's g > t test) when it
    has too few reference tasks to learn when a gain is credible."""
    store = ingest(cli, tmp_path, raw_rows(n_tasks=4))
    prompts = tmp_path / "p.txt"
    prompts.write_text("apple question number 3\nviolin question number 1\n")
    rec = json.loads(cli("-q", "recommend", "--prompts", prompts, "--target", "score",
                         "--embedder", "static", "--json", "--store", store.root).stdout)
    assert rec["decided_by"] == "bma" and rec["choice"] == rec["bma"]
    assert "best model on average" in rec["reason"]


def test_labelled_rows_are_mapped_by_the_metric_scale(raw_store):
    router = fit_or_load(raw_store, embedder="static", target="score")
    labeled = pd.DataFrame({"task": "new", "instance_id": ["0", "0"], "model": ["m_a", "m_b"],
                            "metric": "loss", "score": [0.3, 2.4], "correct": [1, 0]})
    scale = router.scales_["loss"]
    out = router.normalised_labels(labeled)
    assert out["correct"].tolist() == pytest.approx(list(scale.normalise([0.3, 2.4])))
    with pytest.raises(Exception, match="metric 'rouge_x', which the store does not hold"):
        router.normalised_labels(labeled.assign(metric="rouge_x"))


# -- bad input: one error, nothing written ----------------------------------------------------
@pytest.mark.parametrize("value, message", [
    ("n/a", "is not a number ('n/a')"), (np.nan, "is not finite (nan)"),
    (np.inf, "is not finite (inf)")])
def test_bad_scores_name_the_row(value, message):
    table = raw_rows(n_tasks=2).astype({"score": object})
    table.loc[7, "score"] = value
    row = table.loc[7]
    with pytest.raises(SchemaError) as err:
        build_pool(table, target="score")
    text = str(err.value)
    assert message in text
    assert f"task={row.task}, instance_id={row.instance_id}, model={row.model}" in text


def test_a_stored_nan_score_is_one_error_and_nothing_written(cli, tmp_path):
    """A NaN score in the store (an lm-eval sample's nan metric is stored as null)."""
    store = ingest(cli, tmp_path, raw_rows())
    table = store.read_table()
    table.loc[5, "score"] = np.nan
    store.write_table(table)
    prompts = tmp_path / "p.txt"
    prompts.write_text("apple question number 3\n")
    before = sorted(p.name for p in store.root.rglob("*"))
    for command in (["route", "--prompts", prompts], ["evaluate"]):
        result = cli("-q", *command, "--target", "score", "--embedder", "static",
                     "--store", store.root)
        error = one_error(result)
        assert "is not finite (nan)" in error and f"model={table.loc[5, 'model']}" in error
    assert not store.routers_dir().exists() or not any(store.routers_dir().iterdir())
    assert sorted(p.name for p in store.root.rglob("*")) == before


def test_raw_store_without_thresholds_refuses_target_correct(cli, tmp_path):
    """A judge metric declared nowhere: its 0/1 'correct' is the fallback's guess (> 0.5),
    so --target correct is one error (and --target score works on the same store)."""
    table = raw_rows().assign(metric="judge_points")
    store = ingest(cli, tmp_path, table, thresholds=None)
    assert store.read_table()["threshold"].isna().all()  # the guess is marked, not eta 0.5
    prompts = tmp_path / "p.txt"
    prompts.write_text("apple question number 3\n")
    for command in (["route", "--prompts", prompts], ["evaluate"],
                    ["recommend", "--prompts", prompts]):
        error = one_error(cli("-q", *command, "--embedder", "static", "--store", store.root))
        assert "--target correct: metric 'judge_points'" in error
        assert "--target score" in error and "--thresholds" in error
    assert not store.routers_dir().exists() or not any(store.routers_dir().iterdir())
    ok = cli("-q", "route", "--prompts", prompts, "--target", "score", "--embedder", "static",
             "--store", store.root, "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["units"] == "judge_points"
    # a declared eta (recorded with the rows) makes --target correct valid
    declared = ingest(cli, tmp_path, table, name="declared", store=tmp_path / "declared",
                      thresholds="metrics:\n  judge_points: {threshold: 50, higher_is_better: "
                                 "true}\n")
    assert cli("-q", "route", "--prompts", prompts, "--embedder", "static", "--store",
               declared.root).exit_code == 0


def test_unknown_target_and_s2_s3_under_score_are_usage_errors(cli, raw_store, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("apple question number 3\n")
    for command in ("route", "recommend", "evaluate", "plan-labels"):
        result = cli(command, "--target", "scores", "--store", raw_store.root)
        assert result.exit_code == 2 and "'scores' is not one of 'correct', 'score'" in \
            result.output
    with pytest.raises(InvalidParameterError, match="must be one of correct, score"):
        api.route(raw_store, prompts=["x"], target="scores")
    config = tmp_path / "c.yaml"
    config.write_text("predictor: {target: raw}\n")
    result = cli("route", "--prompts", prompts, "--config", config, "--store", raw_store.root)
    assert result.exit_code == 2 and "got 'raw'" in result.output
    for score in ("s2", "s3"):
        result = cli("recommend", "--prompts", prompts, "--target", "score", "--score", score,
                     "--store", raw_store.root)
        assert result.exit_code == 2 and f"{score} thresholds g at t" in result.output
    assert not raw_store.routers_dir().exists() or not any(raw_store.routers_dir().iterdir())


# -- the CLI and the library agree -------------------------------------------------------------
def test_cli_and_api_give_the_same_results(cli, raw_store, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("apple question number 3\ntiger question number 8\n")
    lines = cli("-q", "route", "--prompts", prompts, "--target", "score", "--embedder",
                "static", "--json", "--store", raw_store.root).stdout.splitlines()
    decisions = api.route(raw_store, prompts_file=prompts, target="score",
                          settings={"embedder": {"name": "static"}})
    assert [json.loads(line) for line in lines] == [
        {"index": d.index, "model": d.model, "g": d.g, "units": d.units} for d in decisions]
    out = cli("-q", "evaluate", "--target", "score", "--embedder", "static", "--json",
              "--store", raw_store.root)
    assert out.exit_code == 0, out.output
    result = api.evaluate(raw_store, target="score", settings={"embedder": {"name": "static"}})
    rows = json.loads(out.stdout)["rows"]
    assert rows.keys() == result.rows.keys()
    for name, row in rows.items():
        assert row["acc_raw_by_metric"] == pytest.approx(result.rows[name]["acc_raw_by_metric"])
    rec = json.loads(cli("-q", "recommend", "--prompts", prompts, "--target", "score",
                         "--embedder", "static", "--json", "--store", raw_store.root).stdout)
    lib = api.recommend(raw_store, prompts_file=prompts, target="score",
                        settings={"embedder": {"name": "static"}})
    assert rec["choice"] == lib.choice and rec["decided_by"] == lib.decided_by == "stack"
    # the config file's predictor.target and the option are the same setting
    config = tmp_path / "c.yaml"
    config.write_text("predictor: {target: score}\nembedder: {name: static}\n")
    via_config = cli("-q", "route", "--prompts", prompts, "--config", config, "--json",
                     "--store", raw_store.root).stdout.splitlines()
    assert via_config == lines
    planned = cli("-q", "plan-labels", "--prompts", prompts, "--n", "1", "--target", "score",
                  "--out", tmp_path / "plan", "--store", raw_store.root)
    assert planned.exit_code == 0 and "--target score" in planned.stdout


# -- real HELM values -------------------------------------------------------------------------
def test_helm_narrative_qa_f1_round_trips_to_helms_mean(tmp_path):
    """The HELM NarrativeQA fixture (gpt2, continuous f1_score) beside two exact_match runs:
    under score, the task's normalised mean maps back to HELM's own f1_score mean."""
    from test_helm_adapter import REAL, _ingest, _stat_mean

    if not REAL.is_dir():
        pytest.skip("../shared/fixtures/helm_real absent")
    store = tmp_path / "store"
    assert _ingest(store, REAL).exit_code == 0
    pool = build_pool(Store(store).read_table(), target="score")
    assert set(pool.scales) == {"exact_match", "f1_score"}
    assert pool.scales["f1_score"].higher_is_better
    d = next(i for i, t in enumerate(pool.task_names) if t.startswith("narrative_qa"))
    assert pool.task_metrics[d] == "f1_score"
    run = next(p for p in REAL.iterdir() if p.name.startswith("narrative_qa"))
    column = pool.models.index("openai/gpt2")
    mean = np.nanmean(pool.Y[pool.task_of == d, column])
    assert pool.scales["f1_score"].raw(mean) == pytest.approx(_stat_mean(run, "f1_score", "test"))


# -- recommend under score: what the values are in --------------------------------------------
def one_metric_rows() -> pd.DataFrame:
    """raw_rows with every task scored by 'loss' (0-3, lower is better)."""
    return raw_rows(metrics=("loss",))


def test_recommend_reports_the_target_and_values_in_the_metric_units(cli, tmp_path):
    """One metric (lower is better): S1 in its units is the mean over the prompts of the
    neighbours' mean raw value (brute force); gains scale by hi - lo; the estimates map
    through the scale with the interval's ends swapped; S2/S3/p are gone."""
    _, pool, X, router, Q = fitted_near(cli, tmp_path, one_metric_rows(), [3, 41, 77])
    rec = router.recommend(embeddings=Q)
    scale = pool.scales["loss"]
    assert (rec.target, rec.units, rec.metrics) == ("score", "loss", ["loss"])
    assert rec.scales == {"loss": scale.to_dict()} and not scale.higher_is_better
    raw = scale.raw(pool.Y)
    near = np.argsort(-(Q @ X.T), axis=1, kind="stable")[:, :3]
    expected = raw[near].mean(1).mean(0)  # (M,) mean over prompts of the neighbours' mean
    for row in rec.models:
        assert row.s2 is None and row.s3 is None and row.p is None
        assert row.s1_raw == pytest.approx(expected[pool.models.index(row.model)], rel=1e-5)
        assert row.stack_raw == pytest.approx(row.stack * (scale.hi - scale.lo))
    assert rec.estimates
    for entry in rec.estimates:  # lower is better: the normalised high end is the low loss
        assert entry["acc_raw"] == pytest.approx(scale.raw(entry["acc"]))
        assert (entry["low_raw"], entry["high_raw"]) == pytest.approx(
            (scale.raw(entry["high"]), scale.raw(entry["low"])))
    assert rec.expected_gain_raw == {  # None: more labels than docs left
        n: None if v is None else pytest.approx(v * (scale.hi - scale.lo))
        for n, v in rec.expected_gain.items()}
    data = rec.to_dict()
    assert data["target"] == "score" and data["units"] == "loss"
    assert data["models"][0]["s1_raw"] == rec.models[0].s1_raw


def test_recommend_output_under_score_shows_no_s2_s3_p(cli, tmp_path):
    """The human table of one metric shows S1 as 'predicted loss' in its units and the gain,
    no S2/S3/p columns nor 0/1 words; a mixed store says its values are normalised; the JSON
    of target correct keeps its keys (plus target and units)."""
    store = ingest(cli, tmp_path, one_metric_rows())
    prompts = tmp_path / "p.txt"
    prompts.write_text("apple question number 3\ntiger question number 8\n")
    args = ["-q", "recommend", "--prompts", prompts, "--embedder", "static", "--store",
            store.root]
    text = cli(*args, "--target", "score").stdout
    data = json.loads(cli(*args, "--target", "score", "--json").stdout)
    table = text.split("(the choice first")[0]
    header = next(line for line in table.splitlines() if line.startswith("model"))
    assert header.split() == ["model", "predicted", "loss", "gain", "params"]
    for row in data["models"]:  # the table's numbers are the JSON's s1_raw and stack_raw
        line = next(line for line in table.splitlines() if line.startswith(row["model"] + " "))
        assert line.split()[1:3] == [f"{row['s1_raw']:.3f}", f"{row['stack_raw']:+.3f}"]
    assert "estimated mean loss on the task" in text
    assert "P(correct)" not in text and "S2 =" not in text and "in loss's own units" in text
    mixed = ingest(cli, tmp_path, raw_rows(), name="mixed", store=tmp_path / "mixed")
    text = cli("-q", "recommend", "--prompts", prompts, "--embedder", "static", "--store",
               mixed.root, "--target", "score").stdout
    assert "values in normalised 0-1 per metric (bleu_points, loss)" in text
    assert "predicted value" in text and "P(correct)" not in text
    correct = json.loads(cli(*args, "--json").stdout)
    assert (correct["target"], correct["units"]) == ("correct", "accuracy")
    assert not {"metrics", "scales", "expected_gain_raw"} & set(correct)
    assert set(correct["models"][0]) == {"model", "s1", "s2", "s3", "p", "params", "stack",
                                         "score"}
    assert all(isinstance(row["s2"], float) for row in correct["models"])


# -- evaluate under score: the label rows, the margin under --candidates -----------------------
def test_label_rows_have_raw_means(raw_store):
    """NAME@Nlabels rows: acc_raw_by_metric = per repeat the mean over a metric's tasks of
    the chosen model's mean raw value on the unlabelled items, then the mean over repeats
    (brute force from the label draws)."""
    table = raw_store.read_table()
    pool = build_pool(table, target="score")
    result = evaluate(table, embeddings=embeddings(pool), router=Router(target="score"),
                      label_counts=[3], repeats=2, n_bootstrap=0).to_dict()
    metric = table.groupby("task")["metric"].first()
    raw = table.set_index(["task", "instance_id", "model"])["score"]
    for name in ("s1", "stack", "few_shot"):
        per_repeat: dict[int, dict[str, list[float]]] = {}
        for record in result["per_task"]:
            task = record["task"]
            ids = table.loc[table.task == task, "instance_id"].unique()
            for draw in record["label_draws"]:
                rest = [i for i in ids if i not in set(draw["labelled"])]
                value = float(np.mean([raw[(task, i, draw["choice"][name])] for i in rest]))
                assert draw["acc_raw"][name] == pytest.approx(value, rel=1e-5)
                per_repeat.setdefault(draw["repeat"], {}).setdefault(metric[task], []).append(
                    value)
        row = result["rows"][f"{name}@3labels"]
        expected = {m: np.mean([np.mean(v[m]) for v in per_repeat.values()])
                    for m in ("bleu_points", "loss")}
        assert row["acc_raw_by_metric"] == pytest.approx(expected, rel=1e-5)
        assert row["acc_raw"] is None  # two metrics: no single unit


def _one_scale_rows() -> pd.DataFrame:
    """One metric in [0, 1] whose min 0 and max 1 occur in every task: the scale is the same
    with or without any task, so evaluate's held-out fits and a Router fitted on the other
    tasks see the same normalised values."""
    table = raw_rows(seed=2, metrics=("bleu_points",)).assign(metric="frac")
    table["score"] = table["score"] / 100
    first = table.instance_id == "0"
    table.loc[first & (table.model == "m_a"), "score"] = 0.0
    table.loc[first & (table.model == "m_c"), "score"] = 1.0
    return table


def test_evaluate_moe_under_candidates_routes_as_route_does():
    """--candidates: evaluate's moe row of each held-out task equals `route` of a Router
    fitted on the other tasks with the same candidates (its margin fitted among them)."""
    table = _one_scale_rows()
    pool = build_pool(table, target="score")
    X = embeddings(pool)
    candidates = ["m_b", "m_c"]
    result = evaluate(table, embeddings=X, router=Router(target="score", k=3),
                      candidates=candidates, n_bootstrap=0)
    margins_differ = False
    for d, task in enumerate(pool.task_names):
        rows = np.flatnonzero(pool.task_of == d)
        others = np.flatnonzero(pool.task_of != d)
        router = Router(target="score", k=3).fit(table[table.task != task],
                                                  embeddings=X[others])
        allowed = np.isin(router.models_, candidates)
        margins_differ |= router.route_margin(allowed) != router.route_margin(
            np.ones(3, bool))
        picks = router.route(embeddings=X[rows], candidates=candidates)
        expected = np.mean([pool.Y[r, pool.models.index(p.model)] for r, p in zip(rows, picks)])
        assert result.per_task[d]["moe"]["acc"] == pytest.approx(expected, rel=1e-6), task
    assert margins_differ  # the check can tell a margin fitted on all models


def test_a_held_out_task_never_sets_the_scale_of_its_own_evaluation():
    """Strict protocol under target "score": the task holding a metric's largest (or
    smallest) value is scored with the scale of the other tasks, as a Router fitted without
    it would normalise; every held-out task's choices equal that refit's, and the raw means
    are the chosen model's mean raw value."""
    table = raw_rows(seed=4, metrics=("bleu_points",))
    table.loc[(table.task == "task2") & (table.instance_id == "0"), "score"] = 150.0
    table.loc[(table.task == "task5") & (table.instance_id == "3") & (table.model == "m_a"),
              "score"] = -40.0
    pool = build_pool(table, target="score")
    X = embeddings(pool)
    result = evaluate(table, embeddings=X, router=Router(target="score", k=3), n_bootstrap=0)
    assert sorted(result.settings["held_out_scales"]) == ["task2", "task5"]
    assert result.settings["held_out_scales"]["task2"]["bleu_points"]["hi"] < 150
    raw = table.set_index(["task", "instance_id", "model"])["score"]
    for d, task in enumerate(pool.task_names):
        rows = pool.task_of == d
        router = Router(target="score", k=3).fit(table[table.task != task],
                                                  embeddings=X[~rows])
        record = result.per_task[d]
        for score in ("s1", "stack"):
            assert record[score]["model"] == router.recommend(embeddings=X[rows],
                                                              score=score).choice, (task, score)
        chosen = record["stack"]["model"]
        ids = table.loc[table.task == task, "instance_id"].unique()
        assert record["stack"]["acc_raw"] == pytest.approx(
            np.mean([raw[(task, i, chosen)] for i in ids]), rel=1e-5)


# -- values beyond the reference scale, a scale with no span, and what score prints ----------
def test_values_beyond_the_other_tasks_range_are_evaluated_and_labelled(cli, tmp_path):
    """A held-out task whose values all lie above the other tasks' (and labels above the
    store's best) leave [0, 1] once normalised: the kNN's g then does too, and that is no
    predictor error."""
    rows = raw_rows(n_tasks=8, metrics=("bleu_points",))
    task3 = rows.task == "task3"
    rows.loc[task3, "score"] = 120 + rows.loc[task3, "score"] / 10
    # task1's texts: the two tasks are each other's nearest neighbours
    rows.loc[task3, "input_text"] = rows.loc[task3, "input_text"].str.replace(
        WORDS[3], WORDS[1])
    store = ingest(cli, tmp_path, rows)
    result = api.evaluate(store, settings={"embedder": {"name": "static"}}, target="score")
    assert "task3" in result.settings["held_out_scales"]
    router = fit_or_load(store, embedder="static", target="score")
    labeled = pd.DataFrame({"task": "prompts", "instance_id": ["0", "0", "0"],
                            "model": list(MODELS), "metric": "bleu_points",
                            "score": [150.0, 10.0, 20.0], "correct": np.nan})
    rec = router.recommend(["apple question number 3", "apple question number 4"],
                           labeled=labeled, store=store)  # (the labelled doc: a neighbour)
    assert rec.n_labelled_docs == 1


def test_a_metric_the_other_tasks_hold_with_one_value_takes_the_whole_range(cli, tmp_path):
    rows = raw_rows(n_tasks=7, metrics=("bleu_points",))
    rows.loc[rows.task != "task6", "score"] = 100.0  # one value on every other task
    store = ingest(cli, tmp_path, rows)
    result = api.evaluate(store, settings={"embedder": {"name": "static"}}, target="score")
    (task6,) = [t for t in result.per_task if t["task"] == "task6"]
    raw = rows[rows.task == "task6"].groupby("model").score.mean()
    assert task6["oracle"]["acc_raw"] == pytest.approx(raw.max())  # (was 100 for every row)
    assert task6["bma"]["acc_raw"] == pytest.approx(raw[task6["bma"]["model"]])
    assert task6["oracle"]["acc"] > task6["bma"]["acc"] or raw.max() == raw[
        task6["bma"]["model"]]
    # labels on a metric with one value in the store: nothing to place them on
    flat = ingest(cli, tmp_path, rows[rows.task != "task6"], name="flat",
                  store=tmp_path / "flat")
    router = fit_or_load(flat, embedder="static", target="score")
    labeled = pd.DataFrame({"task": "new", "instance_id": ["0", "0"], "model": ["m_a", "m_b"],
                            "metric": "bleu_points", "score": [10.0, 90.0], "correct": np.nan})
    with pytest.raises(Exception, match="other values than its one value in the store"):
        router.normalised_labels(labeled)


def test_a_rule_that_keeps_bma_says_labels_cannot_change_it(cli, tmp_path):
    store = ingest(cli, tmp_path, raw_rows(n_tasks=4))
    rec = api.recommend(store, prompts=["apple question number 3"], target="score",
                        settings={"embedder": {"name": "static"}})
    assert rec.decided_by == "bma"
    assert set(rec.expected_gain.values()) == {0.0}
    assert "cannot change this choice" in rec.labels_verdict


def test_evaluate_under_score_prints_its_units_and_no_predictor_accuracy(cli, raw_store,
                                                                         tmp_path):
    config = tmp_path / "static.yaml"
    config.write_text("embedder: {name: static}\n")
    result = cli("-q", "evaluate", "--target", "score", "--config", config, "--store",
                 raw_store.root)
    assert result.exit_code == 0, result.output
    assert "--target score: acc (and half, 95% CI) = the chosen model's mean metric value" \
        in result.output
    assert "raw (each row's mean" in result.output and "bleu_points" in result.output
    assert "predictor accuracy" not in result.output
    data = json.loads(cli("-q", "evaluate", "--target", "score", "--config", config, "--json",
                          "--store", raw_store.root).stdout)
    assert data["predictor_accuracy"] is None and data["p_mae"] is None


def test_the_why_line_says_its_gain_is_normalised():
    """The table shows the gain in the metric's units; the reason's figure is the switch's
    own, on the normalised scale: it says so."""
    from types import SimpleNamespace

    from lm_router_plugin.router.deciders import StackedSwitch

    switch = SimpleNamespace(describe=lambda: "threshold 0.01")
    for target, unit in (("score", " (normalised 0-1 value) above"), ("correct", " above")):
        view = SimpleNamespace(models=["m_a", "m_b"], n_labels=0,
                               settings=SimpleNamespace(target=target))
        text = StackedSwitch._reason(view, switch, np.array([0.0, 0.125]), 1, 0, False, 0.9)
        assert f"m_b is predicted +0.125{unit} m_a" in text


def test_an_lm_eval_nan_metric_is_one_error_naming_the_line(cli, tmp_path):
    """Python's json.dumps (lm-eval's writer) writes NaN bare: not 'damaged JSON'."""
    line = {"doc_id": 0, "doc": {"q": "x"}, "target": "y", "arguments": [["x", "y"]],
            "resps": [["y"]], "filtered_resps": ["y"], "token_f1": float("nan")}
    run = tmp_path / "runs" / "org__m"
    run.mkdir(parents=True)
    (run / "samples_toy_2026-01-01T00-00-00.000000.jsonl").write_text(json.dumps(line) + "\n")
    message = one_error(cli("ingest", "lm-eval", tmp_path / "runs"))
    assert "line 1: non-finite score token_f1=nan" in message
