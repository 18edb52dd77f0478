"""Experiment (issue 10): a selection-aware switch for the posterior rows `cal` / `post@`.

The shipped rule keeps the highest posterior mean over BMA when P(it beats BMA) > eta. This
script swaps in "P(it is the best of all candidates) > eta" (joint posterior, 2,000 draws)
and prints the rows next to S3, BMA and few-shot, on MMLU-Pro (14 and 91 tasks, MiniLM
cached) and RouterDC (static embedder), 5 repeats of --labels 10,30:

    python bench/exp_selection_aware.py base  STORE_MMLU STORE_ROUTERDC
    python bench/exp_selection_aware.py pbest STORE_MMLU STORE_ROUTERDC

Result (2026-11-28): more conservative; better on MMLU-Pro, worse on RouterDC; not adopted.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import lm_router_plugin.evaluation as EV
from lm_router_plugin import Store
from lm_router_plugin.evaluation import evaluate, regroup_tasks, read_side_table
from lm_router_plugin.router import Router
from lm_router_plugin.calibration import best_on_average
from lm_router_plugin.scores import argmax_with_ties

def decide_pbest(est, cal, eta):
    bma = best_on_average(cal, est.allowed)
    best = argmax_with_ties(np.where(est.allowed, est.mean, -np.inf), cal.mean_accuracy)
    if best == bma:
        return bma, 0.5, bma
    pb = est.p_best(np.random.default_rng(0), n_draws=2000)
    return (best if pb[best] > eta else bma), float(pb[best]), bma

mode = sys.argv[1]
if mode == "pbest":
    EV.decide_with_estimate = decide_pbest
out = {}
for name, store, emb, by in [("cat14", sys.argv[2], None, None),
                             ("src91", sys.argv[2], None, "src"),
                             ("routerdc", sys.argv[3], "static", None)]:
    st = Store(store)
    table = st.read_table()
    if by:
        table = regroup_tasks(table, "src", read_side_table(str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mmlu_pro" / "instances.tsv.gz")))
    res = evaluate(table, store=st, router=Router(embedder=emb), label_counts=[10, 30], repeats=5, n_bootstrap=0)
    r = res.rows
    out[name] = {k: (round(r[k]["acc"], 4), r[k].get("wins"), r[k].get("losses")) for k in ("s3", "cal", "bma", "post@10labels", "s3@10labels", "few_shot@10labels", "post@30labels", "post_planned@30labels", "few_shot@30labels")}
    print(name, out[name], flush=True)
