"""The router of METHOD.md: correctness predictors over benchmark inputs, task scores
S1/S2/S3 with a kernel-smoothed confidence p, and the fallback to the best model on average.

    >>> router = Router().fit(store.read_table(), store=store)   # embeds (cached) + calibrates
    >>> rec = router.recommend(["Translate 'chat' to English.", ...])
    >>> rec.choice, rec.fallback, rec.p_choice_beats_bma
    >>> router.route(prompts)                                     # per-prompt choice (MoE)

Where each job lives: the reference pool in ``pool.py``, the predictors in
``predictors.py``, the calibration pairs and the BMA in ``calibration.py``, the decisions
in ``deciders.py`` (``Router.recommend`` builds their TaskView; evaluate uses the same
objects), what recommend returns in ``recommendation.py``, saving/loading and the
refit-or-reuse cache policy in ``persistence.py``. This class ties them together and holds
the parameters.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..embedding.embedders import Embedder, embed_texts, make_embedder
from ..errors import InvalidParameterError, LMRouterError, NotFittedError, UnknownNameError
from ..registry import deciders, predictors, unknown_name_message
from ..settings import validate_params
from ..store.schema import MODEL
from ..store.store import Store, parse_params
from .calibration import best_on_average, calibrate
from .deciders import (
    DEFAULT_DECIDER,
    Decider,
    Decision,
    DecisionSettings,
    StackedSwitch,
    TaskView,
    check_decider_target,
    checked_decision,
)
from .neighbors import (
    AUTO_FAISS_MIN_REFS,
    FAISS_GROUPED_MIN_ROWS,
    FaissIVFIndex,
    GroupedNeighbors,
    NeighborIndex,
    build_index,
    merge_topk,
    resolve_index_kind,
    topk_cosine,
)
from .pool import ReferencePool, build_pool, fit_route_margin, route_with_margin, rows_by_task
from .predictors import CorrectnessPredictor, build_predictor, checked_g, value_bounds
from .recommendation import (
    ModelScore,
    Recommendation,
    RouteDecision,
    in_metric_units,
    nearest_tasks,
    route_choices,
    u_note,
)
from .scores import argmax_with_ties, quiet_nanmean
from .task_level import DEFAULT_K as DEFAULT_TASK_K
from .task_level import TaskKernel, kernel_estimates

logger = logging.getLogger(__name__)

# Parameters that change what is fitted (a new router) vs. only the decision (no refit).
FIT_PARAMS = ("k", "kappa", "t", "predictor", "predictor_params", "embedder", "max_seq_length",
              "target", "task_k")
DECISION_PARAMS = ("sigma", "eta", "n_draws", "seed")
# How the reference pool is searched (neighbors.py). Applied when a saved router is loaded,
# like DECISION_PARAMS; only an approximate index enters the cache key (``fit_params``).
SEARCH_PARAMS = ("index", "index_threshold", "nlist", "nprobe")


class Router:
    """LLM router learned from benchmark results (METHOD.md constants as defaults).

    Args:
        k: neighbours of the kNN correctness predictor (passed to any predictor that has an
            ``n_neighbors`` parameter).
        kappa: neighbours for the task distance u.
        sigma: bandwidth of the kernel smoother of p (scoring time only).
        t: threshold on g for S2/S3.
        eta: required P(choice beats BMA) to keep the S3 choice.
        n_draws: Monte Carlo draws of the fallback test.
        seed: seed of the Monte Carlo generator.
        predictor: registered predictor name ("knn" built in).
        predictor_params: keyword parameters of the predictor.
        embedder: sentence-transformers name or folder (default all-MiniLM-L6-v2, also
            "minilm"), or "static" for a model2vec static embedder distilled from it
            (static_embedding.py).
        max_seq_length: truncate prompts to this many tokens before embedding (None: the
            embedder's own limit).
        device: where the embedder runs ("cuda", "cuda:0,cuda:1", ...; None: its default).
            Not a parameter of the fitted router (same vectors on any device), so it is left
            out of ``get_params`` and of the router's cache key.
        index: neighbour search over the reference pool: "auto" (exact numpy below
            ``index_threshold`` rows, exact faiss from there when faiss-cpu is installed),
            "exact", "faiss-flat" (exact) or "faiss-ivf" (approximate; part of the cache key
            with ``nlist``). See neighbors.py.
        index_threshold: reference rows from which "auto" uses faiss-flat.
        nlist, nprobe: faiss-ivf lists and lists probed per query (None: the rules
            ``ivf_nlist``/``ivf_nprobe``). nprobe acts at search time only (no refit).
        target: what the predictors learn: "correct" (the 0/1 correctness of the
            thresholds) or "score" (the raw metric values, mapped per metric onto [0, 1] by
            pool.ScoreScale; docs/raw-metrics.md). Part of the fitted state.
        task_k: reference inputs per doc in the task-level accuracy estimate the stacked
            switch reads as its S1 (task_level.TaskKernel: a similarity kernel over the
            task_k nearest, its bandwidth chosen by an inner leave-one-task-out for the
            choice); 0: the kNN predictor's S1 (k neighbours). Part of the fitted state.
    """

    def __init__(self, *, k: int = 5, kappa: int = 19, sigma: float = 0.09, t: float = 0.5,
                 eta: float = 0.6, n_draws: int = 1000, seed: int = 0, predictor: str = "knn",
                 predictor_params: dict[str, Any] | None = None, embedder: str | None = None,
                 max_seq_length: int | None = None, device: str | None = None,
                 index: str = "auto", index_threshold: int = AUTO_FAISS_MIN_REFS,
                 nlist: int | None = None, nprobe: int | None = None,
                 target: str = "correct", task_k: int = DEFAULT_TASK_K):
        self.k = k
        self.kappa = kappa
        self.sigma = sigma
        self.t = t
        self.eta = eta
        self.n_draws = n_draws
        self.seed = seed
        self.predictor = predictor
        self.predictor_params = dict(predictor_params or {})
        self.embedder = embedder
        self.max_seq_length = max_seq_length
        self.device = device
        self.index = index
        self.index_threshold = index_threshold
        self.nlist = nlist
        self.nprobe = nprobe
        self.target = target
        self.task_k = task_k

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name)
                for name in FIT_PARAMS + DECISION_PARAMS + SEARCH_PARAMS}

    def fit_params(self) -> dict[str, Any]:
        """The parameters that define the fitted state (the router cache key). The exact
        index kinds give the same neighbours and are left out; faiss-ivf is saved with the
        router and changes results, so it and its nlist are in."""
        params = {name: getattr(self, name) for name in FIT_PARAMS}
        if params["target"] == "correct":  # the keys of routers fitted before --target
            del params["target"]
        if self.index == "faiss-ivf":
            params["index"] = {"kind": "faiss-ivf", "nlist": self.nlist}
        return params

    def decision_settings(self) -> DecisionSettings:
        return DecisionSettings(sigma=self.sigma, eta=self.eta, n_draws=self.n_draws,
                                seed=self.seed, t=self.t, target=self.target)

    def validate_params(self) -> None:
        """Range-check every constant (settings.validate_params); raises
        InvalidParameterError naming the first bad one. Cheap: call it before any embedding
        or fitting."""
        validate_params({**self.get_params(), "device": self.device})

    # building blocks (public: the evaluation uses them too) -----------------------------------
    def make_predictor(self) -> CorrectnessPredictor:
        """A new, unfitted predictor with its parameters (``k`` as ``n_neighbors``)."""
        return build_predictor(predictors.get(self.predictor), self.predictor_params, self.k)

    def embedder_object(self) -> Embedder:
        if getattr(self, "_embedder_obj", None) is None:
            self._embedder_obj = make_embedder(self.embedder, max_seq_length=self.max_seq_length,
                                               device=getattr(self, "device", None))
        return self._embedder_obj

    def embed(self, texts: Sequence[str], store: Store | None = None) -> np.ndarray:
        return embed_texts(list(texts), self.embedder_object(), store)

    def reference_embeddings(self, pool: ReferencePool, store: Store | None,
                             embeddings: np.ndarray | None) -> tuple[np.ndarray, str]:
        """((n, dim) float32 unit-norm embeddings of the pool, embedder id)."""
        if embeddings is not None:
            if len(embeddings) != len(pool.texts):
                raise LMRouterError(f"got {len(embeddings)} embeddings for {len(pool.texts)} "
                                    "reference inputs")
            return _embedding_matrix(embeddings, "reference embeddings"), "precomputed"
        return np.asarray(self.embed(pool.texts, store), np.float32), self.embedder_object().id

    # fitting -----------------------------------------------------------------------------
    def fit(self, table: pd.DataFrame, *, store: Store | None = None,
            embeddings: np.ndarray | None = None) -> Router:
        """Learn from a correctness table.

        Args:
            table: correctness table (schema.py columns).
            store: where embeddings are cached (None: no cache).
            embeddings: (n_ref, dim) precomputed unit-norm embeddings in ``build_pool``
                order, instead of embedding the texts.
        """
        self.validate_params()
        pool = build_pool(table, target=self.target)
        if len(pool.task_names) < 2:
            raise LMRouterError(f"need results on at least 2 tasks to calibrate the router, "
                                f"got {len(pool.task_names)}: ingest more tasks")
        X, self.embedder_id_ = self.reference_embeddings(pool, store, embeddings)
        self.models_ = pool.models
        self.task_names_ = pool.task_names
        self.task_of_ = pool.task_of
        self.instance_ids_ = pool.instance_ids
        self.X_ = X
        self.Y_ = pool.Y
        self.scales_, self.task_metrics_ = pool.scales, pool.task_metrics  # target "score"
        self.predictor_ = self.make_predictor().fit(self.X_, self.Y_)
        self.index_ = None
        index = self.neighbor_index()  # faiss-ivf: trained here, saved with the router
        # Leave-one-task-out calibration: one neighbour search serves g (kNN), u and the
        # task-level S1. Always exact: with faiss and large tasks it runs on faiss's kernels
        # (same neighbours).
        big_tasks = len(X) >= FAISS_GROUPED_MIN_ROWS * len(self.task_names_)
        neighbors = GroupedNeighbors(X, self.task_of_, max(self.k, self.kappa, self.task_k),
                                     per_group=False,
                                     backend="faiss" if index.kind != "exact" and big_tasks
                                     else "numpy")
        self.loo_g_ = checked_g(self.predictor_.predict_left_out(
            X, self.Y_, self.task_of_, np.arange(len(X)), neighbors=neighbors),
            len(X), self.Y_.shape[1], self.predictor_)  # (a fit's Y_ lies in [0, 1])
        self.calibration_ = calibrate(self.task_of_, self.Y_, self.loo_g_,
                                      neighbors.sim[:, :self.kappa], self.t,
                                      len(self.task_names_))
        if self.task_k > 0:  # each reference task's kernel S1 from the other tasks
            kernel = TaskKernel(X, self.Y_, self.task_of_, k=self.task_k,
                                n_tasks=len(self.task_names_), slack=0, keep_rows=False,
                                neighbours=(neighbors.idx, neighbors.sim))
            self.calibration_.task_s1 = kernel.task_s1()
            self.calibration_.task_bandwidths = np.array(kernel.bandwidths)
        return self

    def task_level_s1(self, Q: np.ndarray, bandwidths: Sequence[float] | None = None
                      ) -> np.ndarray | None:
        """(H, M) the task-level kernel S1 of a task whose docs have embeddings Q (N, dim),
        per bandwidth (default: the calibration's task_bandwidths), from the task_k nearest
        reference inputs of each doc (through the router's index); None when task_k is 0."""
        if self.calibration_.task_bandwidths is None or self.task_k <= 0 or len(Q) == 0:
            return None
        if bandwidths is None:
            bandwidths = self.calibration_.task_bandwidths
        idx, sim = self.neighbor_index().search(np.asarray(Q, np.float32), self.task_k)
        return quiet_nanmean(kernel_estimates(idx, sim, self.Y_, bandwidths), axis=1)

    def task_s1_reader(self, Q: np.ndarray) -> Callable[[int], np.ndarray] | None:
        """TaskView.task_s1 for docs Q (N, dim): j -> (M,) their task-level S1 at bandwidth
        j, computed on first use for that bandwidth only (the switch reads one) and kept."""
        bandwidths = self.calibration_.task_bandwidths
        if bandwidths is None or self.task_k <= 0:
            return None
        done: dict[int, np.ndarray] = {}

        def at(j: int) -> np.ndarray:
            if j not in done:
                done[j] = self.task_level_s1(Q, [bandwidths[j]])[0]
            return done[j]

        return at

    def neighbor_index(self) -> NeighborIndex:
        """The search over the fitted pool ``X_`` for the current index parameters: built
        on first use (exact kinds: nothing to build) and reused; a faiss-ivf index from
        ``fit`` or the saved router is kept, with ``nprobe`` applied."""
        index = getattr(self, "index_", None)
        request = (self.index, self.index_threshold, self.nlist)
        if index is None or getattr(self, "_index_request", None) != request \
                or index.refs is not self.X_:
            kind = resolve_index_kind(self.index, len(self.X_), self.index_threshold)
            reuse = (isinstance(index, FaissIVFIndex) and kind == "faiss-ivf"
                     and index.refs is self.X_ and self.nlist in (None, index.nlist))
            if not reuse:
                index = build_index(self.X_, kind, nlist=self.nlist, nprobe=self.nprobe)
            self.index_, self._index_request = index, request
            if kind != "exact":
                logger.info("neighbour search: %s", index.describe())
        if isinstance(index, FaissIVFIndex):
            index.set_nprobe(self.nprobe)
        if hasattr(self, "predictor_"):
            self.predictor_.use_index(index)
        return index

    def stacked_switch(self, allowed: np.ndarray, n_labels: int = 0) -> Any:
        """The stacked switch (stacking.fit_switch) fitted on this router's reference tasks
        for the candidates ``allowed`` (M,) bool and ``n_labels`` labelled docs of the new
        task; fitted on first use and reused (recommend needs the zero-label one, the one for
        its labels and those for 10 and 30 more, for the expected gain of more labels)."""
        from .stacking import fit_switch

        self.check_fitted()
        cache = getattr(self, "_switches", None)
        if cache is None or cache[0] is not self.calibration_:  # refitted: start afresh
            cache = self._switches = (self.calibration_, {})
        key = (np.asarray(allowed, dtype=bool).tobytes(), int(n_labels), self.sigma, self.seed)
        if key not in cache[1]:
            rows_of = (rows_by_task(np.asarray(self.task_of_), len(self.task_names_))
                       if n_labels > 0 else None)
            cache[1][key] = fit_switch(self.calibration_, allowed, sigma=self.sigma,
                                       n_labels=n_labels, Y=self.Y_ if n_labels > 0 else None,
                                       rows_of=rows_of, seed=self.seed)
        return cache[1][key]

    def use_index(self, index: NeighborIndex) -> None:
        """Search through ``index`` (e.g. a saved faiss-ivf index) for the current index
        parameters instead of building one."""
        self.index_ = index
        self._index_request = (self.index, self.index_threshold, self.nlist)

    def use_embedder(self, embedder: Embedder) -> None:
        """Embed with this (already loaded) embedder object."""
        self._embedder_obj = embedder

    def check_fitted(self) -> None:
        if not hasattr(self, "calibration_"):
            raise NotFittedError("This Router is not fitted yet. Call 'fit' with a correctness "
                                 "table first.")

    # scoring ---------------------------------------------------------------------------
    def model_mask(self, candidates: Sequence[str] | None = None,
                   max_params: int | str | None = None,
                   model_info: dict[str, dict[str, Any]] | None = None) -> np.ndarray:
        """(M,) bool of models allowed by ``candidates`` and ``max_params``."""
        self.check_fitted()
        return model_mask(self.models_, candidates, max_params, model_info)

    def predict_correctness(self, Q: np.ndarray, labeled: tuple[np.ndarray, np.ndarray] | None
                            = None, searched: np.ndarray | None = None) -> np.ndarray:
        """g (n, M) for query embeddings (n, dim). ``labeled`` = (X_lab, Y_lab) adds labelled
        in-task inputs to the predictor's pool (a refit on the pool plus them); checked
        against the predictor contract (predictors.checked_g)."""
        # (the pool's Y_ lies in [0, 1]; labels under target "score" may not)
        return checked_g(self._predict(Q, labeled, searched), len(Q), len(self.models_),
                         self.predictor_, value_bounds(*([] if labeled is None
                                                         else [labeled[1]])))

    def _predict(self, Q: np.ndarray, labeled: tuple[np.ndarray, np.ndarray] | None,
                 searched: np.ndarray | None) -> np.ndarray:
        if labeled is None:
            if searched is not None:  # one search serves g and u
                return self.predictor_.predict_searched(Q, searched)
            return self.predictor_.predict_proba(Q)
        X_lab, Y_lab = labeled
        refit = self.make_predictor().fit(np.vstack([self.X_, X_lab]),
                                          np.vstack([self.Y_, Y_lab]))
        index = self.neighbor_index()
        k = getattr(refit, "n_neighbors", None)
        if index.kind != "exact" and k is not None:
            # the pool through the router's index, the few labels by brute force; merged
            # with pool rows first on ties, as in the refit pool
            i_pool, s_pool = index.search(Q, int(k))
            i_lab, s_lab = topk_cosine(Q, X_lab, int(k))
            i_lab = np.where(i_lab >= 0, i_lab + len(self.X_), -1)
            idx, sim = merge_topk(i_pool, s_pool, i_lab, s_lab, int(k))
            return refit.predict_searched(Q, np.where(np.isfinite(sim), idx, -1))
        return refit.predict_proba(Q)

    def decider(self, score: str = DEFAULT_DECIDER) -> Decider:
        """The registered decider ``score`` (unknown name: did-you-mean; S2/S3 under
        target "score": an error, they threshold g at t and mean nothing for metric values)."""
        decider = deciders.get(score)()
        decider.name = score  # reported under the name it was asked by (a plugin may not set it)
        check_decider_target(decider, self.target)
        return decider

    def task_view(self, Q: np.ndarray, allowed: np.ndarray, lab_docs: np.ndarray | None = None,
                  lab_y: np.ndarray | None = None) -> tuple[TaskView, np.ndarray, np.ndarray]:
        """The view deciders read for a new task: (view, zero-label g of every doc (N, M),
        the docs' kappa nearest reference rows (N, kappa)).

        Q (N, dim): embeddings of the task's docs. lab_docs (L,) positions of its labelled
        docs and lab_y (L, M) their correctness: they join the predictor's pool for the S
        scores (the paper's way) and feed the stacked switch fitted for L labels; the
        choice is for the other docs (all of them when every doc is labelled).
        """
        self.check_fitted()
        lab_docs = np.empty(0, np.int64) if lab_docs is None else np.asarray(lab_docs)
        searched, sim = self.neighbor_index().search(Q, max(self.k, self.kappa))
        g_all = self.predict_correctness(Q, searched=searched)  # one search: g and u
        rest = np.setdiff1d(np.arange(len(Q)), lab_docs)
        if len(rest) == 0:  # every doc labelled: the choice is still for the task's docs
            rest = np.arange(len(Q))
        g_labelled = None
        if len(lab_docs):
            g_labelled = self.predict_correctness(Q[rest], labeled=(Q[lab_docs], lab_y))
        view = TaskView(cal=self.calibration_, models=list(self.models_), allowed=allowed,
                        g=g_all[rest], kappa_sim=sim[rest, :self.kappa],
                        settings=self.decision_settings(),
                        lab_y=lab_y if len(lab_docs) else None, g_labelled=g_labelled,
                        switches=lambda n: self.stacked_switch(allowed, n),
                        task_s1=self.task_s1_reader(Q[rest]))
        return view, g_all, searched[:, :self.kappa]

    def recommend(self, prompts: Sequence[str] | None = None, *,
                  embeddings: np.ndarray | None = None, docs: Any = None,
                  task: str | None = None, candidates: Sequence[str] | None = None,
                  max_params: int | str | None = None, score: str = DEFAULT_DECIDER,
                  labeled: pd.DataFrame | None = None, plan: Any = None,
                  model_info: dict[str, dict[str, Any]] | None = None,
                  store: Store | None = None) -> Recommendation:
        """Which model to use for a new task, and how sure we are: the one recommendation
        path (``lm_router_plugin.recommend`` and ``lm-router recommend`` call it).

        Args:
            prompts: (N,) texts of the task's docs, or ``embeddings`` (N, dim), or ``docs``
                (labels.TaskDocs: an lm-eval task's docs, which maps ``labeled`` rows of its
                leaf tasks to doc positions).
            candidates, max_params: restrict the choice (``model_info`` gives params).
            score: a registered decider (s1, s2, s3, stack; deciders.py).
            labeled: correctness rows of some of the task's docs (lm-eval sample logs read
                with api.read_labeled; with prompts, ``instance_id`` is the prompt index).
            plan: the plan-labels plan (a PREFIX.plan.json path or a LabelPlan) the labels
                were drawn for: checked to be this task's and reported on (``plan_note``);
                the labels count the same with or without it (a random sample).
        """
        from ..task.labels import (
            GAIN_LABELS,
            STACK_GAIN_SOURCE,
            LabelPlan,
            TaskDocs,
            labelled_matrix,
            load_plan,
            plan_coverage,
            posterior,
        )
        from ..task.labels import verdict as label_verdict

        self.check_fitted()
        decider = self.decider(score)
        if model_info is None and store is not None:  # the store's parameter counts
            model_info = store.read_models()
        allowed = self.model_mask(candidates, max_params, model_info)  # cheap checks first
        if docs is None:
            texts = (listed(prompts, "prompts") or [] if embeddings is None
                     else [""] * len(embeddings))
            docs = TaskDocs(task or "prompts", "prompts", [(task or "prompts", len(texts))],
                            texts)
        task = task or docs.name
        if docs.n == 0:
            raise LMRouterError(f"task '{task}' has no inputs to score")
        if plan is not None and not isinstance(plan, LabelPlan):
            plan = load_plan(plan, docs)  # another task's or size's plan: one error
        Q = _embedding_matrix(embeddings if embeddings is not None
                              else self.embed(docs.texts, store), "query embeddings",
                              self.X_.shape[1])
        models = list(self.models_)
        _warn_unknown_models(labeled, models)
        if self.target == "score" and labeled is not None and not labeled.empty:
            labeled = self.normalised_labels(labeled)
        lab_docs, lab_y = labelled_matrix(labeled, docs, models)
        view, g_all, neighbours = self.task_view(Q, allowed, lab_docs, lab_y)
        # every doc labelled for every candidate: the accuracies are known, nothing to predict
        known = (len(lab_docs) == docs.n and lab_y is not None
                 and not np.isnan(lab_y[:, allowed]).any())
        decision = (all_labelled_decision(view, lab_y, models) if known
                    else checked_decision(decider.name, decider, view))
        stack = decision if type(decider) is StackedSwitch else StackedSwitch().decide(view)
        scores, info = view.scores, model_info or {}
        # the gain column is the switch's own prediction: none where it handed over (too
        # few reference tasks), whose scores are then another rule's
        switched = stack.decided_by == "stack" and not known
        rows = [ModelScore(model=m, s1=float(scores.s1[i]), s2=float(scores.s2[i]),
                           s3=float(scores.s3[i]), p=float(scores.p[i]),
                           params=(info.get(m) or {}).get("params"),
                           stack=_finite_or_none(stack.scores[i]) if switched else None,
                           score=_finite_or_none(decision.scores[i]))
                for i, m in enumerate(models) if allowed[i]]
        # the choice first, then by the deciding score: the table never contradicts it
        rows.sort(key=lambda r: (r.model != models[decision.choice],
                                 -(r.score if r.score is not None else -np.inf)))
        by_stack = decision.decided_by == "stack"
        _, report = posterior(self.calibration_, g_all, models, allowed, lab_docs=lab_docs,
                              lab_y=lab_y, seed=self.seed, gains=not by_stack)
        gains, verdict = report.expected_gain, report.verdict
        if by_stack:
            from ..task.labels import stack_gain_verdict

            gains, verdict = stack_gain_verdict(self, allowed, len(lab_docs))
        elif decision.decided_by == "bma":  # a rule that keeps BMA whatever the labels say
            gains = {n: 0.0 for n in gains}
            verdict = ("more labels cannot change this choice: with "
                       f"{view.n_reference_tasks} reference tasks the best model on average is "
                       "kept whatever they say (see why)")
        left = docs.n - len(lab_docs)
        if not known and decision.decided_by != "bma" and left < GAIN_LABELS[-1]:
            # more labels than docs left: not a possible next step
            gains = {n: (v if int(n) <= left else None) for n, v in gains.items()}
            verdict = label_verdict(gains, STACK_GAIN_SOURCE if by_stack else "label posterior",
                                    left)
        estimates = report.estimates
        if known:  # measured, not estimated
            gains = {n: 0.0 for n in gains}
            verdict = f"every doc of the task is labelled ({docs.n}): nothing left to label"
            estimates = exact_estimates(lab_y, models, allowed, decision.choice)
        rec = Recommendation(
            task=task, n_inputs=0 if known else len(view.g), u=view.u,
            choice=models[decision.choice],
            bma=models[decision.bma], fallback=decision.fallback,
            # the decider's probability is that of its best-by-score model: the choice's
            # only when it took that model (a fallback chose BMA: 0.5, BMA against itself)
            p_choice_beats_bma=(decision.p_beats_bma if decision.choice == decision.best_by_score
                                else 0.5),
            best_by_score=models[decision.best_by_score], p_best_beats_bma=decision.p_beats_bma,
            score=decider.name,
            decided_by=decision.decided_by or decider.name, models=rows, reason=decision.reason,
            nearest_tasks=nearest_tasks(neighbours, self.task_of_, self.task_names_,
                                        self.calibration_),
            u_reference_range=self.calibration_.u_range(),
            u_note=u_note(view.u, self.calibration_, self.sigma, self.target),
            n_reference_tasks=view.n_reference_tasks, estimates=estimates,
            expected_gain=gains, expected_gain_by="stack" if by_stack else "posterior",
            n_labelled_docs=int(len(lab_docs)), labels_verdict=verdict,
            # the plan's coverage among the candidates (a model left out has no labels)
            plan_note=(plan_coverage(plan, lab_docs, lab_y[:, allowed],
                                     [m for m, ok in zip(models, allowed) if ok])
                       if plan is not None else ""))
        # target "score": S2/S3/p dropped, values also in the metric's units (one metric)
        return in_metric_units(rec, self.scales_) if self.target == "score" else rec

    def route(self, prompts: Sequence[str] | None = None, *,
              embeddings: np.ndarray | None = None, candidates: Sequence[str] | None = None,
              max_params: int | str | None = None, model_info: dict | None = None,
              store: Store | None = None) -> list[RouteDecision]:
        """Per-prompt choice argmax_m g_m(x) (+ 0.01 x mean reference accuracy, the authors'
        tie rule) among the allowed models."""
        self.check_fitted()
        if model_info is None and store is not None:  # the store's parameter counts
            model_info = store.read_models()
        allowed = self.model_mask(candidates, max_params, model_info)
        Q = embeddings if embeddings is not None else self.embed(
            listed(prompts, "prompts") or [], store)
        if len(Q) == 0:
            return []
        Q = _embedding_matrix(Q, "query embeddings", self.X_.shape[1])
        self.neighbor_index()  # the predictor searches through it
        g = self.predict_correctness(np.asarray(Q, dtype=np.float32))
        choice = route_choices(g, self.calibration_, allowed)
        if self.target == "score":
            # leave BMA only for a predicted lead above the margin learned leave-one-task-out
            # on the reference tasks (pool.fit_route_margin; docs/raw-metrics.md)
            choice = route_with_margin(g, best_on_average(self.calibration_, allowed),
                                       self.route_margin(allowed), allowed,
                                       self.calibration_.mean_accuracy)
            # one metric: g back in its units (the map is affine, so the neighbours' mean
            # raw value); several metrics: no common unit, g stays normalised to [0, 1]
            scales = getattr(self, "scales_", {})
            units = next(iter(scales)) if len(scales) == 1 else "normalised"
            shown = scales[units].raw(g) if len(scales) == 1 else g
            return [ScoreRouteDecision(index=i, model=self.models_[c], units=units,
                                       g={m: float(shown[i, j])
                                          for j, m in enumerate(self.models_) if allowed[j]})
                    for i, c in enumerate(choice)]
        return [RouteDecision(index=i, model=self.models_[c],
                              g={m: float(g[i, j]) for j, m in enumerate(self.models_)
                                 if allowed[j]})
                for i, c in enumerate(choice)]

    def route_margin(self, allowed: np.ndarray) -> float:
        """The margin tau of ``route`` under target "score" for the candidates ``allowed``
        (M,) bool: fitted on first use from the saved leave-task-out g and reused."""
        self.check_fitted()
        cache = getattr(self, "_margins", None)
        if cache is None or cache[0] is not self.calibration_:
            cache = self._margins = (self.calibration_, {})
        key = np.asarray(allowed, bool).tobytes()
        if key not in cache[1]:
            cal = self.calibration_
            cache[1][key] = fit_route_margin(np.asarray(self.loo_g_), np.asarray(self.Y_),
                                             np.asarray(self.task_of_), cal.accuracy,
                                             cal.included, np.asarray(allowed, bool))[0]
        return cache[1][key]

    def normalised_labels(self, labeled: pd.DataFrame) -> pd.DataFrame:
        """``--labeled`` rows under target "score": a copy whose ``correct`` holds the raw
        ``score`` mapped by the reference table's scale of its metric (the labels and the
        pool on one scale). A metric the store does not hold has no scale: an error."""
        from ..store.schema import METRIC, SCORE

        scales = getattr(self, "scales_", {})
        out = labeled.copy()
        values = np.full(len(out), np.nan)
        for metric, rows in out.groupby(METRIC, sort=True).groups.items():
            if str(metric) not in scales:
                origin = out.loc[rows].get("origin", pd.Series(["--labeled"])).iloc[0]
                raise LMRouterError(f"{origin}: --labeled rows of metric '{metric}', which the "
                                    f"store does not hold (it has {', '.join(sorted(scales))}):"
                                    " --target score has no scale for it")
            at = out.index.get_indexer(rows)
            scale = scales[str(metric)]
            raw = pd.to_numeric(out.loc[rows, SCORE], errors="coerce").to_numpy(float)
            if scale.hi == scale.lo and np.any(np.isfinite(raw) & (raw != scale.lo)):
                origin = out.loc[rows].get("origin", pd.Series(["--labeled"])).iloc[0]
                raise LMRouterError(f"{origin}: --labeled rows of metric '{metric}' take other "
                                    f"values than its one value in the store ({scale.lo:g}): "
                                    "with no range there is no scale to place them on; "
                                    "use --target correct, or ingest results that vary")
            values[at] = scale.normalise(raw)
        out["correct"] = values
        return out


@dataclass
class ScoreRouteDecision(RouteDecision):
    """A route decision under target "score": ``g`` per model is the predicted metric value
    in ``units`` (the store's one metric), or normalised to [0, 1] ("normalised") when the
    store mixes metrics."""

    units: str = "normalised"


def listed(value: Any, what: str, kinds: tuple[type, ...] = (str,)) -> list | None:
    """An argument that takes several names, texts or paths, as a list: one str (or path,
    where ``kinds`` allows paths) is a list of one, not its characters; None stays None.

    Raises:
        InvalidParameterError: not a list, or an item of another type (None, a number)."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    try:
        items = list(value)
    except TypeError:
        raise InvalidParameterError(what, f"expected a list, got {type(value).__name__}"
                                    ) from None
    for i, item in enumerate(items):
        if not isinstance(item, kinds):
            raise InvalidParameterError(what, f"item {i} is {item!r} "
                                        f"({type(item).__name__}); expected "
                                        f"{' or '.join(k.__name__ for k in kinds)}")
    return items


def model_mask(models: Sequence[str], candidates: Sequence[str] | None = None,
               max_params: int | str | None = None,
               model_info: dict[str, dict[str, Any]] | None = None) -> np.ndarray:
    """(M,) bool of ``models`` allowed by ``candidates`` (names; one str is one name) and
    ``max_params`` (a count, or text such as "7B"; ``model_info`` {model: {"params": n}});
    an unknown candidate is an error with did-you-mean."""
    models = list(models)
    candidates = listed(candidates, "candidates")
    try:
        max_params = parse_params(max_params)
    except ValueError as exc:
        raise InvalidParameterError("max_params", str(exc)) from exc
    allowed = np.ones(len(models), dtype=bool)
    if candidates:
        for name in candidates:
            if name not in models:
                raise UnknownNameError(unknown_name_message("model", name, models))
        allowed &= np.isin(models, list(candidates))
    if max_params is not None:
        info = model_info or {}
        params = [(info.get(m) or {}).get("params") for m in models]
        unknown = [m for m, p in zip(models, params) if p is None]
        if unknown:
            logger.warning("--max-params: no parameter count for %s; excluded (set them with "
                           "'lm-router ingest ... --models models.yaml')", ", ".join(unknown))
        allowed &= np.array([p is not None and p <= max_params for p in params])
    if not allowed.any():
        raise LMRouterError("no candidate model is left after --candidates/--max-params")
    return allowed


def all_labelled_decision(view: TaskView, lab_y: np.ndarray, models: list[str]) -> Decision:
    """Every doc of the task labelled for every candidate: the model of highest accuracy
    on them (ties: the higher mean reference accuracy), no prediction involved."""
    acc = quiet_nanmean(np.asarray(lab_y, float))
    scores = np.where(view.allowed, acc, np.nan)
    choice = argmax_with_ties(np.where(view.allowed, acc, -np.inf), view.cal.mean_accuracy)
    bma = view.bma
    return Decision(choice=choice, best_by_score=choice, bma=bma, fallback=False,
                    p_beats_bma=0.5 if choice == bma else 1.0, scores=scores,
                    decided_by="labels",
                    reason=(f"every doc of the task is labelled ({len(lab_y)}): "
                            f"{models[choice]} has the highest accuracy on them, "
                            f"{acc[choice]:.3f}" + ("" if choice == bma else
                                                    f" (best on average, {models[bma]}: "
                                                    f"{acc[bma]:.3f})")))


def exact_estimates(lab_y: np.ndarray, models: list[str], allowed: np.ndarray,
                    choice: int) -> list[dict[str, Any]]:
    """recommend's estimates when every doc is labelled: the measured accuracies (their
    interval a point), best first; P(best) 1 for the choice."""
    acc = quiet_nanmean(np.asarray(lab_y, float))
    n = (~np.isnan(lab_y)).sum(0)
    out = [{"model": m, "acc": float(acc[i]), "low": float(acc[i]), "high": float(acc[i]),
            "p_best": 1.0 if i == choice else 0.0, "n_labels": int(n[i])}
           for i, m in enumerate(models) if allowed[i]]
    return sorted(out, key=lambda e: -e["acc"])


def _finite_or_none(x: float) -> float | None:
    """JSON has no inf/nan: a model a decider did not score is None."""
    return float(x) if np.isfinite(x) else None


def _warn_unknown_models(labeled: pd.DataFrame | None, models: list[str]) -> None:
    if labeled is None or labeled.empty:
        return
    extra = sorted(set(labeled[MODEL]) - set(models))
    if extra:
        logger.warning("--labeled: ignoring models the router does not know: %s",
                       ", ".join(extra))
    if len(extra) == labeled[MODEL].nunique():
        raise LMRouterError("--labeled: none of its models is in the store; the labelled "
                            "samples must come from the same models")



def _embedding_matrix(E: Any, what: str, dim: int | None = None) -> np.ndarray:
    """E as a (n, dim) float32 matrix; LMRouterError for another shape (a 1-d vector, 0
    columns, or a dimension other than the fitted references' ``dim``)."""
    E = np.asarray(E, dtype=np.float32)
    if E.ndim != 2 or E.shape[1] == 0 or (dim is not None and E.shape[1] != dim):
        want = f"(n, {dim})" if dim is not None else "(n, dim) with dim >= 1"
        raise LMRouterError(f"{what} have shape {E.shape}, expected {want}: one row per "
                            "input" + (", from the embedder the router was fitted with"
                                       if dim is not None else ""))
    return E

__all__ = ["InvalidParameterError", "Router", "ScoreRouteDecision", "listed", "model_mask"]
