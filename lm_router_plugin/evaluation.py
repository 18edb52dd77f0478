"""Leave-one-task-out evaluation of the router (METHOD.md "Evaluation protocol").

    >>> result = evaluate(table, store=store, alphas=[0, 0.05], repeats=10)
    >>> result.rows["s3"]["acc"], result.rows["bma"]["acc"], result.rows["oracle"]["acc"]

Nothing is refitted per task: the router's fit already ran one neighbour search over all
inputs with each input's own task masked out; every score, every held-out task and every
alpha of the in-task-label sweep reuses it (in-task labels are merged into those neighbour
lists with a small within-task similarity block).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError, LMRouterError, UnknownNameError
from .neighbors import merge_topk
from .predictors import KNNPredictor
from .registry import unknown_name_message
from .router import Router, decide, score_task
from .scores import (
    argmax_with_ties, kernel_smoothed_p, quiet_nanmean, task_distance, thresholded_accuracy,
)
from .store import Store

logger = logging.getLogger(__name__)

ROW_NAMES = ("s1", "s2", "s3", "s3_true_p", "moe", "bma", "oracle")
MAX_LABELS = 50  # the paper's cap on in-task labels: min(alpha n, 50)
LABEL_P_STRENGTH = 10.0  # pseudo-labels the kernel-smoothed p is worth when labels exist


@dataclass
class EvaluationResult:
    """Averages over held-out tasks (``rows``), one record per task (``per_task``)."""

    n_tasks: int
    n_models: int
    rows: dict[str, dict[str, Any]]
    per_task: list[dict[str, Any]]
    predictor_accuracy: float  # mean accuracy of 1[g > t] on held-out tasks
    p_mae: float  # mean |p_hat - true p|
    alpha_sweep: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"n_tasks": self.n_tasks, "n_models": self.n_models, "rows": self.rows,
                "per_task": self.per_task, "predictor_accuracy": self.predictor_accuracy,
                "p_mae": self.p_mae, "alpha_sweep": self.alpha_sweep, "settings": self.settings}


def regroup_tasks(table: pd.DataFrame, tasks_by: str = "task",
                  side_table: pd.DataFrame | None = None) -> pd.DataFrame:
    """A copy of ``table`` whose ``task`` column is the grouping column ``tasks_by``, taken
    from the table itself (e.g. ``benchmark``) or from ``side_table`` joined on instance_id
    (and on task when the side table has that column too)."""
    if tasks_by == "task":
        return table
    out = table.copy()
    if tasks_by in out.columns and side_table is None:
        out["task"] = out[tasks_by].astype(str)
        empty = out["task"] == ""
        if empty.any():
            raise LMRouterError(f"--tasks-by {tasks_by}: {int(empty.sum())} rows have an empty "
                                f"'{tasks_by}'")
        return out
    if side_table is None or tasks_by not in side_table.columns:
        available = sorted(set(out.columns) | set([] if side_table is None else side_table))
        raise UnknownNameError(unknown_name_message("grouping column", tasks_by, available)
                               + " (give a side table with --tasks-file)")
    keys = ["instance_id"] + (["task"] if "task" in side_table.columns else [])
    side = side_table[keys + [tasks_by]].astype(str).drop_duplicates(keys)
    out = out.merge(side, on=keys, how="left")
    missing = out[tasks_by].isna()
    if missing.any():
        example = out.loc[missing, "instance_id"].iloc[0]
        raise LMRouterError(f"--tasks-file has no '{tasks_by}' for {int(missing.sum())} rows "
                            f"(e.g. instance_id {example!r})")
    out["task"] = out.pop(tasks_by)
    return out


def read_side_table(path: str | Path) -> pd.DataFrame:
    """A side table of instance groupings (CSV, TSV, Parquet; .gz allowed), as strings."""
    path = Path(path)
    name = path.name.removesuffix(".gz")
    try:
        if name.endswith(".parquet"):
            return pd.read_parquet(path).astype(str)
        sep = "\t" if name.endswith((".tsv", ".tab")) else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises many types for unreadable files
        raise InputError(path, f"cannot read the side table: {exc}",
                         hint="give a CSV/TSV/Parquet file with instance_id and the column") from exc


def _rank_of(acc: np.ndarray, chosen: int, allowed: np.ndarray) -> float:
    """1 + number of allowed models with strictly higher true accuracy."""
    return float(1 + np.sum(allowed & (acc > acc[chosen])))


def _correlations(score: np.ndarray, acc: np.ndarray) -> tuple[float, float]:
    """(Pearson, Spearman) across models; nan when either side is constant.

    Plain numpy (Spearman = Pearson of average ranks): scipy.stats' versions cost ~3 ms a
    call, which dominated the alpha sweep.
    """
    if len(score) < 2 or np.ptp(score) == 0 or np.ptp(acc) == 0:
        return math.nan, math.nan
    return _pearson(score, acc), _pearson(_average_ranks(score), _average_ranks(acc))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties averaged (scipy.stats.rankdata's 'average' method)."""
    x = np.asarray(x, dtype=float)
    sorter = np.argsort(x, kind="mergesort")
    inverse = np.empty_like(sorter)
    inverse[sorter] = np.arange(len(x))
    ordered = x[sorter]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    dense = first.cumsum()[inverse]
    bounds = np.r_[np.flatnonzero(first), len(x)]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=float) - np.mean(a)
    b = np.asarray(b, dtype=float) - np.mean(b)
    return float(np.dot(a, b) / math.sqrt(np.dot(a, a) * np.dot(b, b)))


