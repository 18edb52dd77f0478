"""The library-level commands: what ``lm-router recommend`` and ``lm-router route`` do, as
functions (the CLI only parses options and prints).

    >>> rec = recommend("lm-router-store", task="my_task", include_path="task_configs/")
    >>> rec = recommend(store, prompts=["What is 2+2?", ...], max_params="13B", k=5)
    >>> decisions = route(store, prompts=[...])
    >>> plan = plan_labels(store, task="my_task", include_path="task_configs/", n=10)
    >>> rec = recommend(store, task="my_task", include_path="task_configs/",
    ...                 labeled=["runs/"], plan=plan.plan_file)   # rec.estimates

Everything cheap is checked before anything slow: the router constants, the store, the
candidate names and --max-params come before building an lm-eval task, embedding or
fitting, so a typo costs no minutes of embedding.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .decision import DEFAULT_SCORE, SCORES, Recommendation, RouteDecision
from .errors import InputError, LMRouterError, UnknownNameError
from .registry import unknown_name_message
from .router import InvalidParameterError, Router, model_mask
from .schema import METRIC, MODEL, THRESHOLD
from .store import Store, parse_params

logger = logging.getLogger(__name__)


def _store(store: Store | str | Path | None) -> Store:
    return store if isinstance(store, Store) else Store(store)


def check_request(store: Store, router_params: dict[str, Any], *, score: str = DEFAULT_SCORE,
                  candidates: Sequence[str] | None = None,
                  max_params: int | str | None = None) -> tuple[Router, int | None]:
    """Validate what needs no embedding: constants, score, store, candidates, max params.

    Returns (an unfitted Router with the parameters, the parsed parameter limit).
    """
    router = Router(**router_params)
    router.validate_params()
    if score not in SCORES:
        raise UnknownNameError(unknown_name_message("score", score, list(SCORES)))
    try:
        limit = parse_params(max_params)
    except ValueError as exc:
        raise InvalidParameterError("max_params", str(exc)) from exc
    models = store.distinct(MODEL, required=True)
    model_mask(models, candidates, limit, store.read_models())  # unknown names, none left
    return router, limit


def labelling_thresholds(store: Store, thresholds: str | Path | None = None) -> Any:
    """Thresholds for new labelled rows: the user's file if given, else the eta the store's
    rows were labelled with (per metric, the most common stored threshold), so ``--labeled``
    rows are labelled the way ingest labelled the reference rows."""
    from .thresholds import Thresholds

    out = Thresholds.load(thresholds)
    if thresholds is not None:
        return out
    stored = store.read_table(columns=[METRIC, THRESHOLD], categorical=True
                              ).dropna(subset=[THRESHOLD])
    for metric, values in stored.groupby(METRIC, observed=True)[THRESHOLD]:
        out.metrics[str(metric)] = float(values.mode().iloc[0])
    return out


def read_labeled(store: Store, paths: Sequence[str | Path],
                 thresholds: str | Path | None = None) -> pd.DataFrame | None:
    """Correctness rows of lm-eval sample logs of the new task (same labelling as ingest).

    Each sample log is read on its own: unlike ingest, where the newest run of a model on a
    task wins, every labelled run counts (the rounds of plan-labels are runs of the same
    model and task on different docs). A doc labelled twice keeps its newest label."""
    if not paths:
        return None
    from .ingest import read_rows
    from .schema import KEY

    rule = labelling_thresholds(store, thresholds)
    files = [f for path in paths for f in _sample_logs(Path(path))]
    tables = [read_rows("lm-eval", [f], rule)[0] for f in files]
    return pd.concat(tables, ignore_index=True).drop_duplicates(KEY, keep="last")


def _sample_logs(path: Path) -> list[Path]:
    """The lm-eval sample logs under ``path`` (0.4.3+ ``samples_<task>_<date>.json[l]``,
    oldest first by their date in the name); the path itself when there are none (older
    layouts, read as a whole)."""
    if path.is_file():
        return [path]
    logs = [p for p in path.rglob("samples_*") if p.suffix in (".json", ".jsonl")]
    return sorted(logs, key=lambda p: (p.name.rsplit("_", 1)[-1], str(p))) or [path]


POSTERIOR = "post"  # --score post: the decision of estimate.py (label posterior)


def _docs(task: str | None, include_path: str | Path | None, prompts: Sequence[str] | None,
          prompts_file: str | Path | None, limit: int | None) -> Any:
    from .labels import TaskDocs, task_docs

    given = [x is not None for x in (task, prompts, prompts_file)]
    if sum(given) != 1:
        raise ValueError("give exactly one of task, prompts or prompts_file")
    if prompts is not None:
        texts = list(prompts)
        return TaskDocs("prompts", "prompts", [("prompts", len(texts))], texts)
    return task_docs(task, include_path, limit=limit, prompts_file=prompts_file)


def recommend(store: Store | str | Path | None = None, *, task: str | None = None,
              include_path: str | Path | None = None, prompts: Sequence[str] | None = None,
              prompts_file: str | Path | None = None, limit: int | None = None,
              labeled: Sequence[str | Path] = (), plan: str | Path | None = None,
              thresholds: str | Path | None = None, score: str = DEFAULT_SCORE,
              candidates: Sequence[str] | None = None, max_params: int | str | None = None,
              **router_params: Any) -> Recommendation:
    """Which model to use for a new task: exactly one of ``task`` (an lm-eval task, with
    ``include_path``), ``prompts`` or ``prompts_file``. ``router_params`` are Router's
    (k, kappa, sigma, t, eta, n_draws, seed, predictor, predictor_params, embedder, ...).

    ``labeled``: lm-eval sample logs of the task's docs. They join the predictor's pool (the
    paper's way; the S scores) and the label posterior of estimate.py (``estimates``,
    ``expected_gain``), weighted by ``plan``'s inclusion probabilities when the docs were
    chosen by ``plan_labels``. ``score="post"`` decides with that posterior.
    """
    from .labels import check_labelled, labelled_matrix, load_plan, posterior, verdict
    from .persistence import fit_or_load

    store = _store(store)
    paper_score = "s3" if score == POSTERIOR else score
    _, limit_params = check_request(store, router_params, score=paper_score,
                                    candidates=candidates, max_params=max_params)
    if plan is not None and not labeled:
        raise InputError(plan, "--plan weights the --labeled rows, and none were given",
                         hint="add --labeled with the lm-eval runs of the planned docs")
    docs = _docs(task, include_path, prompts, prompts_file, limit)
    label_plan = load_plan(plan, docs) if plan is not None else None
    labeled_rows = read_labeled(store, labeled, thresholds)
    if labeled_rows is not None:
        check_labelled(labeled_rows, docs)  # another task's runs: an error before any fit
    router = fit_or_load(store, **router_params)
    name = task or (str(prompts_file) if prompts_file is not None else "prompts")
    Q = np.asarray(router.embed(docs.texts, store), dtype=np.float32)
    model_info = store.read_models()
    rec = router.recommend(embeddings=Q, task=name, score=paper_score, labeled=labeled_rows,
                           store=store, candidates=candidates, max_params=limit_params,
                           model_info=model_info)
    # Beyond the paper: the zero-label prediction (labels not in the pool) + the labels.
    allowed = router.model_mask(candidates, limit_params, model_info)
    g = router.predictor_.predict_proba(Q)
    lab_docs, lab_y = labelled_matrix(labeled_rows, docs, list(router.models_))
    weights = label_plan.weights(lab_docs) if label_plan is not None and len(lab_docs) \
        else None
    # the stacked switch reports its own (measured) expected gain of more labels below
    _, report = posterior(router.calibration_, g, list(router.models_), allowed,
                          lab_docs=lab_docs, lab_y=lab_y, weights=weights, seed=router.seed,
                          eta=router.eta, gains=score != "stack")
    rec.estimates = report.estimates
    rec.expected_gain = report.expected_gain
    rec.n_labelled_docs = report.n_labelled_docs
    rec.labels_verdict = report.verdict
    if score == "stack":
        if len(lab_docs):
            _stack_with_labels(router, rec, Q, allowed, lab_docs, lab_y, weights)
        rec.expected_gain = stack_label_gains(router, allowed, len(lab_docs))
        rec.expected_gain_by = "stack"
        rec.labels_verdict = verdict(rec.expected_gain, by=STACK_GAIN_SOURCE)
    if score == POSTERIOR:
        order = {row["model"]: i for i, row in enumerate(report.estimates)}
        rec.models.sort(key=lambda row: order[row.model])
        rec.score, rec.choice, rec.fallback = POSTERIOR, report.choice, report.fallback
        rec.p_choice_beats_bma, rec.reason = report.p_choice_beats_bma, report.reason
    return rec


STACK_GAIN_SOURCE = "stacked switch, measured leave-one-task-out on the reference tasks"


def stack_label_gains(router: Any, allowed: np.ndarray, n_labels: int) -> dict[str, float]:
    """{"10": x, "30": y}: how much more the stacked switch gains over BMA with N more
    labels per candidate than with ``n_labels`` (accuracy units, may be < 0): the
    difference of the switches' leave-one-task-out gains on the reference tasks
    (``Switch.expected_gain``; measured, not modelled)."""
    from .labels import GAIN_LABELS

    base = router.stacked_switch(allowed, n_labels).expected_gain
    return {str(n): float(router.stacked_switch(allowed, n_labels + n).expected_gain - base)
            for n in GAIN_LABELS}


def _stack_with_labels(router: Any, rec: Recommendation, Q: np.ndarray, allowed: np.ndarray,
                       lab_docs: np.ndarray, lab_y: np.ndarray,
                       weights: np.ndarray | None = None) -> None:
    """Decide ``rec`` with the stacked switch fitted for this many labels (stacking.py): the
    labelled docs' accuracy (weighted by 1 / inclusion probability when a plan chose the
    docs) updates the zero-label prediction, which comes from the other docs."""
    from .decision import Decision, explain
    from .stacking import label_accuracy, stacked_decision

    rest = np.setdiff1d(np.arange(len(Q)), lab_docs)
    if len(rest) == 0:  # every doc labelled: the switch still needs the docs' g
        rest = np.arange(len(Q))
    searched, sim = router.neighbor_index().search(Q[rest], max(router.k, router.kappa))
    g = router.predict_correctness(Q[rest], searched=searched)
    choice, best, bma, gain, p, switch = stacked_decision(
        router.calibration_, g, sim[:, :router.kappa], allowed, t=router.t, sigma=router.sigma,
        labels=label_accuracy(lab_y, weights), n_labels=len(lab_docs),
        switch=router.stacked_switch(allowed, len(lab_docs)))
    names = list(router.models_)
    for row in rec.models:
        row.stack = float(gain[names.index(row.model)])
    rec.models.sort(key=lambda row: -row.stack)
    dec = Decision(choice=choice, best_by_score=best, bma=bma, fallback=choice != best,
                   p_beats_bma=p)
    rec.choice, rec.fallback, rec.p_choice_beats_bma = names[choice], dec.fallback, p
    if switch.n_labels:
        used = (f"; with {len(lab_docs)} labelled docs" + (
            " (weighted by the plan's inclusion probabilities)" if weights is not None else ""))
    else:
        used = (f"; with {len(lab_docs)} labelled docs not used: on the reference tasks, "
                f"as many labels did not improve the choice")
    rec.reason = explain(dec, "stack", names, router.eta, switch, gain) + used


@dataclass
class PlanResult:
    """What ``plan_labels`` did: the docs to label in this round and where they were written.

    docs: positions in the task's doc order; samples: lm-eval ``--samples`` mapping {leaf
    task: doc ids}; inclusion: the docs' inclusion probabilities in this round."""

    task: str
    round: int
    n_requested: int
    docs: list[int]
    samples: dict[str, list[int]]
    inclusion: list[float]
    leaders: list[str]
    n_docs: int
    n_labelled: int
    n_planned_before: int
    samples_file: str
    plan_file: str
    output_path: str | None
    commands: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _prefix(out: str | Path | None, plan: str | Path | None, name: str) -> Path:
    if out is not None:
        return Path(out)
    if plan is not None and str(plan).endswith(".plan.json"):
        return Path(str(plan)[: -len(".plan.json")])
    return Path(re.sub(r"[^A-Za-z0-9._-]+", "_", name))


