"""PNG figures of an evaluation (matplotlib, an optional extra: ``pip install
lm-router-plugin[plot]``).

    >>> write_plots(result, Path("figures/"))   # -> list of written PNG paths
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import LMRouterError, UsageError

if TYPE_CHECKING:
    from .protocol import EvaluationResult

logger = logging.getLogger(__name__)


def prepare(folder: Path) -> None:
    """Check that matplotlib imports and ``folder`` can be created and written, so that
    ``--plot`` fails before the evaluation runs rather than after."""
    _pyplot()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"--plot: cannot create the folder {folder}: {reason} (give a "
                         "folder that can be created)") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--plot: cannot write into the folder {folder}: permission denied")


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise LMRouterError("--plot needs matplotlib: pip install 'lm-router-plugin[plot]'"
                            ) from exc
    return plt


def write_plots(result: EvaluationResult, folder: Path) -> list[Path]:
    """Accuracy vs alpha (thesis Fig. 4.1), Pearson vs task distance u (Fig. 4.2), and the
    per-task accuracy of the chosen model against BMA and Oracle."""
    plt = _pyplot()
    prepare(folder)
    rows = result.rows
    written: list[Path] = []

    # 1. accuracy against alpha
    fig, ax = plt.subplots(figsize=(6, 4))
    alphas = [0.0] + [entry["alpha"] for entry in result.alpha_sweep
                      if entry.get("alpha") is not None]  # --labels entries have none
    from ..registry import deciders

    lines = [(name, getattr(deciders.get(name), "title", "") or name)
             for name in result.settings.get("deciders", [])] + [("few_shot", "Few-shot")]
    for name, label in lines:
        if name == result.settings.get("default"):
            label += " (default)"
        means, stds = [], []
        for alpha in alphas:
            key = name if alpha == 0 else f"{name}@{alpha:g}"
            if key not in rows:
                means.append(float("nan"))
                stds.append(0.0)
                continue
            means.append(rows[key]["acc"])
            stds.append(rows[key].get("acc_std", 0.0))
        ax.errorbar(alphas, means, yerr=stds, marker="o", capsize=3, label=label)
    ax.axhline(rows["bma"]["acc"], color="gray", linestyle="--", label="BMA")
    ax.axhline(rows["oracle"]["acc"], color="black", linestyle=":", label="Oracle")
    ax.set_xlabel("alpha (fraction of in-task labels, at most 50)")
    ax.set_ylabel("accuracy of the chosen model")
    ax.set_title(f"Leave-one-task-out, {result.n_tasks} tasks, {result.n_models} models")
    ax.legend(fontsize=8)
    written.append(_save(fig, folder / "accuracy_vs_alpha.png"))

    # 2. Pearson correlation of scores with true accuracy against u
    fig, ax = plt.subplots(figsize=(6, 4))
    u = [t["u"] for t in result.per_task]
    for name, label in (("s1", "S1"), ("s3", "S3")):
        if not _has(result, name, "pearson_vs_u.png"):
            continue
        ax.scatter(u, [t[name]["pearson"] for t in result.per_task], label=label, s=14)
    kappa = result.settings.get("kappa", "kappa")
    ax.set_xlabel(f"task distance u (mean cosine distance to {kappa} nearest reference "
                  "inputs)")
    ax.set_ylabel("Pearson(score, true accuracy)")
    ax.axhline(0, color="gray", linewidth=0.5)
    ax.legend(fontsize=8)
    written.append(_save(fig, folder / "pearson_vs_u.png"))

    # 3. per-task accuracy of the chosen model
    per_task = sorted(result.per_task, key=lambda t: t["oracle"]["acc"])
    fig, ax = plt.subplots(figsize=(max(6, 0.12 * len(per_task) + 2), 4))
    x = range(len(per_task))
    ax.plot(x, [t["oracle"]["acc"] for t in per_task], "k_", markersize=8, label="Oracle")
    ax.plot(x, [t["bma"]["acc"] for t in per_task], "s", color="gray", markersize=3,
            label="BMA")
    if _has(result, "s3", "per_task_accuracy.png"):
        ax.plot(x, [t["s3"]["acc"] for t in per_task], "o", markersize=3, label="S3 choice")
    ax.set_xticks(list(x))
    # task names are data, not mathtext: a name with two '$' would fail to draw
    ax.set_xticklabels([t["task"] for t in per_task], rotation=90, fontsize=5,
                       parse_math=False)
    ax.set_ylabel("accuracy on the held-out task")
    ax.legend(fontsize=8)
    written.append(_save(fig, folder / "per_task_accuracy.png"))
    return written


def _has(result: EvaluationResult, name: str, figure: str) -> bool:
    """Whether every task has the decision ``name`` (S2/S3 are not run under --target
    score); logs the figure it is left out of otherwise."""
    if all(name in t for t in result.per_task):
        return True
    why = " (not computed under --target score)" \
        if result.settings.get("target") == "score" else ""
    logger.info("%s: no %s results%s, left out", figure, name.upper(), why)
    return False


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
