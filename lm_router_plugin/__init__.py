"""lm-router-plugin: learn from per-sample benchmark results which LLM to use for a new task.

    >>> from lm_router_plugin import Store, ingest, recommend
    >>> ingest("lm-eval", ["runs/"], Store("lm-router-store"))
    >>> rec = recommend("lm-router-store", task="my_task", include_path="task_configs/")
    >>> rec.choice, rec.reason, rec.estimates

The layout follows the flow: ``store`` (the correctness table and ingest) -> ``embedding``
-> ``router`` (pool, neighbours, predictors, calibration, the stacked switch, deciders) ->
``api`` (recommend, plan_labels, route, info, evaluate) -> ``cli``; ``task`` holds the new
task's docs and labels, ``evaluation`` the leave-one-task-out protocol; ``errors``,
``registry`` and ``settings`` are shared. Heavy modules (torch, sentence-transformers,
lm-eval) are imported only when used.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("lm-router-plugin")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

_LAZY = {
    "Store": ".store.store",
    "Thresholds": ".store.thresholds",
    "ingest": ".store.ingest",
    "accuracy_table": ".store.ingest",
    "validate_table": ".store.schema",
    "LMRouterError": ".errors",
    "Router": ".router.router",
    "Recommendation": ".router.recommendation",
    "recommend": ".api",
    "plan_labels": ".api",
    "route": ".api",
    "Settings": ".settings",
    "load_settings": ".settings",
    "evaluate": ".evaluation.protocol",
    "EvaluationResult": ".evaluation.protocol",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