def plan_labels(store: Store | str | Path | None = None, *, n: int, task: str | None = None,
                include_path: str | Path | None = None, limit: int | None = None,
                prompts_file: str | Path | None = None, labeled: Sequence[str | Path] = (),
                plan: str | Path | None = None, out: str | Path | None = None,
                thresholds: str | Path | None = None, candidates: Sequence[str] | None = None,
                max_params: int | str | None = None, **router_params: Any) -> PlanResult:
    """Choose ``n`` more docs of a new task to label (estimate.plan: drawn with probability
    proportional to how much they tell about the leading candidates' differences) and write
    ``PREFIX.samples.json`` (lm-eval ``--samples``) and ``PREFIX.plan.json``.

    ``labeled``: sample logs of docs labelled so far (they are excluded and inform the
    posterior that picks the leaders); ``plan``: the earlier plan (its docs are excluded too,
    its inclusion probabilities weight the labels; the new round is appended). The draw is
    seeded by ``router_params["seed"]`` and the round number. ``out``: PREFIX (default: the
    ``plan``'s, else the task name in the working directory).
    """
    from .estimate import estimate, plan as draw
    from .labels import (
        check_labelled, labelled_matrix, lm_eval_commands, load_plan, new_plan,
    )
    from .persistence import fit_or_load

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidParameterError("n", f"must be an integer >= 1, got {n!r}")
    store = _store(store)
    _, limit_params = check_request(store, router_params, candidates=candidates,
                                    max_params=max_params)
    if (task is None) == (prompts_file is None):
        raise ValueError("give exactly one of task or prompts_file")
    docs = _docs(task, include_path, None, prompts_file, limit)
    label_plan = load_plan(plan, docs) if plan is not None else \
        new_plan(docs, include_path, limit)
    prefix = _prefix(out, plan, docs.name)
    samples_file = Path(f"{prefix}.samples.json")
    plan_file = Path(f"{prefix}.plan.json")
    if plan is None and plan_file.exists():
        raise InputError(plan_file, "a plan already exists here",
                         hint=f"pass --plan {plan_file} to add a round, or --out PREFIX "
                              "for a new plan")
    labeled_rows = read_labeled(store, labeled, thresholds)
    if labeled_rows is not None:
        check_labelled(labeled_rows, docs)
    router = fit_or_load(store, **router_params)
    models = list(router.models_)
    allowed = router.model_mask(candidates, limit_params, store.read_models())
    Q = np.asarray(router.embed(docs.texts, store), dtype=np.float32)
    g = router.predictor_.predict_proba(Q)  # zero-label: the labels only enter the posterior
    lab_docs, lab_y = labelled_matrix(labeled_rows, docs, models)
    weights = label_plan.weights(lab_docs) if plan is not None and len(lab_docs) else None
    est = estimate(router.calibration_, g, allowed, lab_g=g[lab_docs], lab_y=lab_y,
                   weights=weights) if len(lab_docs) else estimate(router.calibration_, g,
                                                                     allowed)
    exclude = np.zeros(docs.n, dtype=bool)
    exclude[lab_docs] = True
    exclude[label_plan.docs] = True
    if exclude.all():
        raise LMRouterError(f"all {docs.n} docs of '{docs.name}' are already labelled or "
                            "planned: nothing left to plan")
    number = len(label_plan.rounds) + 1
    chosen, pi = draw(g, est, n, np.random.default_rng([router.seed, number]),
                      exclude=exclude)
    # the leaders estimate.plan weighed the docs by (same rule as there)
    ranked = np.argsort(-np.where(allowed, est.mean, -np.inf), kind="stable")
    leaders = [models[i] for i in ranked[:max(1, min(3, int(allowed.sum())))]]
    samples = docs.samples(chosen)
    planned_before = label_plan.n
    samples_file.parent.mkdir(parents=True, exist_ok=True)
    samples_file.write_text(json.dumps(samples) + "\n", encoding="utf-8")
    if docs.kind == "lm-eval" and label_plan.output_path is None:
        label_plan.output_path = f"{prefix}-runs"
    # every round writes its runs into the first round's folder: one --labeled for all
    output_path = Path(label_plan.output_path) if label_plan.output_path else None
    label_plan.add_round(chosen, pi, seed=router.seed, requested=n, leaders=leaders,
                         n_labelled=len(lab_docs), samples_file=str(samples_file))
    label_plan.save(plan_file)
    commands = lm_eval_commands([m for m, a in zip(models, allowed) if a], samples,
                                samples_file, output_path, include_path) \
        if output_path is not None else []
    return PlanResult(task=docs.name, round=number, n_requested=n,
                      docs=[int(i) for i in chosen], samples=samples,
                      inclusion=[float(pi[i]) for i in chosen], leaders=leaders,
                      n_docs=docs.n, n_labelled=int(len(lab_docs)),
                      n_planned_before=planned_before, samples_file=str(samples_file),
                      plan_file=str(plan_file),
                      output_path=str(output_path) if output_path else None,
                      commands=commands)


def route(store: Store | str | Path | None = None, *, prompts: Sequence[str] | None = None,
          prompts_file: str | Path | None = None, candidates: Sequence[str] | None = None,
          max_params: int | str | None = None, **router_params: Any) -> list[RouteDecision]:
    """Per-prompt choice (MoE): the model most likely to answer each prompt correctly."""
    from .persistence import fit_or_load
    from .tasks import read_prompts_file

    if (prompts is None) == (prompts_file is None):
        raise ValueError("give exactly one of prompts or prompts_file")
    store = _store(store)
    _, limit_params = check_request(store, router_params, candidates=candidates,
                                    max_params=max_params)
    texts = read_prompts_file(prompts_file) if prompts_file is not None else list(prompts)
    router = fit_or_load(store, **router_params)
    return router.route(texts, store=store, candidates=candidates, max_params=limit_params,
                        model_info=store.read_models())
