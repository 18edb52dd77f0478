"""Compare two ``lm-router evaluate --json`` outputs of the same table (e.g. two embedders):
per row, both accuracies and their difference B - A with a paired bootstrap 95% interval
over the held-out tasks (tasks resampled with replacement, seeded; each task weighs as in
``evaluate``: the plain mean over tasks).

    python bench/compare_evaluations.py minilm.json static.json
    python bench/compare_evaluations.py A.json B.json --rows s1,s3 --draws 20000 --seed 1
    python bench/compare_evaluations.py A.json B.json --rows stack,stack@10labels
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def per_task(result: dict, row: str) -> dict[str, float]:
    """Task -> accuracy of ``row``; a label row ``NAME@Nlabels`` is the task's mean over its
    repeats with N labels (``label_draws``, scored on the unlabelled items)."""
    if "@" in row and row.endswith("labels"):
        name, count = row[:-len("labels")].split("@")
        out = {}
        for t in result["per_task"]:
            accs = [d["acc"][name] for d in t.get("label_draws", [])
                    if d["labels"] == int(count) and name in d["acc"]]
            if accs:
                out[t["task"]] = float(np.mean(accs))
        return out
    return {t["task"]: t[row]["acc"] for t in result["per_task"] if row in t}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rows", default="s1,s2,s3,bma,oracle")
    parser.add_argument("--draws", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with open(args.a) as fa, open(args.b) as fb:
        a, b = json.load(fa), json.load(fb)
    print(f"A: {args.a} (embedder {a['settings']['embedder']})")
    print(f"B: {args.b} (embedder {b['settings']['embedder']})")
    rng = np.random.default_rng(args.seed)
    print(f"{'row':<14} {'A':>6} {'B':>6} {'B - A':>7}  95% paired bootstrap over tasks")
    for row in [r.strip() for r in args.rows.split(",") if r.strip()]:
        ta, tb = per_task(a, row), per_task(b, row)
        tasks = sorted(set(ta) & set(tb))
        if not tasks:
            print(f"{row:<14} (absent)")
            continue
        if len(tasks) != len(ta) or len(tasks) != len(tb):
            print(f"error: row {row}: the two results hold different tasks", file=sys.stderr)
            return 1
        xa = np.array([ta[t] for t in tasks])
        xb = np.array([tb[t] for t in tasks])
        idx = rng.integers(0, len(tasks), size=(args.draws, len(tasks)))
        diffs = (xb[idx] - xa[idx]).mean(axis=1)
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        print(f"{row:<14} {xa.mean():6.3f} {xb.mean():6.3f} {xb.mean() - xa.mean():+7.3f}  "
              f"[{lo:+.3f}, {hi:+.3f}]  ({len(tasks)} tasks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
