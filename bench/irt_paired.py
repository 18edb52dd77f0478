"""Paired comparison of two rows of the same ``lm-router evaluate --json`` outputs, per set:
row B minus row A in accuracy points with a 95% bootstrap interval over held-out tasks
(tasks resampled, seeded), at zero labels and at each label count (a task's label-row
accuracy is the mean over its repeats: the JSON's per_task label_draws). Used for irt vs
stack (docs/irt.md).

    python bench/irt_paired.py NAME=FILE.json ... [--a stack --b irt] [--labels 10,20]
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def per_task(result: dict, row: str, n_labels: int) -> dict[str, float]:
    out = {}
    for t in result["per_task"]:
        if n_labels == 0:
            if row in t:
                out[t["task"]] = t[row]["acc"]
            continue
        accs = [d["acc"][row] for d in t.get("label_draws", [])
                if d.get("labels") == n_labels and row in d["acc"]]
        if accs:
            out[t["task"]] = float(np.mean(accs))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", help="NAME=evaluate.json")
    parser.add_argument("--a", default="stack")
    parser.add_argument("--b", default="irt")
    parser.add_argument("--labels", default="10,20")
    parser.add_argument("--draws", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = [0] + [int(x) for x in args.labels.split(",") if x]
    print("| set | " + " | ".join(f"{args.b} - {args.a}" + (f" @{n}" if n else "")
                                   for n in counts) + " |")
    print("|---|" + "---|" * len(counts))
    for item in args.sets:
        name, path = item.split("=", 1)
        with open(path) as f:
            result = json.load(f)
        cells = []
        for n in counts:
            a, b = per_task(result, args.a, n), per_task(result, args.b, n)
            tasks = sorted(set(a) & set(b))
            if not tasks:
                cells.append("")
                continue
            diff = np.array([b[t] - a[t] for t in tasks])
            rng = np.random.default_rng(args.seed)
            boot = diff[rng.integers(0, len(diff), size=(args.draws, len(diff)))].mean(1)
            lo, hi = np.percentile(boot, [2.5, 97.5])
            cells.append(f"{100 * diff.mean():+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
