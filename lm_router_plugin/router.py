"""The router of METHOD.md: kNN correctness predictors over benchmark inputs, task scores
S1/S2/S3 with a kernel-smoothed confidence p, and the fallback to the best model on average.

    >>> router = Router().fit(store.read_table(), store=store)   # embeds (cached) + calibrates
    >>> rec = router.recommend(["Translate 'chat' to English.", ...])
    >>> rec.choice, rec.fallback, rec.p_choice_beats_bma
    >>> router.route(prompts)                                     # per-prompt choice (MoE)

Fitting does one leave-one-task-out neighbour search over all reference inputs; it yields the
calibration pairs (u(d), p(d, m)) that are stored with the router, so scoring a new task is a
single neighbour search of its prompts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .embedding import Embedder, embed_texts, make_embedder
from .errors import LMRouterError, NotFittedError, UnknownNameError
from .neighbors import merge_topk, topk_cosine
from .predictors import CorrectnessPredictor, KNNPredictor
from .registry import predictors, unknown_name_message
from .schema import CORRECT, INPUT_TEXT, INSTANCE_ID, MODEL, TASK
from .scores import (
    argmax_with_ties, kernel_smoothed_p, mean_neighbour_distance, prob_beats, quiet_nanmean, s1,
    s2, s3, task_distance, thresholded_accuracy,
)
from .store import Store, atomic_write_text

logger = logging.getLogger(__name__)

SCORES = ("s1", "s2", "s3")


# -- the reference pool -----------------------------------------------------------------
@dataclass
class ReferencePool:
    """Unique reference inputs with their correctness per model.

    texts (n,), task_of (n,) index into task_names (D,), Y (n, M) in {0, 1, nan}.
    """

    texts: list[str]
    instance_ids: list[str]
    task_of: np.ndarray
    task_names: list[str]
    models: list[str]
    Y: np.ndarray


def build_pool(table: pd.DataFrame, models: Sequence[str] | None = None) -> ReferencePool:
    """Pivot a correctness table into one row per (task, instance_id), one column per model.

    The input text of an instance is the first non-empty one in model order (models may
    have seen different few-shot prompts; the first is kept, deterministically).
    """
    if table.empty:
        raise LMRouterError("the correctness table is empty: ingest results first")
    models = sorted(table[MODEL].unique()) if models is None else list(models)
    table = table[table[MODEL].isin(models)]
    model_code = pd.Categorical(table[MODEL], categories=models).codes
    order = np.lexsort((model_code, table[INSTANCE_ID].to_numpy(), table[TASK].to_numpy()))
    table = table.iloc[order]
    model_code = model_code[order]
    key = table[TASK].astype(str) + "\x00" + table[INSTANCE_ID].astype(str)
    key_code, key_values = pd.factorize(key, sort=False)
    Y = np.full((len(key_values), len(models)), np.nan, dtype=np.float32)
    Y[key_code, model_code] = table[CORRECT].to_numpy(dtype=np.float32)
    texts = table[INPUT_TEXT].to_numpy()
    has_text = texts != ""
    first = pd.Series(np.arange(len(table)))[has_text].groupby(key_code[has_text]).first()
    first_any = pd.Series(np.arange(len(table))).groupby(key_code).first()
    pick = first_any.copy()
    pick.loc[first.index] = first.to_numpy()
    pick = pick.sort_index().to_numpy()
    tasks = table[TASK].to_numpy()[pick]
    task_names = sorted(set(tasks.tolist()))
    task_index = {name: i for i, name in enumerate(task_names)}
    return ReferencePool(texts=texts[pick].tolist(),
                         instance_ids=table[INSTANCE_ID].to_numpy()[pick].tolist(),
                         task_of=np.array([task_index[t] for t in tasks], dtype=np.int64),
                         task_names=task_names, models=models, Y=Y)


# -- scoring one task --------------------------------------------------------------------
@dataclass
class TaskScores:
    """Per-model scores of one task: arrays of shape (M,); n inputs; u its distance."""

    n: int
    u: float
    s1: np.ndarray
    s2: np.ndarray
    s3: np.ndarray
    p: np.ndarray
    n_pos: np.ndarray  # inputs predicted correct, 1[g > t] summed

    def get(self, name: str) -> np.ndarray:
        return getattr(self, name)


def score_task(g: np.ndarray, u: float, p: np.ndarray, t: float) -> TaskScores:
    """S1, S2, S3 from g (n, M), the task distance u and the confidence p (M,)."""
    score2 = s2(g, t)
    return TaskScores(n=len(g), u=u, s1=s1(g), s2=score2, s3=s3(score2, p), p=p,
                      n_pos=(g > t).sum(axis=0))


@dataclass
class Decision:
    choice: int  # index of the chosen model
    best_by_score: int  # argmax of the score before any fallback
    bma: int
    fallback: bool
    p_beats_bma: float


def decide(scores: TaskScores, score: str, bma: int, tie_break: np.ndarray, allowed: np.ndarray,
           *, eta: float, n_draws: int, seed: int) -> Decision:
    """Choose a model: argmax of ``score`` among ``allowed`` (M,) bool; for S3 keep it only
    if P(its true accuracy > BMA's) > eta (eq. 3.8), estimated with a seeded Monte Carlo."""
    values = np.where(allowed, scores.get(score), -np.inf)
    best = argmax_with_ties(values, tie_break)
    if best == bma:
        p_beats = 0.5
    else:
        rng = np.random.default_rng(seed)
        p_beats = prob_beats(scores.n, int(scores.n_pos[best]), float(scores.p[best]),
                             int(scores.n_pos[bma]), float(scores.p[bma]), n_draws=n_draws,
                             rng=rng)
    fallback = score == "s3" and best != bma and not p_beats > eta
    return Decision(choice=bma if fallback else best, best_by_score=best, bma=bma,
                    fallback=fallback, p_beats_bma=p_beats)


# -- results ---------------------------------------------------------------------------
@dataclass
class ModelScore:
    model: str
    s1: float
    s2: float
    s3: float
    p: float
    params: int | None


@dataclass
class Recommendation:
    """What ``Router.recommend`` returns; ``to_dict()`` gives the documented JSON keys."""

    task: str
    n_inputs: int
    u: float
    choice: str
    bma: str
    fallback: bool
    p_choice_beats_bma: float
    score: str
    models: list[ModelScore]  # sorted by the chosen score, best first
    reason: str
    nearest_tasks: list[dict[str, Any]] = field(default_factory=list)
    u_reference_range: tuple[float, float] = (0.0, 0.0)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["u_reference_range"] = list(self.u_reference_range)
        return out


@dataclass
class RouteDecision:
    index: int
    model: str
    g: dict[str, float]


# -- the router ------------------------------------------------------------------------
class Router:
    """LLM router learned from benchmark results (METHOD.md constants as defaults).

    Args:
        k: neighbours of the kNN correctness predictor.
        kappa: neighbours for the task distance u.
        sigma: bandwidth of the kernel smoother of p.
        t: threshold on g for S2/S3.
        eta: required P(choice beats BMA) to keep the S3 choice.
        n_draws: Monte Carlo draws of the fallback test.
        seed: seed of the Monte Carlo generator.
        predictor: registered predictor name ("knn" built in).
        embedder: sentence-transformers name or folder (default all-MiniLM-L6-v2), or
            "static" for a model2vec static embedder distilled from it (static_embedding.py).
        max_seq_length: truncate prompts to this many tokens before embedding (None: the
            embedder's own limit).
        device: where the embedder runs ("cuda", "cuda:0,cuda:1", ...; None: its default).
            Not a parameter of the fitted router (same vectors on any device), so it is left
            out of ``get_params`` and of the router's cache key.
    """

    def __init__(self, *, k: int = 5, kappa: int = 19, sigma: float = 0.09, t: float = 0.5,
                 eta: float = 0.6, n_draws: int = 1000, seed: int = 0, predictor: str = "knn",
                 embedder: str | None = None, max_seq_length: int | None = None,
                 device: str | None = None):
        self.k = k
        self.kappa = kappa
        self.sigma = sigma
        self.t = t
        self.eta = eta
        self.n_draws = n_draws
        self.seed = seed
        self.predictor = predictor
        self.embedder = embedder
        self.max_seq_length = max_seq_length
        self.device = device

    def get_params(self) -> dict[str, Any]:
        return {"k": self.k, "kappa": self.kappa, "sigma": self.sigma, "t": self.t,
                "eta": self.eta, "n_draws": self.n_draws, "seed": self.seed,
                "predictor": self.predictor, "embedder": self.embedder,
                "max_seq_length": self.max_seq_length}

    # fitting -----------------------------------------------------------------------------
    def _embedder(self) -> Embedder:
        if getattr(self, "_embedder_obj", None) is None:
            self._embedder_obj = make_embedder(self.embedder, max_seq_length=self.max_seq_length,
                                               device=getattr(self, "device", None))
        return self._embedder_obj

    def _make_predictor(self) -> CorrectnessPredictor:
        cls = predictors.get(self.predictor)
        return cls(n_neighbors=self.k) if issubclass(cls, KNNPredictor) else cls()

    def fit(self, table: pd.DataFrame, *, store: Store | None = None,
            embeddings: np.ndarray | None = None) -> Router:
        """Learn from a correctness table.

        Args:
            table: correctness table (schema.py columns).
            store: where embeddings are cached (None: no cache).
            embeddings: (n_ref, dim) precomputed unit-norm embeddings in ``build_pool``
                order, instead of embedding the texts.
        """
        for name in ("k", "kappa"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        pool = build_pool(table)
        if len(pool.task_names) < 2:
            raise LMRouterError(f"need results on at least 2 tasks to calibrate the router, "
                                f"got {len(pool.task_names)}: ingest more tasks")
        X = embeddings if embeddings is not None else embed_texts(
            pool.texts, self._embedder(), store)
        self.embedder_id_ = "precomputed" if embeddings is not None else self._embedder().id
        self.models_ = pool.models
        self.task_names_ = pool.task_names
        self.task_of_ = pool.task_of
        self.instance_ids_ = pool.instance_ids
        self.X_ = np.asarray(X, dtype=np.float32)
        self.Y_ = pool.Y
        self.predictor_ = self._make_predictor().fit(self.X_, self.Y_)
        self._calibrate()
        return self

    def _calibrate(self) -> None:
        """Leave-one-task-out: g of every reference input from the other tasks, then per
        task the pairs (u(d), p(d, m)) and per-task accuracies; one neighbour search."""
        idx, sim = topk_cosine(self.X_, self.X_, max(self.k, self.kappa),
                               query_groups=self.task_of_, ref_groups=self.task_of_)
        self.loo_neighbors_ = idx
        self.loo_similarities_ = sim
        if isinstance(self.predictor_, KNNPredictor):
            self.loo_g_ = self.predictor_.from_neighbors(
                idx[:, :self.k], prior=self.predictor_.group_out_prior(self.task_of_))
        else:
            self.loo_g_ = self.predictor_.predict_leave_group_out(self.task_of_)
        nn_dist = mean_neighbour_distance(sim[:, :self.kappa])
        D, M = len(self.task_names_), len(self.models_)
        self.u_ref_ = np.zeros(D)
        self.p_ref_ = np.zeros((D, M))
        self.task_accuracy_ = np.zeros((D, M))
        for d in range(D):
            rows = self.task_of_ == d
            self.u_ref_[d] = nn_dist[rows].mean()
            self.p_ref_[d] = thresholded_accuracy(self.loo_g_[rows], self.Y_[rows], self.t)
            self.task_accuracy_[d] = quiet_nanmean(self.Y_[rows])
        self.model_mean_accuracy_ = np.nan_to_num(quiet_nanmean(self.task_accuracy_))

    def _check_fitted(self) -> None:
        if not hasattr(self, "u_ref_"):
            raise NotFittedError("This Router is not fitted yet. Call 'fit' with a correctness "
                                 "table first.")

    # scoring ---------------------------------------------------------------------------
    def model_mask(self, candidates: Sequence[str] | None = None, max_params: int | None = None,
                   model_info: dict[str, dict[str, Any]] | None = None) -> np.ndarray:
        """(M,) bool of models allowed by ``candidates`` and ``max_params``."""
        self._check_fitted()
        allowed = np.ones(len(self.models_), dtype=bool)
        if candidates:
            for name in candidates:
                if name not in self.models_:
                    raise UnknownNameError(unknown_name_message("model", name, self.models_))
            allowed &= np.isin(self.models_, list(candidates))
        if max_params is not None:
            info = model_info or {}
            params = [(info.get(m) or {}).get("params") for m in self.models_]
            unknown = [m for m, p in zip(self.models_, params) if p is None]
            if unknown:
                logger.warning("--max-params: no parameter count for %s; excluded (set them with "
                               "'lm-router ingest ... --models models.yaml')", ", ".join(unknown))
            allowed &= np.array([p is not None and p <= max_params for p in params])
        if not allowed.any():
            raise LMRouterError("no candidate model is left after --candidates/--max-params")
        return allowed

    def _labelled_pool(self, labeled: pd.DataFrame | None, store: Store | None
                       ) -> tuple[np.ndarray, np.ndarray] | None:
        """(embeddings, labels) of in-task labelled samples, or None."""
        if labeled is None or labeled.empty:
            return None
        extra_models = sorted(set(labeled[MODEL]) - set(self.models_))
        if extra_models:
            logger.warning("--labeled: ignoring models the router does not know: %s",
                           ", ".join(extra_models))
        known = labeled[labeled[MODEL].isin(self.models_)]
        if known.empty:
            raise LMRouterError("--labeled: none of its models is in the store; the labelled "
                                "samples must come from the same models")
        pool = build_pool(known, models=self.models_)
        X_lab = embed_texts(pool.texts, self._embedder(), store)
        logger.info("added %d labelled in-task inputs to the reference pool", len(X_lab))
        return X_lab, pool.Y

    def predict_correctness(self, Q: np.ndarray, extra: tuple[np.ndarray, np.ndarray] | None
                            = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """g (n, M) for query embeddings (n, dim), and the (n, max(k, kappa)) neighbour rows
        and similarities among the reference inputs.

        ``extra`` = (X_lab, Y_lab) adds labelled in-task inputs to the kNN pool (not to the
        neighbours returned, which measure the distance to the reference tasks).
        """
        K = max(self.k, self.kappa)
        idx, sim = topk_cosine(Q, self.X_, K)
        if extra is None:
            if isinstance(self.predictor_, KNNPredictor):
                return self.predictor_.from_neighbors(idx[:, :self.k]), idx, sim
            return self.predictor_.predict_proba(Q), idx, sim
        X_lab, Y_lab = extra
        if isinstance(self.predictor_, KNNPredictor):
            idx_lab, sim_lab = topk_cosine(Q, X_lab, self.k)
            both, _ = merge_topk(idx, sim, idx_lab + len(self.X_), sim_lab, self.k)
            return self.predictor_.from_neighbors(both, np.vstack([self.Y_, Y_lab])), idx, sim
        refit = self._make_predictor().fit(np.vstack([self.X_, X_lab]), np.vstack([self.Y_, Y_lab]))
        return refit.predict_proba(Q), idx, sim

    def embed(self, prompts: Sequence[str], store: Store | None = None) -> np.ndarray:
        return embed_texts(list(prompts), self._embedder(), store)

    def recommend(self, prompts: Sequence[str] | None = None, *,
                  embeddings: np.ndarray | None = None, task: str = "prompts",
                  candidates: Sequence[str] | None = None, max_params: int | None = None,
                  score: str = "s3", labeled: pd.DataFrame | None = None,
                  model_info: dict[str, dict[str, Any]] | None = None,
                  store: Store | None = None) -> Recommendation:
        """Which model to use for a new task given its prompts (or their embeddings).

        Args:
            prompts: (n,) prompt texts of the new task.
            embeddings: (n, dim) instead of ``prompts``.
            candidates, max_params: restrict the choice (``model_info`` gives params).
            score: "s1", "s2" or "s3" (the paper's method: S3 with fallback).
            labeled: correctness rows of the new task (few in-task labels) added to the
                reference pool before scoring.
        """
        self._check_fitted()
        if score not in SCORES:
            raise UnknownNameError(unknown_name_message("score", score, list(SCORES)))
        allowed = self.model_mask(candidates, max_params, model_info)  # cheap checks first
        Q = embeddings if embeddings is not None else self.embed(prompts or [], store)
        if len(Q) == 0:
            raise LMRouterError(f"task '{task}' has no inputs to score")
        g, idx, sim = self.predict_correctness(Q, self._labelled_pool(labeled, store))
        u = task_distance(sim[:, :self.kappa])
        p = kernel_smoothed_p(u, self.u_ref_, self.p_ref_, self.sigma)
        p = np.where(np.isnan(p), 0.5, p)  # a model with no calibration pair: uninformative
        scores = score_task(g, u, p, self.t)
        tie = self.model_mean_accuracy_
        bma = argmax_with_ties(np.where(allowed, self.model_mean_accuracy_, -np.inf), tie)
        dec = decide(scores, score, bma, tie, allowed, eta=self.eta, n_draws=self.n_draws,
                     seed=self.seed)
        info = model_info or {}
        rows = [ModelScore(model=m, s1=float(scores.s1[i]), s2=float(scores.s2[i]),
                           s3=float(scores.s3[i]), p=float(scores.p[i]),
                           params=(info.get(m) or {}).get("params"))
                for i, m in enumerate(self.models_) if allowed[i]]
        rows.sort(key=lambda r: -getattr(r, score))
        return Recommendation(
            task=task, n_inputs=len(Q), u=u, choice=self.models_[dec.choice],
            bma=self.models_[bma], fallback=dec.fallback, p_choice_beats_bma=dec.p_beats_bma,
            score=score, models=rows, reason=self._reason(dec, score),
            nearest_tasks=self._nearest_tasks(idx[:, :self.kappa]),
            u_reference_range=(float(self.u_ref_.min()), float(self.u_ref_.max())))

    def _reason(self, dec: Decision, score: str) -> str:
        best, bma = self.models_[dec.best_by_score], self.models_[dec.bma]
        if dec.best_by_score == dec.bma:
            return f"{best} has the highest {score.upper()} and is also the best model on average"
        if dec.fallback:
            return (f"{best} has the highest S3, but P(it beats {bma}) = {dec.p_beats_bma:.2f} "
                    f"is not above eta = {self.eta}: fell back to the best model on average")
        if score == "s3":
            return (f"{best} has the highest S3 and P(it beats the best model on average, "
                    f"{bma}) = {dec.p_beats_bma:.2f} > eta = {self.eta}")
        return f"{best} has the highest {score.upper()} (no fallback test for {score.upper()})"

    def _nearest_tasks(self, idx: np.ndarray, top: int = 3) -> list[dict[str, Any]]:
        """Reference tasks that hold most of the new prompts' kappa nearest neighbours."""
        rows = idx[idx >= 0]
        if rows.size == 0:
            return []
        counts = np.bincount(self.task_of_[rows], minlength=len(self.task_names_))
        order = np.argsort(-counts, kind="stable")[:top]
        return [{"task": self.task_names_[d], "share": float(counts[d] / rows.size),
                 "u": float(self.u_ref_[d])} for d in order if counts[d] > 0]

    def route(self, prompts: Sequence[str] | None = None, *,
              embeddings: np.ndarray | None = None, candidates: Sequence[str] | None = None,
              max_params: int | None = None, model_info: dict | None = None,
              store: Store | None = None) -> list[RouteDecision]:
        """Per-prompt choice argmax_m g_m(x) (+ 0.01 x mean reference accuracy, the authors'
        tie rule) among the allowed models."""
        self._check_fitted()
        allowed = self.model_mask(candidates, max_params, model_info)
        Q = embeddings if embeddings is not None else self.embed(prompts or [], store)
        if len(Q) == 0:
            return []
        g, _, _ = self.predict_correctness(Q)
        adjusted = np.where(allowed[None, :], g + 0.01 * self.model_mean_accuracy_[None, :],
                            -np.inf)
        choice = adjusted.argmax(axis=1)
        return [RouteDecision(index=i, model=self.models_[c],
                              g={m: float(g[i, j]) for j, m in enumerate(self.models_)
                                 if allowed[j]})
                for i, c in enumerate(choice)]

    # persistence -----------------------------------------------------------------------
    _ARRAYS = ("X_", "Y_", "task_of_", "u_ref_", "p_ref_", "task_accuracy_",
               "model_mean_accuracy_", "loo_g_", "loo_neighbors_", "loo_similarities_")

    def save(self, folder: Path, card: dict[str, Any] | None = None) -> None:
        """Write arrays + router card into ``folder`` atomically (temp folder + rename)."""
        self._check_fitted()
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            np.savez(tmp / "arrays.npz", **{n: getattr(self, n) for n in self._ARRAYS})
            state = {"params": self.get_params(), "models": self.models_,
                     "tasks": self.task_names_, "instance_ids": self.instance_ids_,
                     "embedder_id": self.embedder_id_}
            (tmp / "state.json").write_text(json.dumps(state))
            (tmp / "card.json").write_text(json.dumps(card or self.card(), indent=2) + "\n")
            if folder.exists():
                shutil.rmtree(folder)
            tmp.rename(folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)

    @classmethod
    def load(cls, folder: Path) -> Router:
        state = json.loads((folder / "state.json").read_text())
        router = cls(**state["params"])
        with np.load(folder / "arrays.npz") as arrays:
            for name in cls._ARRAYS:
                setattr(router, name, arrays[name])
        router.models_ = state["models"]
        router.task_names_ = state["tasks"]
        router.instance_ids_ = state["instance_ids"]
        router.embedder_id_ = state["embedder_id"]
        router.predictor_ = router._make_predictor().fit(router.X_, router.Y_)
        return router

    def card(self) -> dict[str, Any]:
        """A small description of the fitted router (like a model card)."""
        from . import __version__

        return {"lm_router_plugin_version": __version__, "embedder": self.embedder_id_,
                "params": self.get_params(), "n_models": len(self.models_),
                "models": self.models_, "n_tasks": len(self.task_names_),
                "tasks": self.task_names_, "n_reference_inputs": int(len(self.X_)),
                "n_labels": int((~np.isnan(self.Y_)).sum()),
                "best_model_on_average": self.models_[int(argmax_with_ties(
                    self.model_mean_accuracy_, self.model_mean_accuracy_))]}


def fit_or_load(store: Store, **params: Any) -> Router:
    """The store's fitted router for these parameters; refitted only when the table or the
    embedder changed (the folder name is a hash of both and of the parameters)."""
    from . import __version__

    if not store.has_table():
        store.read_table(required=True)  # raises the "ingest first" error
    router = Router(**params)
    embedder_id = router._embedder().id
    fingerprint = store.table_fingerprint()
    key = json.dumps([fingerprint, embedder_id, router.get_params(), __version__],
                     sort_keys=True, default=str)
    folder = store.routers_dir() / hashlib.sha256(key.encode()).hexdigest()[:16]
    if (folder / "card.json").exists():
        loaded = Router.load(folder)
        loaded._embedder_obj = router._embedder()
        return loaded
    table = store.read_table()  # only when (re)fitting: a cached router needs no table
    logger.info("fitting the router on %d rows (%s)", len(table), embedder_id)
    router.fit(table, store=store)
    card = router.card()
    card["table_fingerprint"] = fingerprint
    card["n_rows"] = int(len(table))
    router.save(folder, card)
    for old in store.routers_dir().iterdir():  # keep only the current router
        if old.is_dir() and old != folder and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    atomic_write_text(store.routers_dir() / "CURRENT", folder.name + "\n")
    return router
