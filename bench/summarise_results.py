"""One table over several ``lm-router evaluate --json`` outputs: per set, each row's mean gain
over BMA in accuracy points (and the share of the BMA -> Oracle gap it closes), at zero labels
and at N in-task labels, plus the mean over the sets; first the Oracle's and the split-half
Oracle's gains (the ceilings), the median per-task Oracle - BMA difference and the task sizes.

    python bench/summarise_results.py NAME=FILE.json [NAME=FILE.json ...] [--labels 10,30]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

ZERO = ("s1", "s3", "stack", "cal")
WITH_LABELS = ("few_shot", "s1", "s3", "stack", "stack_planned", "post", "post_planned")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", help="NAME=evaluate.json")
    parser.add_argument("--labels", default="10,30")
    args = parser.parse_args()
    counts = [int(c) for c in args.labels.split(",") if c]
    data = {}
    for item in args.sets:
        if "=" not in item:
            parser.error(f"{item!r}: give NAME=FILE.json (an `lm-router evaluate --json` output)")
        name, path = item.split("=", 1)
        try:
            result = json.loads(open(path).read())
            data[name] = {"rows": result["rows"], "per_task": result["per_task"]}
        except (OSError, ValueError, KeyError) as exc:
            parser.error(f"{path}: not a readable `lm-router evaluate --json` output ({exc})")
    per_task = {n: data[n]["per_task"] for n in data}
    data = {n: data[n]["rows"] for n in data}
    names = list(data)
    rows = [(r, r) for r in ZERO] + [(f"{r}@{n}", f"{r}@{n}labels") for n in counts
                                     for r in WITH_LABELS]
    print("| row | " + " | ".join(names) + " | mean |")
    print("|---" * (len(names) + 2) + "|")
    print("| BMA / Oracle acc. | " + " | ".join(
        f"{data[n]['bma']['acc']:.3f} / {data[n]['oracle']['acc']:.3f}" for n in names) + " | |")
    # the ceilings: the Oracle on all items (noisy on small tasks) and the split-half Oracle
    # (chosen on a random half of the task's items, scored on the other half)
    for label, col in (("oracle", "acc"), ("oracle (split-half)", "acc_half")):
        gains = [(data[n]["oracle"][col] - data[n]["bma"][col]) * 100 for n in names]
        print(f"| {label} | " + " | ".join(f"{x:+.2f}" for x in gains)
              + f" | {np.mean(gains):+.2f} |")
    # what a few labels must resolve: the per-task Oracle - BMA difference (median over
    # tasks) and the tasks' sizes
    print("| oracle - BMA, median per task | " + " | ".join(
        f"{np.median([(t['oracle']['acc'] - t['bma']['acc']) * 100 for t in per_task[n]]):+.2f}"
        for n in names) + " | |")
    print("| items per task (min-max) | " + " | ".join(
        f"{min(t['n'] for t in per_task[n])}-{max(t['n'] for t in per_task[n])}"
        for n in names) + " | |")
    for label, key in rows:
        cells, gains = [], []
        for n in names:
            row = data[n].get(key)
            if row is None:
                cells.append("")
                continue
            gain = row["gain_over_bma"] * 100
            gains.append(gain)
            gap = row.get("gap_closed")
            wl = f" ({row['wins']:g}/{row['losses']:g})" if "wins" in row else ""
            cells.append(f"{gain:+.2f}" + (f" [{gap:.0%}]" if gap == gap and gap is not None
                                           else "") + wl)
        mean = f"{np.mean(gains):+.2f}" if gains else ""
        print(f"| {label} | " + " | ".join(cells) + f" | {mean} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