class _Evaluator:
    """Holds the fitted router's leave-one-task-out state and evaluates one task at a time."""

    def __init__(self, router: Router, allowed: np.ndarray, params: np.ndarray,
                 compare_to: int | None):
        self.r = router
        self.allowed = allowed
        self.params = params  # (M,) float, nan when unknown
        self.compare_to = compare_to
        self.label_p_strength = LABEL_P_STRENGTH
        # g's fallback where no neighbour is labelled: the mean label outside the held-out task
        self.prior_without = (router.predictor_.group_out_prior(router.task_of_)
                              if isinstance(router.predictor_, KNNPredictor) else None)
        D = len(router.task_names_)
        # BMA of held-out d: mean per-task accuracy over the other tasks.
        acc = router.task_accuracy_
        with np.errstate(invalid="ignore"):
            totals = np.nansum(acc, axis=0)
            counts = (~np.isnan(acc)).sum(axis=0)
        self.mean_acc_without = np.zeros((D, acc.shape[1]))
        for d in range(D):
            has = ~np.isnan(acc[d])
            with np.errstate(invalid="ignore", divide="ignore"):
                self.mean_acc_without[d] = np.nan_to_num(
                    (totals - np.where(has, acc[d], 0)) / (counts - has))

    def choose(self, name: str, scores: Any, d: int, allowed: np.ndarray) -> tuple[int, bool]:
        tie = self.mean_acc_without[d]
        bma = argmax_with_ties(np.where(allowed, tie, -np.inf), tie)
        dec = decide(scores, name, bma, tie, allowed, eta=self.r.eta, n_draws=self.r.n_draws,
                     seed=self.r.seed + d)
        return dec.choice, dec.fallback

    def record(self, name: str, chosen: int, acc: np.ndarray, allowed: np.ndarray, d: int,
               score: np.ndarray | None) -> dict[str, Any]:
        tie = self.mean_acc_without[d]
        bma = argmax_with_ties(np.where(allowed, tie, -np.inf), tie)
        best = np.nanmax(np.where(allowed, acc, np.nan))
        pearson = spearman = math.nan
        if score is not None:
            pearson, spearman = _correlations(score[allowed], acc[allowed])
        return {"acc": float(acc[chosen]),
                "ratio_to_best": float(acc[chosen] / best) if best > 0 else math.nan,
                "pearson": pearson, "spearman": spearman, "bma": float(chosen == bma),
                "params": float(self.params[chosen]), "rank": _rank_of(acc, chosen, allowed),
                "model": self.r.models_[chosen]}

    def task_rows(self, d: int) -> dict[str, Any]:
        r = self.r
        rows = np.flatnonzero(r.task_of_ == d)
        y = r.Y_[rows]
        acc = quiet_nanmean(y)
        allowed = self.allowed & ~np.isnan(acc)
        g = r.loo_g_[rows]
        u = float(r.u_ref_[d])
        exclude = np.arange(len(r.task_names_)) == d
        p_hat = kernel_smoothed_p(u, r.u_ref_, r.p_ref_, r.sigma, exclude=exclude)
        p_hat = np.where(np.isnan(p_hat), 0.5, p_hat)
        p_true = np.where(np.isnan(r.p_ref_[d]), 0.5, r.p_ref_[d])
        est = score_task(g, u, p_hat, r.t)
        true = score_task(g, u, p_true, r.t)
        out: dict[str, Any] = {"task": r.task_names_[d], "n": int(len(rows)), "u": u}
        for name, scores, score_name in (("s1", est, "s1"), ("s2", est, "s2"),
                                         ("s3", est, "s3"), ("s3_true_p", true, "s3")):
            chosen, fallback = self.choose(score_name, scores, d, allowed)
            out[name] = self.record(name, chosen, acc, allowed, d, scores.get(score_name))
            out[name]["fallback"] = fallback
        # MoE: per input argmax g (+ 0.01 x mean accuracy, the authors' tie rule).
        tie = self.mean_acc_without[d]
        per_input = np.where(allowed[None, :], g + 0.01 * tie[None, :], -np.inf).argmax(1)
        picked = y[np.arange(len(rows)), per_input]
        moe = self.record("moe", int(np.argmax(np.bincount(per_input))), acc, allowed, d, None)
        moe["acc"] = float(np.nanmean(picked)) if (~np.isnan(picked)).any() else math.nan
        best = np.nanmax(np.where(allowed, acc, np.nan))
        moe["ratio_to_best"] = float(moe["acc"] / best) if best > 0 else math.nan
        chosen_params = self.params[per_input]
        moe["params"] = (float(np.nanmean(chosen_params)) if (~np.isnan(chosen_params)).any()
                         else math.nan)
        moe["rank"] = math.nan
        moe["bma"] = float(np.mean(per_input == argmax_with_ties(
            np.where(allowed, tie, -np.inf), tie)))
        out["moe"] = moe
        bma = argmax_with_ties(np.where(allowed, tie, -np.inf), tie)
        out["bma"] = self.record("bma", bma, acc, allowed, d, None)
        oracle = argmax_with_ties(np.where(allowed, acc, -np.inf), tie)
        out["oracle"] = self.record("oracle", oracle, acc, allowed, d, None)
        if self.compare_to is not None and not np.isnan(acc[self.compare_to]):
            every = np.ones_like(allowed)
            out["compare_to"] = self.record("compare_to", self.compare_to, acc, every, d, None)
        has = ~np.isnan(p_true) & allowed
        out["predictor_accuracy"] = float(np.mean(r.p_ref_[d][has & ~np.isnan(r.p_ref_[d])]))
        out["p_mae"] = float(np.mean(np.abs(p_hat - r.p_ref_[d])[has & ~np.isnan(r.p_ref_[d])]))
        out["scores"] = {m: {"s1": float(est.s1[i]), "s2": float(est.s2[i]),
                             "s3": float(est.s3[i]), "p": float(p_hat[i]),
                             "true_p": float(p_true[i]), "acc": float(acc[i])}
                         for i, m in enumerate(r.models_)}
        return out

    def labelled_rows(self, d: int, alpha: float, rng: np.random.Generator,
                      selection: str = "random") -> dict[str, Any] | None:
        """One repeat of the in-task-label sweep on task d: min(alpha n, 50) labelled inputs
        join the reference pool; scores and true accuracies use the remaining inputs."""
        r = self.r
        rows = np.flatnonzero(r.task_of_ == d)
        n_lab = min(max(1, int(alpha * len(rows))), MAX_LABELS, len(rows) - 1)
        if n_lab < 1:
            return None
        if selection == "random":
            lab = np.sort(rng.choice(rows, size=n_lab, replace=False))
        else:
            lab = select_diverse(r.X_[rows], n_lab, rng) if selection == "diverse" else None
            lab = rows[lab]
        rest = np.setdiff1d(rows, lab)
        K = r.loo_neighbors_.shape[1]
        sim_in = r.X_[rest] @ r.X_[lab].T  # (n_rest, n_lab) within-task block
        idx, sim = merge_topk(r.loo_neighbors_[rest], r.loo_similarities_[rest],
                              np.broadcast_to(lab, sim_in.shape), sim_in, K)
        if isinstance(r.predictor_, KNNPredictor):
            g = r.predictor_.from_neighbors(idx[:, :r.k], prior=self.prior_without[rows[0]])
        else:
            keep = (r.task_of_ != d)
            keep[lab] = True
            g = r._make_predictor().fit(r.X_[keep], r.Y_[keep]).predict_proba(r.X_[rest])
        # u stays the distance to the *reference tasks* (labelled in-task inputs are not a
        # reference task), so p keeps meaning "how far is this task from the benchmark".
        u = task_distance(r.loo_similarities_[rest, :r.kappa])
        exclude = np.arange(len(r.task_names_)) == d
        p_hat = kernel_smoothed_p(u, r.u_ref_, r.p_ref_, r.sigma, exclude=exclude)
        p_hat = np.where(np.isnan(p_hat), 0.5, p_hat)
        y_rest = r.Y_[rest]
        acc = quiet_nanmean(y_rest)
        acc_lab = quiet_nanmean(r.Y_[lab])  # nan for a model without labels here
        allowed = self.allowed & ~np.isnan(acc)
        scores = score_task(g, u, p_hat, r.t)
        out: dict[str, Any] = {"n_labels": int(n_lab)}
        for name in ("s1", "s3"):
            chosen, _ = self.choose(name, scores, d, allowed)
            out[name] = self.record(name, chosen, acc, allowed, d, scores.get(name))
        tie = self.mean_acc_without[d]
        few = argmax_with_ties(np.where(allowed & ~np.isnan(acc_lab), acc_lab, -np.inf), tie)
        out["few_shot"] = self.record("few_shot", few, acc, allowed, d, acc_lab)
        if isinstance(r.predictor_, KNNPredictor):
            # Beyond the paper: the labels also measure the predictor's accuracy in-task.
            p_lab, n_lab_m = self._labelled_p(lab, d)
            p_mix = label_calibrated_p(p_hat, p_lab, n_lab_m, self.label_p_strength)
            mixed = score_task(g, u, p_mix, r.t)
            chosen, _ = self.choose("s3", mixed, d, allowed)
            out["s3_label_p"] = self.record("s3_label_p", chosen, acc, allowed, d, mixed.s3)
        out["predictor_accuracy"] = float(np.nanmean(
            thresholded_accuracy(g, y_rest, r.t)[allowed]))
        return out


    def _labelled_p(self, lab: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
        """Accuracy of 1[g > t] on the labelled in-task inputs, each predicted from the
        reference pool plus the *other* labelled inputs: (p (M,), labels per model (M,))."""
        r = self.r
        sim_ll = r.X_[lab] @ r.X_[lab].T
        np.fill_diagonal(sim_ll, -np.inf)
        idx, sim = merge_topk(r.loo_neighbors_[lab, :r.k], r.loo_similarities_[lab, :r.k],
                              np.broadcast_to(lab, sim_ll.shape), sim_ll, r.k)
        idx = np.where(np.isfinite(sim), idx, -1)  # never a labelled input itself
        g_lab = r.predictor_.from_neighbors(idx, prior=self.prior_without[lab[0]])
        y_lab = r.Y_[lab]
        return (thresholded_accuracy(g_lab, y_lab, r.t),
                (~np.isnan(y_lab)).sum(axis=0).astype(float))


def label_calibrated_p(p_kernel: np.ndarray, p_labels: np.ndarray, n_labels: np.ndarray,
                       strength: float) -> np.ndarray:
    """Blend the kernel-smoothed p (worth ``strength`` pseudo-labels) with p measured on
    n in-task labels: (n p_labels + strength p_kernel) / (n + strength). (M,) arrays."""
    p_labels = np.where(np.isnan(p_labels), p_kernel, p_labels)
    return (n_labels * p_labels + strength * p_kernel) / (n_labels + strength)


def select_diverse(X: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n row numbers of X spread over the task (greedy farthest-point, seeded start): an
    active alternative to random in-task labels."""
    first = int(rng.integers(len(X)))
    chosen = [first]
    dist = 1.0 - X @ X[first]
    for _ in range(n - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, 1.0 - X @ X[nxt])
    return np.sort(np.array(chosen))


def _mean(values: Sequence[float]) -> float:
    arr = np.array([v for v in values if v is not None], dtype=float)
    return float(np.nanmean(arr)) if arr.size and (~np.isnan(arr)).any() else math.nan


_COLUMNS = ("acc", "ratio_to_best", "pearson", "spearman", "bma", "params", "rank")


def _summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    out = {col: _mean([r[col] for r in records]) for col in _COLUMNS}
    out["pct_bma"] = out.pop("bma")
    return out


def evaluate(table: pd.DataFrame, *, store: Store | None = None,
             embeddings: np.ndarray | None = None, router: Router | None = None,
             alphas: Sequence[float] = (0.0,), repeats: int = 10,
             candidates: Sequence[str] | None = None, max_params: int | None = None,
             compare_to: str | None = None, model_info: dict[str, dict] | None = None,
             label_selection: str = "random") -> EvaluationResult:
    """Leave-one-task-out evaluation of S1, S2, S3, S3 with true p, MoE, BMA and Oracle.

    Args:
        table: correctness table, already regrouped (see :func:`regroup_tasks`).
        store: embedding cache. embeddings: (n_ref, dim) in ``build_pool`` order instead.
        router: unfitted Router carrying the constants (default METHOD.md's).
        alphas: in-task label fractions; 0 is the plain protocol.
        repeats: seeded repetitions per alpha > 0.
        candidates, max_params: route among a subset (thesis §4.3); ``compare_to`` names a
            model (e.g. the large one) reported beside it.
        label_selection: "random" (the paper) or "diverse" (farthest-point selection).
    """
    router = router or Router()
    router.fit(table, store=store, embeddings=embeddings)
    info = model_info or {}
    allowed = router.model_mask(candidates, max_params, info)
    params = np.array([np.nan if (info.get(m) or {}).get("params") is None
                       else float(info[m]["params"]) for m in router.models_])
    compare_index = None
    if compare_to is not None:
        if compare_to not in router.models_:
            raise UnknownNameError(unknown_name_message("model", compare_to, router.models_))
        compare_index = router.models_.index(compare_to)
    ev = _Evaluator(router, allowed, params, compare_index)
    D = len(router.task_names_)
    per_task = [ev.task_rows(d) for d in range(D)]
    names = list(ROW_NAMES) + (["compare_to"] if compare_index is not None else [])
    rows = {name: _summarise([t[name] for t in per_task if name in t]) for name in names}
    for name in ("moe", "bma", "oracle", "compare_to"):
        if name in rows:
            rows[name]["pearson"] = rows[name]["spearman"] = None
    rows["moe"]["rank"] = None
    if compare_index is not None:
        rows["compare_to"]["model"] = compare_to
    sweep = []
    for alpha in alphas:
        if alpha <= 0:
            continue
        repeat_rows: dict[str, list[dict[str, Any]]] = {"s1": [], "s3": [], "few_shot": []}
        if isinstance(router.predictor_, KNNPredictor):
            repeat_rows["s3_label_p"] = []
        pred_acc = []
        for rep in range(repeats):
            rng = np.random.default_rng([router.seed, rep, int(round(alpha * 1e6))])
            recs = [ev.labelled_rows(d, alpha, rng, label_selection) for d in range(D)]
            recs = [x for x in recs if x is not None]
            for name in repeat_rows:
                repeat_rows[name].append(_summarise([x[name] for x in recs]))
            pred_acc.append(_mean([x["predictor_accuracy"] for x in recs]))
        entry: dict[str, Any] = {"alpha": alpha, "predictor_accuracy": _mean(pred_acc)}
        for name, reps in repeat_rows.items():
            summary = {col: _mean([rep[col] for rep in reps]) for col in reps[0]}
            summary["acc_std"] = float(np.nanstd([rep["acc"] for rep in reps]))
            rows[f"{name}@{alpha:g}"] = summary
            entry[name] = summary
        sweep.append(entry)
    return EvaluationResult(
        n_tasks=D, n_models=int(allowed.sum()), rows=rows, per_task=per_task,
        predictor_accuracy=_mean([t["predictor_accuracy"] for t in per_task]),
        p_mae=_mean([t["p_mae"] for t in per_task]), alpha_sweep=sweep,
        settings={**router.get_params(), "alphas": list(alphas), "repeats": repeats,
                  "candidates": list(candidates) if candidates else None,
                  "max_params": max_params, "compare_to": compare_to,
                  "label_selection": label_selection, "embedder": router.embedder_id_})


__all__ = ["EvaluationResult", "evaluate", "label_calibrated_p", "read_side_table", "regroup_tasks",
           "select_diverse"]
