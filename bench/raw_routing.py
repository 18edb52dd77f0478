"""Per-instance routing on raw metric values (``--target score``) on RouterDC's generative
tasks, against the best model on average (BMA) and the per-instance Oracle (issue 20).

RouterDC (../shared/data/routerdc, 7 open LLMs x 10 tasks) holds a raw value per
(question, model): on the generative tasks (gsm8k, MATH_prealgebra, humaneval, mbpp,
javascript) the fraction of sampled generations judged correct ("frac_correct"), on the
multiple-choice tasks the probability on the chosen option when it was correct, else 0
("prob_correct"). For each generative task d, a ``Router(target="score")`` is fitted on the
other nine tasks only (the held-out task's rows never reach the fit: its scale, its BMA and
its calibration come from the other tasks) and routes every question of d with
``Router.route`` (which leaves BMA only for a predicted lead above a margin learned
leave-one-task-out on the reference tasks, pool.fit_route_margin) and, for comparison, by
the plain per-input argmax of g (the paper's MoE); the realised raw value of the chosen
model is compared with BMA's (the best model on the nine reference tasks, normalised means)
and with the per-instance Oracle (the best raw value among the models on that question). Intervals: seeded bootstrap over
the questions of each task (paired: the same resampled questions for every row), and over
tasks for the mean of the five.

``--write-table`` also writes the raw table (correct binarised as the data's README says,
score raw, metric) for ``lm-router ingest table`` and ``evaluate --target score``. Output
goes to /tmp by default: the data must never be committed, nor anything derived from it.

    python bench/raw_routing.py --store /tmp/routerdc-raw --write-table /tmp/routerdc/raw.tsv.gz \\
        --out /tmp/routerdc/raw_routing.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routerdc" / "table.tsv.gz"
CACHE = Path("/work/stores/routerdc")  # MiniLM vectors of every RouterDC text (read only)
MULTIPLE_CHOICE = {"mmlu", "cmmlu", "ceval", "arc_challenge", "arc_easy"}
GENERATIVE = ("gsm8k", "MATH_prealgebra", "humaneval", "mbpp", "javascript")
N_BOOTSTRAP = 2000


def raw_table(path: Path):
    """RouterDC's table with ``score`` (raw), ``metric`` and ``correct`` (binarised as the
    README says: multiple choice correct > 0, generative correct >= 0.5)."""
    import pandas as pd

    table = pd.read_csv(path, sep="\t", keep_default_na=False,
                        dtype={"instance_id": str, "task": str, "model": str})
    raw = table["correct"].astype(float)
    mc = table["task"].isin(MULTIPLE_CHOICE)
    table["score"] = raw
    table["metric"] = np.where(mc, "prob_correct", "frac_correct")
    table["correct"] = ((mc & (raw > 0)) | (~mc & (raw >= 0.5))).astype(int)
    return table[["task", "instance_id", "model", "input_text", "metric", "score", "correct"]]


def bootstrap(diff: np.ndarray, rng: np.random.Generator, n: int = N_BOOTSTRAP) -> list[float]:
    """95% percentile interval of the mean of ``diff`` (items resampled with replacement)."""
    idx = rng.integers(0, len(diff), size=(n, len(diff)))
    means = diff[idx].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--store", default="/tmp/routerdc-raw",
                        help="embedding cache (created; the MiniLM vectors of --cache are "
                             "copied in when it has none)")
    parser.add_argument("--cache", default=str(CACHE))
    parser.add_argument("--embedder", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-table", default=None,
                        help="also write the raw table here (.tsv.gz) for lm-router ingest")
    parser.add_argument("--out", default="/tmp/routerdc/raw_routing.json")
    args = parser.parse_args()
    if not Path(args.data).exists():
        print(f"skipped: {args.data} is absent (RouterDC table, see ../shared/data)")
        return 0
    from lm_router_plugin import Store
    from lm_router_plugin.router.calibration import best_on_average
    from lm_router_plugin.router.pool import ROUTE_MARGINS, fit_route_margin
    from lm_router_plugin.router.recommendation import route_choices
    from lm_router_plugin.router.router import Router

    table = raw_table(Path(args.data))
    if args.write_table:
        Path(args.write_table).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.write_table, sep="\t", index=False)
        print(f"wrote {len(table)} rows -> {args.write_table}")
    store_dir = Path(args.store)
    if not (store_dir / "embeddings").exists() and (Path(args.cache) / "embeddings").exists():
        shutil.copytree(Path(args.cache) / "embeddings", store_dir / "embeddings")
    store = Store(store_dir)
    rng_root = np.random.SeedSequence(args.seed)
    per_task = []
    pooled: dict[str, list] = {"route": [], "argmax": [], "bma": [], "oracle": [],
                               "task_oracle": []}
    for d, task in enumerate(GENERATIVE):
        start = time.perf_counter()
        reference = table[table["task"] != task]
        held = table[table["task"] == task]
        router = Router(target="score", embedder=args.embedder, k=args.k, seed=args.seed)
        router.fit(reference, store=store)
        # the held-out questions, one row each, and their raw values per model (Q, M)
        wide = held.pivot(index="instance_id", columns="model", values="score")
        wide = wide.reindex(columns=router.models_)
        texts = held.drop_duplicates("instance_id").set_index("instance_id")["input_text"]
        texts = texts.reindex(wide.index)
        values = wide.to_numpy(float)
        decisions = router.route(list(texts), store=store)
        col = {m: j for j, m in enumerate(router.models_)}
        chosen = np.array([col[dec.model] for dec in decisions])
        rows = np.arange(len(values))
        routed = values[rows, chosen]
        # the plain per-input argmax of g (the paper's MoE, no margin), for comparison
        g = np.array([[dec.g[m] for m in router.models_] for dec in decisions])
        plain = route_choices(g, router.calibration_, np.ones(len(router.models_), bool))
        argmax_values = values[rows, plain]
        allowed = np.ones(len(router.models_), bool)
        tau, inner = fit_route_margin(router.loo_g_, router.Y_, router.task_of_,
                                      router.calibration_.accuracy,
                                      router.calibration_.included, allowed)
        bma = best_on_average(router.calibration_, np.ones(len(router.models_), bool))
        bma_values = values[:, bma]
        oracle = np.nanmax(values, axis=1)
        task_best = int(np.nanargmax(np.nanmean(values, axis=0)))
        ok = ~np.isnan(routed) & ~np.isnan(bma_values) & ~np.isnan(argmax_values)
        rng = np.random.default_rng(rng_root.spawn(1)[0])
        record = {
            "task": task, "n": int(ok.sum()), "bma_model": router.models_[bma],
            "task_oracle_model": router.models_[task_best],
            "route": float(np.mean(routed[ok])), "bma": float(np.mean(bma_values[ok])),
            "oracle": float(np.mean(oracle[ok])),
            "task_oracle": float(np.mean(values[ok, task_best])),
            "route_minus_bma": float(np.mean(routed[ok] - bma_values[ok])),
            "route_minus_bma_ci": bootstrap(routed[ok] - bma_values[ok], rng),
            "margin": tau, "margin_inner_gain": dict(zip(map(str, ROUTE_MARGINS),
                                                         map(float, inner))),
            "argmax": float(np.mean(argmax_values[ok])),
            "argmax_minus_bma": float(np.mean(argmax_values[ok] - bma_values[ok])),
            "argmax_minus_bma_ci": bootstrap(argmax_values[ok] - bma_values[ok], rng),
            "oracle_minus_bma": float(np.mean(oracle[ok] - bma_values[ok])),
            "share_routed_to_bma": float(np.mean(chosen == bma)),
            "chosen": {m: int(np.sum(chosen == j)) for j, m in enumerate(router.models_)
                       if np.any(chosen == j)},
            "seconds": round(time.perf_counter() - start, 1)}
        record["gap_closed"] = (record["route_minus_bma"] / record["oracle_minus_bma"]
                                if record["oracle_minus_bma"] > 0 else None)
        per_task.append(record)
        for key, vals in (("route", routed), ("argmax", argmax_values), ("bma", bma_values),
                          ("oracle", oracle),
                          ("task_oracle", values[:, task_best])):
            pooled[key].append(vals[ok])
        print(f"{task}: n={record['n']} route {record['route']:.4f} (margin {tau}) argmax "
              f"{record['argmax']:.4f} bma {record['bma']:.4f} ({record['bma_model']}) "
              f"oracle {record['oracle']:.4f}; route-bma {record['route_minus_bma']:+.4f} "
              f"{record['route_minus_bma_ci']}; argmax-bma {record['argmax_minus_bma']:+.4f} "
              f"{record['argmax_minus_bma_ci']} [{record['seconds']} s]", flush=True)
    rng = np.random.default_rng(rng_root.spawn(1)[0])
    summary: dict = {key: float(np.mean([np.mean(v) for v in vals]))
                     for key, vals in pooled.items()}
    items_bma = np.concatenate(pooled["bma"])
    for row in ("route", "argmax"):
        diffs = [np.mean(r) - np.mean(b) for r, b in zip(pooled[row], pooled["bma"])]
        summary[f"{row}_minus_bma"] = float(np.mean(diffs))
        summary[f"{row}_minus_bma_ci_over_tasks"] = bootstrap(np.array(diffs), rng)
        items = np.concatenate(pooled[row])
        summary[f"{row}_minus_bma_items"] = float(np.mean(items - items_bma))
        summary[f"{row}_minus_bma_items_ci"] = bootstrap(items - items_bma, rng)
    summary["n_items"] = len(items_bma)
    result = {"data": str(args.data), "embedder": args.embedder, "k": args.k,
              "seed": args.seed, "metric": "frac_correct (fraction of generations correct)",
              "per_task": per_task, "mean_over_tasks": summary}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"mean over the {len(GENERATIVE)} tasks: route {summary['route']:.4f} argmax "
          f"{summary['argmax']:.4f} bma {summary['bma']:.4f} oracle {summary['oracle']:.4f} "
          f"task-oracle {summary['task_oracle']:.4f}; route-bma "
          f"{summary['route_minus_bma']:+.4f} {summary['route_minus_bma_ci_over_tasks']}; "
          f"argmax-bma {summary['argmax_minus_bma']:+.4f} "
          f"{summary['argmax_minus_bma_ci_over_tasks']} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
