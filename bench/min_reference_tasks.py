"""From how many reference tasks D' should the stacked switch ("stack") replace S3?

The default decision, the stacked switch (stacking.py), is fitted leave-one-task-out on the
reference tasks; with very few of them it is erratic (tau = inf, weights of +-8). This script
measures, on real data, the strict leave-one-task-out accuracy of the rows stack, s3, s1 and
bma on seeded random subsets of D tasks (each of the D tasks held out in turn, everything
fitted on the other D' = D - 1), and how often the zero-label switch fitted on those D'
tasks has tau = inf (i.e. always BMA).

Data sets (stores opened read-only, static embedder, embeddings already cached there):
  routerdc   /work/stores/routerdc, 7 models x 10 tasks
  mmlu-cat   /work/stores/mmlu, 29 models x 14 categories (the stored task column)
  mmlu-src   the same, regrouped into its 91 sources (--tasks-by src, instances.tsv.gz)

Only public functions present in every version are used (Store, evaluate, regroup_tasks,
read_side_table, Router), so the script runs against older and newer code alike.

Reproduce (2 cores, a few minutes):

    . .venv/bin/activate
    PYTHONPATH=/path/to/checkout python bench/min_reference_tasks.py            # all sets
    python bench/min_reference_tasks.py --subsets 20 --sets routerdc mmlu-cat   # subset
    # on 2 cores, one process per store in parallel (the summary pools what one run saw):
    OMP_NUM_THREADS=1 python bench/min_reference_tasks.py --sets routerdc --json a.json &
    OMP_NUM_THREADS=1 python bench/min_reference_tasks.py --sets mmlu-cat mmlu-src --json b.json
    python bench/min_reference_tasks.py --merge a.json b.json    # one table from both

Per subset the figure is the mean accuracy over its D held-out tasks (rows[...]["acc"]);
the table gives, per data set and D', the mean over subsets of stack - s3 and stack - bma
(accuracy points), the share of subsets where stack is below s3 / bma, and the share of
the leave-one-out fits on D' tasks (--tau-fits random held-out tasks per subset, 3 by
default) whose zero-label switch has tau = inf.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

import lm_router_plugin
from lm_router_plugin import Store
from lm_router_plugin.evaluation.protocol import evaluate, read_side_table, regroup_tasks
from lm_router_plugin.router.router import Router

STORES = {"routerdc": "/work/stores/routerdc", "mmlu-cat": "/work/stores/mmlu",
          "mmlu-src": "/work/stores/mmlu"}
SIDE = "/work/shared/data/mmlu_pro/instances.tsv.gz"
SIZES = {"routerdc": (3, 4, 5, 6, 8, 10), "mmlu-cat": (3, 4, 5, 6, 8, 10, 14),
         "mmlu-src": (3, 4, 5, 6, 8, 10, 14, 20, 30)}
ROWS = ("stack", "s3", "s1", "bma")
TOL = 1e-12


def subsets(tasks: list[str], D: int, n: int, seed: int) -> list[list[str]]:
    """n distinct seeded random D-subsets of tasks (all of them when there are <= n)."""
    if math.comb(len(tasks), D) <= n:
        return [list(c) for c in itertools.combinations(tasks, D)]
    rng = np.random.default_rng([seed, D, len(tasks)])
    seen, out = set(), []
    while len(out) < n:
        pick = tuple(sorted(rng.choice(len(tasks), D, replace=False).tolist()))
        if pick not in seen:
            seen.add(pick)
            out.append([tasks[i] for i in pick])
    return out


def tau_inf_share(sub, store, tasks: list[str], n_fits: int, rng) -> float:
    """Share of ``n_fits`` of the D leave-one-out fits (D' = D - 1 reference tasks, held-out
    tasks drawn at random) whose zero-label switch over all models has tau = inf."""
    infs = []
    for held in rng.permutation(tasks)[:n_fits]:
        r = Router(embedder="static").fit(sub[sub["task"] != held], store=store)
        sw = r.stacked_switch(np.ones(len(r.models_), bool))
        infs.append(bool(np.isinf(sw.tau)))
    return float(np.mean(infs))


def run_set(name: str, n_subsets: int, seed: int, sizes, tau_fits: int) -> list[dict]:
    store = Store(STORES[name])
    table = store.read_table()
    if name == "mmlu-src":
        table = regroup_tasks(table, "src", read_side_table(SIDE))
    tasks = sorted(table["task"].unique())
    out = []
    for D in sizes:
        if D > len(tasks):
            continue
        for i, chosen in enumerate(subsets(tasks, D, n_subsets, seed)):
            t0 = time.perf_counter()
            sub = table[table["task"].isin(chosen)]
            res = evaluate(sub, store=store, router=Router(embedder="static"),
                           n_bootstrap=0, n_splits=2)
            rec = {"set": name, "D": D, "subset": i, "tasks": chosen,
                   **{r: float(res.rows[r]["acc"]) for r in ROWS}}
            rec["stack_is_bma"] = float(np.mean([t["stack"]["model"] == t["bma"]["model"]
                                                 for t in res.per_task]))
            rec["tau_inf"] = (tau_inf_share(sub, store, chosen, tau_fits,
                                            np.random.default_rng([seed, D, i, 3]))
                              if tau_fits > 0 else math.nan)
            rec["seconds"] = time.perf_counter() - t0
            out.append(rec)
        print(f"  {name} D={D}: {sum(r['D'] == D for r in out)} subsets", file=sys.stderr,
              flush=True)
    return out


def summarise(records: list[dict]) -> list[dict]:
    rows = []
    keys = sorted({(r["set"], r["D"]) for r in records},
                  key=lambda k: (list(STORES).index(k[0]), k[1]))
    for key in keys + [("pooled", D) for D in sorted({r["D"] for r in records})]:
        rs = [r for r in records if (r["set"], r["D"]) == key
              or (key[0] == "pooled" and r["D"] == key[1])]
        ds3 = np.array([r["stack"] - r["s3"] for r in rs]) * 100
        dbma = np.array([r["stack"] - r["bma"] for r in rs]) * 100
        se = ds3.std(ddof=1) / math.sqrt(len(rs)) if len(rs) > 1 else math.nan
        rows.append({"set": key[0], "Dp": key[1] - 1, "n": len(rs),
                     "stack": 100 * np.mean([r["stack"] for r in rs]),
                     "s3": 100 * np.mean([r["s3"] for r in rs]),
                     "s1": 100 * np.mean([r["s1"] for r in rs]),
                     "bma": 100 * np.mean([r["bma"] for r in rs]),
                     "stack-s3": ds3.mean(), "se": se, "stack-bma": dbma.mean(),
                     "P(stack<s3)": float(np.mean(ds3 < -TOL)),
                     "P(stack<bma)": float(np.mean(dbma < -TOL)),
                     "stack=bma": float(np.mean([r["stack_is_bma"] for r in rs])),
                     "tau=inf": float(np.mean([r["tau_inf"] for r in rs]))})
    return rows


def print_table(rows: list[dict]) -> None:
    head = (f"{'set':9} {'Dp':>3} {'n':>3} {'stack':>6} {'s3':>6} {'s1':>6} {'bma':>6} "
            f"{'stk-s3':>7} {'±se':>5} {'stk-bma':>7} {'P<s3':>5} {'P<bma':>5} "
            f"{'=bma':>5} {'tauinf':>6}")
    print(head)
    print("-" * len(head))
    last = None
    for r in rows:
        if last is not None and r["set"] != last:
            print()
        last = r["set"]
        print(f"{r['set']:9} {r['Dp']:>3} {r['n']:>3} {r['stack']:6.2f} "
              f"{r['s3']:6.2f} {r['s1']:6.2f} {r['bma']:6.2f} {r['stack-s3']:+7.2f} "
              f"{r['se']:5.2f} {r['stack-bma']:+7.2f} {r['P(stack<s3)']:5.2f} "
              f"{r['P(stack<bma)']:5.2f} {r['stack=bma']:5.2f} {r['tau=inf']:6.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", default=list(STORES), choices=list(STORES))
    ap.add_argument("--subsets", type=int, default=10, help="random D-subsets per D")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes", type=int, nargs="+", help="task counts D (default per set)")
    ap.add_argument("--tau-fits", type=int, default=3,
                    help="leave-one-out refits per subset for the tau = inf share (0: none)")
    ap.add_argument("--json", type=Path, help="write the per-subset records here")
    ap.add_argument("--merge", type=Path, nargs="+",
                    help="no runs: one table from these --json files")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    print(f"lm_router_plugin from {Path(lm_router_plugin.__file__).parent}", file=sys.stderr)
    records = []
    if args.merge:
        for path in args.merge:
            records += json.loads(path.read_text())["records"]
    for name in [] if args.merge else args.sets:
        records += run_set(name, args.subsets, args.seed, args.sizes or SIZES[name],
                           args.tau_fits)
    rows = summarise(records)
    print(f"# strict leave-one-task-out, Router(embedder='static'), n_splits=2; "
          f"{'merged runs' if args.merge else f'{args.subsets} seeded subsets (seed {args.seed}) per D'}"
          "; D' = D - 1")
    print("# accuracies in %; stk-s3, stk-bma: mean over subsets of the per-subset "
          "difference (points), ±se over subsets (subsets overlap: optimistic);")
    print("# P<s3, P<bma: share of subsets where stack is lower; =bma: share of held-out "
          "tasks where stack chose BMA's model; tauinf: share of fits with tau = inf")
    print_table(rows)
    print(f"# {len(records)} evaluations, {sum(r['seconds'] for r in records):.0f} s of "
          f"evaluation + refits; this process {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"records": records, "summary": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
