"""The library's entry points: what ``lm-router recommend``, ``plan-labels`` and ``route``
do, as functions (the CLI parses options, calls these and prints what they return).

    >>> rec = recommend("lm-router-store", task="my_task", include_path="task_configs/")
    >>> rec = recommend(store, prompts=["What is 2+2?", ...], max_params="13B")
    >>> plan = plan_labels(store, task="my_task", include_path="task_configs/", n=10)
    >>> rec = recommend(store, task="my_task", include_path="task_configs/",
    ...                 labeled=["my_task-runs/"])          # rec.estimates, rec.expected_gain
    >>> decisions = route(store, prompts=[...])

``settings``: a :class:`~lm_router_plugin.settings.Settings`, a nested dict or the path of a
``--config`` YAML (embedder, predictor, index, decision; docs/configuration.md).

Everything cheap is checked before anything slow: the settings, the store, the candidate
names, --max-params and the labelled files come before building an lm-eval task, embedding
or fitting, so a typo costs no minutes of embedding.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError, InvalidParameterError, LMRouterError
from .router.recommendation import Recommendation, RouteDecision
from .router.router import Router, listed, model_mask
from .settings import Settings, load_settings
from .store.schema import METRIC, MODEL, THRESHOLD
from .store.store import Store, parse_params

logger = logging.getLogger(__name__)

SettingsLike = Settings | dict | str | Path | None


def _store(store: Store | str | Path | None) -> Store:
    return store if isinstance(store, Store) else Store(store)


def _settings(settings: SettingsLike, target: str | None) -> Settings:
    """The settings with ``target`` ("correct" | "score", None: the settings' own,
    predictor.target) on top."""
    out = load_settings(settings)
    return out if target is None else out.override(target=target)


def check_request(store: Store, settings: SettingsLike = None, *, score: str | None = None,
                  candidates: Sequence[str] | None = None,
                  max_params: int | str | None = None) -> tuple[Router, int | None]:
    """Validate what needs no embedding: settings, decider name, store, candidates, max
    params. Returns (an unfitted Router with the settings, the parsed parameter limit)."""
    router = Router(**load_settings(settings).router_params())
    router.validate_params()
    if score is not None:
        router.decider(score)  # unknown name: did-you-mean
    try:
        limit = parse_params(max_params)
    except ValueError as exc:
        raise InvalidParameterError("--max-params", str(exc)) from exc
    models = store.distinct(MODEL, required=True)
    model_mask(models, candidates, limit, store.read_models())  # unknown names, none left
    return router, limit


def labelling_thresholds(store: Store, thresholds: str | Path | None = None) -> Any:
    """Thresholds for new labelled rows: the user's file if given, else the eta the store's
    rows were labelled with (per metric, the most common stored threshold), so ``--labeled``
    rows are labelled the way ingest labelled the reference rows."""
    from .store.thresholds import Thresholds

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
    from .store.ingest import read_rows
    from .store.schema import KEY

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


def _docs(task: str | None, include_path: str | Path | None, prompts: Sequence[str] | None,
          prompts_file: str | Path | None, limit: int | None) -> Any:
    from .task.labels import TaskDocs, task_docs

    given = [x is not None for x in (task, prompts, prompts_file)]
    if sum(given) != 1:
        raise ValueError("give exactly one of task, prompts or prompts_file")
    if include_path is not None and task is None:  # accepted and ignored before
        raise InvalidParameterError("--include-path", "it is where lm-eval finds --task's "
                                    "YAML, and no task was given: leave it out with --prompts")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer))
                              or limit < 1):
        raise InvalidParameterError("--limit", f"must be an integer >= 1, got {limit!r}")
    if prompts is not None:
        texts = listed(prompts, "prompts")
        return TaskDocs("prompts", "prompts", [("prompts", len(texts))], texts)
    if include_path is not None and not Path(include_path).is_dir():  # lm-eval ignores it
        raise InputError(include_path, "no such folder (the include path of the task's "
                         "YAML)", hint="give the folder that holds the task's YAML file")
    return task_docs(task, include_path, limit=limit, prompts_file=prompts_file)


def warn_if_stored(store: Store, docs: Any) -> None:
    """A warning when the new task's (leaf) tasks are reference tasks of the store: its own
    results were ingested (e.g. the label runs of plan-labels), so the router already knows
    it and the recommendation is no prediction for a new task."""
    if docs.kind != "lm-eval":
        return
    stored = set(store.distinct("task"))
    found = [leaf for leaf, _ in docs.leaves if leaf in stored]
    if found:
        logger.warning("task %s: %s %s in the store as reference task%s: the router learns "
                       "from %s own results, so this is not a prediction for a new task (keep "
                       "the new task's runs out of the store: pass them with --labeled, or "
                       "ingest them into another store)", docs.name, ", ".join(found[:5]),
                       "is" if len(found) == 1 else "are", "" if len(found) == 1 else "s",
                       "its" if len(found) == 1 else "their")


def recommend(store: Store | str | Path | None = None, *, task: str | None = None,
              include_path: str | Path | None = None, prompts: Sequence[str] | None = None,
              prompts_file: str | Path | None = None, limit: int | None = None,
              labeled: Sequence[str | Path] = (), plan: str | Path | None = None,
              thresholds: str | Path | None = None, score: str = "stack",
              candidates: Sequence[str] | None = None, max_params: int | str | None = None,
              settings: SettingsLike = None, target: str | None = None) -> Recommendation:
    """Which model to use for a new task, and how sure we are: exactly one of ``task`` (an
    lm-eval task, with ``include_path``), ``prompts`` or ``prompts_file``.

    ``labeled``: lm-eval sample logs of some of the task's docs (e.g. the runs of the docs
    ``plan_labels`` drew); ``plan``: its PREFIX.plan.json, checked to be this task's and
    reported on (how many planned docs have labels; they count as a random sample either
    way). ``score``: a registered decider (stack, s3, s2, s1). ``target``: "correct" (0/1
    correctness) or "score" (raw metric values; docs/raw-metrics.md). The whole
    recommendation comes from ``Router.recommend``: choice, scores, estimates, reason and
    the expected gain of more labels.
    """
    from .router.persistence import fit_or_load
    from .task.labels import check_labelled, load_plan

    labeled = listed(labeled, "labeled", (str, os.PathLike)) or []
    candidates = listed(candidates, "candidates")
    if plan is not None and not labeled:  # an option combination: a usage error (exit 2)
        raise InvalidParameterError("--plan", "it reports on the --labeled runs, and none "
                                    "were given: add --labeled with the lm-eval runs of the "
                                    "planned docs, or leave --plan out")
    if thresholds is not None and not labeled:  # it was never even read
        raise InvalidParameterError("--thresholds", "it labels the --labeled runs (the "
                                    "reference rows were labelled at ingest), and none were "
                                    "given: add --labeled, or leave --thresholds out")
    store = _store(store)
    settings = _settings(settings, target)
    _, limit_params = check_request(store, settings, score=score, candidates=candidates,
                                    max_params=max_params)
    docs = _docs(task, include_path, prompts, prompts_file, limit)
    warn_if_stored(store, docs)
    label_plan = load_plan(plan, docs) if plan is not None else None  # this task's plan
    labeled_rows = read_labeled(store, labeled, thresholds)
    if labeled_rows is not None:
        check_labelled(labeled_rows, docs)  # another task's runs: an error before any fit
    router = fit_or_load(store, **settings.router_params())
    return router.recommend(docs=docs, task=task or (str(prompts_file) if prompts_file
                                                     is not None else "prompts"),
                            score=score, labeled=labeled_rows, plan=label_plan, store=store,
                            candidates=candidates, max_params=limit_params,
                            model_info=store.read_models())


@dataclass
class PlanResult:
    """What ``plan_labels`` did: the docs to label in this round and where they were written.

    docs: positions in the task's doc order; samples: lm-eval ``--samples`` mapping {leaf
    task: doc ids}; samples_file: this round's (``PREFIX.samples.json``, round K > 1
    ``PREFIX.samples.roundK.json``); candidates: the models to run on them; commands: one
    lm_eval line per candidate (lm-eval tasks); next_command: the ``lm-router recommend``
    line to run once the labels are in, more_command: the ``lm-router plan-labels`` line of
    the next round (what the CLI prints as ``then:`` and ``more:``; both run as printed)."""

    task: str
    round: int
    n_requested: int
    docs: list[int]
    samples: dict[str, list[int]]
    candidates: list[str]
    n_docs: int
    n_labelled: int
    n_planned_before: int
    samples_file: str
    plan_file: str
    output_path: str | None
    seed: int
    n_open: int = 0  # docs neither labelled nor planned before this round
    commands: list[str] = field(default_factory=list)
    next_command: str = ""
    more_command: str = ""

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
                candidates: Sequence[str] | None = None, max_params: int | str | None = None,
                settings: SettingsLike = None, target: str | None = None) -> PlanResult:
    """Choose ``n`` more docs of a new task to label and write ``PREFIX.samples.json``
    (lm-eval ``--samples``) and ``PREFIX.plan.json``.

    The docs are a random sample, stratified over the task's leaf tasks, seeded by the
    settings' ``decision.seed`` and the round number; no embedding or fit is needed.
    ``labeled``: sample logs of docs labelled so far and ``plan``: the earlier plan (their
    docs are excluded; the new round is appended to the plan, its docs written to its own
    ``PREFIX.samples.roundK.json``). ``out``: PREFIX (default: the ``plan``'s, else the task
    name in the working directory). ``target`` is checked like recommend's (the draw does
    not depend on it). The result's next_command / more_command carry these options
    (``settings`` as ``--config`` when it is a file's path).
    """
    from .task.labels import (
        check_labelled,
        lm_eval_commands,
        load_plan,
        new_plan,
        stratified_sample,
    )

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidParameterError("--n", f"must be an integer >= 1, got {n!r}")
    labeled = listed(labeled, "labeled", (str, os.PathLike)) or []
    candidates = listed(candidates, "candidates")
    store = _store(store)
    raw_settings = settings  # a --config path goes on to the printed lines
    settings = _settings(settings, target)
    _, limit_params = check_request(store, settings, candidates=candidates,
                                    max_params=max_params)
    if (task is None) == (prompts_file is None):
        raise ValueError("give exactly one of task or prompts_file")
    models = store.distinct(MODEL, required=True)
    allowed = model_mask(models, candidates, limit_params, store.read_models())
    docs = _docs(task, include_path, None, prompts_file, limit)
    warn_if_stored(store, docs)
    label_plan = load_plan(plan, docs) if plan is not None else \
        new_plan(docs, include_path, limit)
    prefix = _prefix(out, plan, docs.name)
    number = len(label_plan.rounds) + 1
    # one samples file per round: the plan's earlier rounds keep naming theirs
    samples_file = Path(f"{prefix}.samples.json" if number == 1 else
                        f"{prefix}.samples.round{number}.json")
    plan_file = Path(f"{prefix}.plan.json")
    if plan is None and plan_file.exists():
        raise InputError(plan_file, "a plan already exists here",
                         hint=f"pass --plan {plan_file} to add a round, or --out PREFIX "
                              "for a new plan")
    exclude = np.zeros(docs.n, dtype=bool)
    labeled_rows = read_labeled(store, labeled)
    if labeled_rows is not None:
        exclude[check_labelled(labeled_rows, docs)] = True
    n_labelled = int(exclude.sum())
    exclude[label_plan.docs] = True
    if exclude.all():
        raise LMRouterError(f"all {docs.n} docs of '{docs.name}' are already labelled or "
                            "planned: nothing left to plan")
    seed = settings.decision.seed
    n_open = int((~exclude).sum())  # neither labelled nor planned before this round
    chosen = stratified_sample(docs.leaves, n, exclude, np.random.default_rng([seed, number]))
    samples = docs.samples(chosen)
    planned_before = label_plan.n
    samples_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = samples_file.with_name(samples_file.name + ".tmp")
    tmp.write_text(json.dumps(samples) + "\n", encoding="utf-8")
    tmp.replace(samples_file)
    if docs.kind == "lm-eval" and label_plan.output_path is None:
        label_plan.output_path = f"{prefix}-runs"
    # every round writes its runs into the first round's folder: one --labeled for all
    output_path = Path(label_plan.output_path) if label_plan.output_path else None
    label_plan.add_round(chosen, seed=seed, requested=n, n_labelled=n_labelled,
                         samples_file=str(samples_file))
    label_plan.save(plan_file)
    names = [m for m, a in zip(models, allowed) if a]
    commands = lm_eval_commands(names, samples, samples_file, output_path, include_path) \
        if output_path is not None else []
    runs = str(output_path) if output_path else "RUNS"
    where = (["--task", task] + (["--include-path", str(include_path)] if include_path
                                 else [])
             + (["--limit", str(limit)] if limit is not None else [])
             if task is not None else ["--prompts", str(prompts_file)])
    common = (["--store", str(store.root)]
              + (["--candidates", ",".join(candidates)] if candidates else [])
              + (["--max-params", str(max_params)] if max_params is not None else [])
              + (["--target", target] if target else [])
              + (["--config", str(raw_settings)] if isinstance(raw_settings, (str, Path))
                 else []))
    then = ["lm-router", "recommend", *where, "--labeled", runs, "--plan", str(plan_file),
            *common]
    more = ["lm-router", "plan-labels", *where, "--n", str(n), "--labeled", runs, "--plan",
            str(plan_file), *common]
    return PlanResult(task=docs.name, round=number, n_requested=n,
                      docs=[int(i) for i in chosen], samples=samples, candidates=names,
                      n_docs=docs.n, n_labelled=n_labelled,
                      n_planned_before=planned_before, samples_file=str(samples_file),
                      plan_file=str(plan_file),
                      output_path=str(output_path) if output_path else None, seed=seed,
                      n_open=n_open, commands=commands, next_command=_command_line(then),
                      # no further round once this one takes the last docs
                      more_command=_command_line(more) if n_open > len(chosen) else "")


def _command_line(words: Sequence[str]) -> str:
    """A shell-quoted command line: runs as printed."""
    import shlex

    return " ".join(shlex.quote(w) for w in words)


def route(store: Store | str | Path | None = None, *, prompts: Sequence[str] | None = None,
          prompts_file: str | Path | None = None, candidates: Sequence[str] | None = None,
          max_params: int | str | None = None, settings: SettingsLike = None,
          target: str | None = None) -> list[RouteDecision]:
    """Per-prompt choice (MoE): the model most likely to answer each prompt correctly
    (``target`` "score": of highest predicted metric value; ``g`` in the metric's units
    when the store holds one metric, else normalised, ``ScoreRouteDecision.units``)."""
    from .router.persistence import fit_or_load
    from .task.docs import read_prompts_file

    if (prompts is None) == (prompts_file is None):
        raise ValueError("give exactly one of prompts or prompts_file")
    store = _store(store)
    settings = _settings(settings, target)
    _, limit_params = check_request(store, settings, candidates=candidates,
                                    max_params=max_params)
    candidates = listed(candidates, "candidates")
    texts = (read_prompts_file(prompts_file) if prompts_file is not None
             else listed(prompts, "prompts"))
    router = fit_or_load(store, **settings.router_params())
    return router.route(texts, store=store, candidates=candidates, max_params=limit_params,
                        model_info=store.read_models())


def info(store: Store | str | Path | None = None) -> dict[str, Any]:
    """The store's contents: the keys ``lm-router info --json`` prints (models, tasks,
    counts, per-(task, model) accuracy, metric, threshold and the harness's mean score,
    model metadata), plus ``store`` (its folder) and ``summary`` (the same per (task,
    model) as a DataFrame, what the text output prints); drop those two for JSON."""
    from .store.ingest import accuracy_table, score_summary

    store = _store(store)
    # only the columns info reads, as categoricals: no string per row (10M rows: ~1 GB)
    table = store.read_table(columns=["task", "model", "metric", "score", "threshold",
                                      "correct"], required=True, categorical=True)
    accuracy, counts = accuracy_table(table)
    summary = score_summary(table)
    nested: dict[str, dict[str, dict[str, Any]]] = {"metric": {}, "threshold": {},
                                                    "mean_score": {}}
    for row in summary.itertuples(index=False):
        eta = row.threshold
        nested["metric"].setdefault(row.task, {})[row.model] = row.metric
        nested["threshold"].setdefault(row.task, {})[row.model] = (
            None if isinstance(eta, float) and eta != eta else eta)
        nested["mean_score"].setdefault(row.task, {})[row.model] = (
            None if row.mean_score != row.mean_score else float(row.mean_score))
    return {"store": str(store.root), "n_rows": len(table),
            "models": sorted(summary["model"].unique()),
            "tasks": sorted(summary["task"].unique()), "accuracy": accuracy,
            "counts": counts, "model_metadata": store.read_models(), **nested,
            "summary": summary}


def embed(store: Store | str | Path | None = None, *, settings: SettingsLike = None,
          engine: str = "local", ray_address: str | None = None) -> dict[str, Any]:
    """What ``lm-router embed`` does: embed the reference texts of the store (the texts a
    fit embeds: one per (task, instance), build_pool's) into the store's embedding cache,
    so that recommend, route and evaluate find them there. ``engine="ray"`` embeds on Ray
    actors (store/engines.py; ``ray_address`` or RAY_ADDRESS, else a local cluster for the
    call). Returns {"store", "embedder", "n_texts", "n_embedded", "n_cached", "seconds"}.
    """
    import time

    from .embedding.embedders import EmbeddingCache, embed_texts, text_key
    from .router.pool import build_pool
    from .store.engines import make_engine
    from .store.schema import CORRECT, INPUT_TEXT, KEY

    store = _store(store)
    router = Router(**load_settings(settings).router_params())
    router.validate_params()
    runner = make_engine(engine, ray_address)  # a missing ray: before any reading
    table = store.read_table(columns=KEY + [INPUT_TEXT, CORRECT], required=True,
                             categorical=True)
    texts = build_pool(table).texts
    del table
    embedder = router.embedder_object()
    keys = list(dict.fromkeys(text_key(t) for t in texts))
    n_cached = int(EmbeddingCache(store.embeddings_dir(embedder.id)).get(keys)[0].sum())
    start = time.perf_counter()
    if runner is None or n_cached == len(keys):  # all cached: no cluster to start
        embed_texts(texts, embedder, store)
    else:
        with runner:  # connects (or starts the local cluster) first; shut down after
            embed_texts(texts, embedder, store, engine=runner)
    return {"store": str(store.root), "embedder": embedder.id, "n_texts": len(keys),
            "n_embedded": len(keys) - n_cached, "n_cached": n_cached,
            "seconds": time.perf_counter() - start}


def evaluate(store: Store | str | Path | None = None, *, tasks_by: str = "task",
             tasks_file: str | Path | None = None, alphas: Sequence[float] = (0.0,),
             label_counts: Sequence[int] = (), repeats: int = 10,
             candidates: Sequence[str] | None = None, max_params: int | str | None = None,
             compare_to: str | None = None, settings: SettingsLike = None,
             target: str | None = None) -> Any:
    """What ``lm-router evaluate`` does: the strict leave-one-task-out evaluation of every
    registered decider (and the baselines) on the store's table, tasks grouped by
    ``tasks_by`` (a column of the table or of the side table ``tasks_file``). ``target``
    "score": rows are scored on the normalised metric values, with ``acc_raw`` in the
    metric's units (docs/raw-metrics.md)."""
    from .evaluation.protocol import evaluate as run_evaluate
    from .evaluation.protocol import read_side_table, regroup_tasks

    # (written so that nan fails too); a value given twice is run once
    if not all(0 <= a < 1 for a in alphas) or not all(c >= 1 for c in label_counts):
        raise InvalidParameterError("--alpha/--labels", "alpha values must be in [0, 1) "
                                    "and label counts >= 1")
    alphas, label_counts = list(dict.fromkeys(alphas)), list(dict.fromkeys(label_counts))
    if repeats < 1:
        raise InvalidParameterError("--repeats", f"must be >= 1, got {repeats}")
    store = _store(store)
    settings = _settings(settings, target)
    candidates = listed(candidates, "candidates")
    router, limit = check_request(store, settings, candidates=candidates,
                                  max_params=max_params)
    # categorical columns: at leaderboard scale (10M rows) strings per row would take GBs
    table = store.read_table(required=True, categorical=True)
    side = read_side_table(tasks_file) if tasks_file else None
    table = regroup_tasks(table, tasks_by, side, tasks_file or "--tasks-file")
    return run_evaluate(table, store=store, router=router, alphas=list(alphas) or [0.0],
                        label_counts=list(label_counts), repeats=repeats,
                        candidates=candidates, max_params=limit, compare_to=compare_to,
                        model_info=store.read_models())
