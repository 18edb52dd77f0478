"""The library-level commands: what ``lm-router recommend`` and ``lm-router route`` do, as
functions (the CLI only parses options and prints).

    >>> rec = recommend("lm-router-store", task="my_task", include_path="task_configs/")
    >>> rec = recommend(store, prompts=["What is 2+2?", ...], max_params="13B", k=5)
    >>> decisions = route(store, prompts=[...])

Everything cheap is checked before anything slow: the router constants, the store, the
candidate names and --max-params come before building an lm-eval task, embedding or
fitting, so a typo costs no minutes of embedding.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .decision import SCORES, Recommendation, RouteDecision
from .errors import UnknownNameError
from .registry import unknown_name_message
from .router import InvalidParameterError, Router, model_mask
from .schema import METRIC, MODEL, THRESHOLD
from .store import Store, parse_params

logger = logging.getLogger(__name__)


def _store(store: Store | str | Path | None) -> Store:
    return store if isinstance(store, Store) else Store(store)


def check_request(store: Store, router_params: dict[str, Any], *, score: str = "s3",
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
    models = sorted(store.read_table(columns=[MODEL], required=True)[MODEL].unique())
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
    stored = store.read_table(columns=[METRIC, THRESHOLD]).dropna(subset=[THRESHOLD])
    for metric, values in stored.groupby(METRIC)[THRESHOLD]:
        out.metrics[str(metric)] = float(values.mode().iloc[0])
    return out


def read_labeled(store: Store, paths: Sequence[str | Path],
                 thresholds: str | Path | None = None) -> pd.DataFrame | None:
    """Correctness rows of lm-eval sample logs of the new task (same labelling as ingest)."""
    if not paths:
        return None
    from .ingest import read_rows

    rows, _ = read_rows("lm-eval", list(paths), labelling_thresholds(store, thresholds))
    return rows


def recommend(store: Store | str | Path | None = None, *, task: str | None = None,
              include_path: str | Path | None = None, prompts: Sequence[str] | None = None,
              prompts_file: str | Path | None = None, limit: int | None = None,
              labeled: Sequence[str | Path] = (), thresholds: str | Path | None = None,
              score: str = "s3", candidates: Sequence[str] | None = None,
              max_params: int | str | None = None, **router_params: Any) -> Recommendation:
    """Which model to use for a new task: exactly one of ``task`` (an lm-eval task, with
    ``include_path``), ``prompts`` or ``prompts_file``. ``router_params`` are Router's
    (k, kappa, sigma, t, eta, n_draws, seed, predictor, predictor_params, embedder, ...)."""
    from .persistence import fit_or_load
    from .tasks import read_prompts_file, task_prompts

    given = [x is not None for x in (task, prompts, prompts_file)]
    if sum(given) != 1:
        raise ValueError("give exactly one of task, prompts or prompts_file")
    store = _store(store)
    _, limit_params = check_request(store, router_params, score=score, candidates=candidates,
                                    max_params=max_params)
    if task is not None:
        texts = task_prompts(task, include_path, limit=limit)
    elif prompts_file is not None:
        texts = read_prompts_file(prompts_file)
    else:
        texts = list(prompts)
    labeled_rows = read_labeled(store, labeled, thresholds)
    router = fit_or_load(store, **router_params)
    name = task or (str(prompts_file) if prompts_file is not None else "prompts")
    return router.recommend(texts, task=name, score=score, labeled=labeled_rows, store=store,
                            candidates=candidates, max_params=limit_params,
                            model_info=store.read_models())


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
