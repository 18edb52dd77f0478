"""Kernel S1 (bench/kernel_s1.py, decider "s1_kernel") against the evaluation's rows.

Issue 19, item 1: S1 averages the kNN predictor's per-input correctness with k = 5; for a
task-level choice, average the reference correctness over the K most similar reference
inputs with a similarity kernel exp((sim - 1) / h), h chosen by an inner leave-one-task-out
on the reference tasks. Measured here as a standalone function over (X, Y, task_of), strict
leave-one-task-out: for each held-out task d, h is chosen on the other tasks only (each of
them predicted from the tasks other than it and d), and d's docs are scored against the
references outside d (kernel_s1.leave_out_kernel holds every such fit; tests check it
against explicit fits). The other rows (s1, s3, stack, bma, oracle) come from
``evaluate(table, store=store, router=Router(embedder="static"), n_bootstrap=0)``.

Columns: "s1k argmax" (the argmax of S1k, h by the inner LOTO) and "s1_kernel" (the
decider's default: S1k's best model only when its lead over BMA's S1k exceeds a margin tau,
(h, tau) chosen jointly by the same inner LOTO; JSON key s1k_switch); every fixed h of the
grid (argmax; what the inner choice is worth).

Data sets (stores read-only, static embedder, embeddings cached there):
  routerdc   /work/stores/routerdc, 7 models x 10 tasks
  mmlu-cat   /work/stores/mmlu, 29 models x 14 categories
  mmlu-src   the same regrouped into its 91 sources (instances.tsv.gz)
  variants of the mmlu sets (--variants all le13b nogem): "-le13b" (candidates with params
  <= 13e9) and "-nogem" (every model but gemini-1.5-pro-002)

    . .venv/bin/activate; export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
    OMP_NUM_THREADS=1 python bench/task_kernel_results.py --sets routerdc mmlu-cat \\
        --variants all le13b nogem --json /tmp/tk_a.json &
    OMP_NUM_THREADS=1 python bench/task_kernel_results.py --sets mmlu-src \\
        --variants all le13b nogem --json /tmp/tk_b.json
    python bench/task_kernel_results.py --merge /tmp/tk_a.json /tmp/tk_b.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np

from lm_router_plugin import Store
from lm_router_plugin.evaluation.protocol import evaluate, read_side_table, regroup_tasks
from lm_router_plugin.router.pool import build_pool
from lm_router_plugin.router.router import Router, model_mask
from lm_router_plugin.router.scores import argmax_with_ties, quiet_nanmean
from kernel_s1 import (
    BANDWIDTHS,
    DEFAULT_K,
    choice_accuracy,
    choose_bandwidth,
    choose_switch,
    leave_out_kernel,
    switch_choice,
)

STORES = {"routerdc": "/work/stores/routerdc", "mmlu-cat": "/work/stores/mmlu",
          "mmlu-src": "/work/stores/mmlu"}
SIDE = "/work/shared/data/mmlu_pro/instances.tsv.gz"
VARIANTS = {"all": {}, "le13b": {"max_params": 13_000_000_000},
            "nogem": {"drop": "gemini-1.5-pro-002"}}
ROWS = ("s1", "s3", "stack", "bma", "oracle")
TOL = 1e-12


def load(name: str):
    store = Store(STORES[name])
    table = store.read_table()
    if name == "mmlu-src":
        table = regroup_tasks(table, "src", read_side_table(SIDE))
    return store, table


def tie_of(A: np.ndarray, skip: list[int]) -> np.ndarray:
    """Mean accuracy over the tasks not in ``skip`` (the calibration's mean_accuracy)."""
    keep = [z for z in range(len(A)) if z not in skip]
    return np.nan_to_num(quiet_nanmean(A[keep]))


def run_set(name: str, k: int, variants: list[str]) -> list[dict]:
    t0 = time.time()
    store, table = load(name)
    pool = build_pool(table)
    router = Router(embedder="static")
    X, _ = router.reference_embeddings(pool, store, None)
    t1 = time.time()
    kt = leave_out_kernel(X, pool.Y, pool.task_of, k=k, bandwidths=BANDWIDTHS)
    t_kernel = time.time() - t1
    A, D = kt.accuracy, kt.n_tasks
    info = store.read_models()
    out = []
    for suffix in variants:
        if name == "routerdc" and suffix != "all":
            continue
        spec = VARIANTS[suffix]
        candidates = ([m for m in pool.models if m != spec["drop"]] if "drop" in spec
                      else None)
        max_params = spec.get("max_params")
        allowed = model_mask(pool.models, candidates, max_params, info)
        t2 = time.time()
        res = evaluate(table, store=store, router=Router(embedder="static"), n_bootstrap=0,
                       candidates=candidates, max_params=max_params, model_info=info)
        t_eval = time.time() - t2
        per = {t["task"]: t for t in res.per_task}
        tasks = []
        for d, task in enumerate(pool.task_names):
            ok = allowed & ~np.isnan(A[d])
            tie = tie_of(A, [d])
            h, inner = choose_bandwidth(kt, allowed, held_out=d)
            j = kt.bandwidths.index(h)
            fixed = [choice_accuracy(kt.s1k[jj, d, D], A[d], ok, tie)
                     for jj in range(len(kt.bandwidths))]
            hs_, tau = choose_switch(kt, allowed, held_out=d)[:2]
            js = kt.bandwidths.index(hs_)
            sw = switch_choice(kt.s1k[js, d, D], ok, tie, tau)[0]
            s = kt.s1k[j, d, D]
            pick = argmax_with_ties(np.where(ok, np.nan_to_num(s, nan=-np.inf), -np.inf), tie)
            rec = {"task": task, "n": int(np.sum(pool.task_of == d)), "h": h,
                   "s1_kernel": float(A[d, pick]), "s1_kernel_model": pool.models[pick],
                   "fixed": fixed, "s1k_switch": float(A[d, sw]),
                   "switch_h": kt.bandwidths[js], "switch_tau": tau,
                   **{r: per[task][r]["acc"] for r in ROWS},
                   "stack_model": per[task]["stack"]["model"]}
            tasks.append(rec)
        out.append({"set": name + ("" if suffix == "all" else f"-{suffix}"), "k": k, "n_tasks": D,
                    "n_models": int(allowed.sum()), "tasks": tasks,
                    "rows": {r: res.rows[r]["acc"] for r in ROWS},
                    "seconds_kernel": t_kernel, "seconds_evaluate": t_eval,
                    "seconds_total": time.time() - t0})
        print(summary_line(out[-1]), file=sys.stderr, flush=True)
    return out


def paired(a: np.ndarray, b: np.ndarray, seed: int = 0, n_boot: int = 10000) -> dict:
    """Mean of a - b over tasks, its 95% bootstrap interval over tasks, wins/ties/losses."""
    diff = a - b
    rng = np.random.default_rng(seed)
    boot = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    return {"diff": float(diff.mean()), "ci": [float(np.percentile(boot, 2.5)),
                                               float(np.percentile(boot, 97.5))],
            "wins": int(np.sum(diff > TOL)), "ties": int(np.sum(np.abs(diff) <= TOL)),
            "losses": int(np.sum(diff < -TOL))}


def summary_line(r: dict) -> str:
    t = r["tasks"]
    col = {key: np.array([x[key] for x in t]) for key in
           ("s1_kernel", "s1k_switch") + ROWS}
    p = paired(col["s1_kernel"], col["stack"])
    return (f"{r['set']}: s1_kernel {col['s1_kernel'].mean():.4f} stack "
            f"{col['stack'].mean():.4f} ({p['wins']}/{p['ties']}/{p['losses']}) "
            f"[{r['seconds_total']:.0f}s]")


def report(results: list[dict]) -> str:
    hs = ["inf" if math.isinf(h) else f"{h:g}" for h in BANDWIDTHS]
    lines = ["| set | D | M | s1k argmax | s1_kernel | s1 | s3 | stack | bma | oracle | "
             "argmax-stack [95% CI] | W/T/L vs stack | s1_kernel-stack [95% CI] | W/T/L | "
             "h chosen (argmax) | "
             + " | ".join(f"h={h}" for h in hs) + " | s |",
             "|" + "---|" * (17 + len(hs))]
    details = []
    for r in results:
        t = r["tasks"]
        col = {key: np.array([x[key] for x in t], dtype=float) for key in
               ("s1_kernel", "s1k_switch") + ROWS}
        fixed = np.array([x["fixed"] for x in t], dtype=float).mean(axis=0)
        vs_stack = paired(col["s1_kernel"], col["stack"])
        sw = paired(col["s1k_switch"], col["stack"])
        chosen = {}
        for x in t:
            key = "inf" if math.isinf(x["h"]) else f"{x['h']:g}"
            chosen[key] = chosen.get(key, 0) + 1
        lines.append(
            f"| {r['set']} | {r['n_tasks']} | {r['n_models']} | "
            + " | ".join(f"{col[c].mean():.4f}" for c in ("s1_kernel", "s1k_switch") + ROWS)
            + f" | {100 * vs_stack['diff']:+.2f} [{100 * vs_stack['ci'][0]:+.2f}, "
            f"{100 * vs_stack['ci'][1]:+.2f}] | {vs_stack['wins']}/{vs_stack['ties']}/"
            f"{vs_stack['losses']} | {100 * sw['diff']:+.2f} [{100 * sw['ci'][0]:+.2f}, "
            f"{100 * sw['ci'][1]:+.2f}] | {sw['wins']}/{sw['ties']}/{sw['losses']} | "
            + ", ".join(f"{k}: {v}" for k, v in sorted(chosen.items())) + " | "
            + " | ".join(f"{f:.4f}" for f in fixed) + f" | {r['seconds_total']:.0f} |")
        # the evaluate rows must match the per-task records (same tasks, same protocol)
        for c in ROWS:
            assert abs(col[c].mean() - r["rows"][c]) < 1e-9, (r["set"], c)
        if len(t) <= 20:
            details.append(f"\n{r['set']} per task (h, s1k argmax; s1_kernel; stack):")
            for x in t:
                hh = "inf" if math.isinf(x["h"]) else f"{x['h']:g}"
                details.append(f"  {x['task'][:40]:40s} n={x['n']:5d} h={hh:5s} "
                               f"argmax {x['s1_kernel']:.4f} ({x['s1_kernel_model']}) "
                               f"s1_kernel {x['s1k_switch']:.4f} "
                               f"(h={x['switch_h']:g}, tau={x['switch_tau']:g}) "
                               f"stack {x['stack']:.4f} ({x['stack_model']})")
    return "\n".join(lines + details)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=list(STORES), choices=list(STORES))
    ap.add_argument("--variants", nargs="+", default=["all"], choices=list(VARIANTS),
                    help="all (every model), le13b, nogem (mmlu sets only)")
    ap.add_argument("--k", type=int, default=DEFAULT_K)
    ap.add_argument("--json", help="write the per-task records here")
    ap.add_argument("--merge", nargs="+", help="report from these --json files")
    args = ap.parse_args(argv)
    if args.merge:
        results = [r for path in args.merge for r in json.load(open(path))]
    else:
        results = [r for name in args.sets for r in run_set(name, args.k, args.variants)]
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(results, fh)
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
