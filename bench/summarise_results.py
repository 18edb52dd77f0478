"""One table over several ``lm-router evaluate --json`` outputs: per set, each row's mean gain
over BMA in accuracy points (and the share of the BMA -> Oracle gap it closes), at zero labels
and at N in-task labels, plus the mean over the sets; first the Oracle's and the split-half
Oracle's gains (the ceilings), the median per-task Oracle - BMA difference and the task sizes.

    python bench/summarise_results.py NAME=FILE.json [NAME=FILE.json ...] [--labels 10,30]

With ``--intervals``, a table of each row's gain over BMA with its 95% bootstrap interval over
tasks (label rows: of each task's gain averaged over the repeats). The split-half gap shares
stay in the JSON (``gap_closed_half``): where the split-half Oracle gains ~0 they are noise.

With ``--uncertainty``, a table: per set and label count (0 and --labels), how the
stated uncertainty fared (evaluate's ``uncertainty`` entries): 90% interval coverage, P(best)
of the top candidate against how often it was best, the expected gain of 10 more labels
(posterior and stacked switch) against what they gave, and the stacked switch's P.

Rows: every decider the JSONs list (``settings["deciders"]``), without labels and at each
--labels count, and few_shot; a row a JSON lacks (e.g. an older one) is a blank cell.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

#: the deciders of a JSON written before ``settings["deciders"]`` existed
OLD_DECIDERS = ("s1", "s2", "s3", "stack")
UNCERTAINTY_KEYS = ("coverage", "p_best_top", "top_is_best", "gain_predicted", "gain_realised",
                    "stack_gain_predicted", "stack_gain_realised", "stack_p", "stack_won",
                    "stack_n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", help="NAME=evaluate.json")
    parser.add_argument("--labels", default="10,30")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also print the stated-uncertainty table")
    parser.add_argument("--intervals", action="store_true",
                        help="also print gains with 95%% intervals and split-half gap shares")
    args = parser.parse_args()
    counts = [int(c) for c in args.labels.split(",") if c]
    data = {}
    for item in args.sets:
        if "=" not in item:
            parser.error(f"{item!r}: give NAME=FILE.json (an `lm-router evaluate --json` output)")
        name, path = item.split("=", 1)
        try:
            with open(path) as f:
                result = json.load(f)
            data[name] = {"rows": result["rows"], "per_task": result["per_task"],
                          "uncertainty": result.get("uncertainty", []),
                          "deciders": (result.get("settings", {}).get("deciders")
                                       or list(OLD_DECIDERS))}
        except (OSError, ValueError, KeyError) as exc:
            parser.error(f"{path}: not a readable `lm-router evaluate --json` output ({exc})")
        missing = [k for k in UNCERTAINTY_KEYS
                   if any(k not in e for e in data[name]["uncertainty"])]
        if args.uncertainty and (missing or not data[name]["uncertainty"]):
            parser.error(f"{path}: no complete `uncertainty` entries (missing "
                         f"{', '.join(missing) or 'all'}); rerun `lm-router evaluate` with "
                         "this version for --uncertainty")
    # the rows: every decider any of the sets lists (one without labels, one per label
    # count), in their order; a row a set lacks is a blank cell
    deciders = list(dict.fromkeys(d for n in data for d in data[n]["deciders"]))
    zero, with_labels = deciders, ["few_shot"] + deciders
    per_task = {n: data[n]["per_task"] for n in data}
    uncertainty = {n: data[n]["uncertainty"] for n in data}
    data = {n: data[n]["rows"] for n in data}
    names = list(data)
    rows = [(r, r) for r in zero] + [(f"{r}@{n}", f"{r}@{n}labels") for n in counts
                                     for r in with_labels]
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
    if args.intervals:
        print_intervals(data, [(r, r) for r in zero] + [
            (f"{r}@{n}", f"{r}@{n}labels") for n in counts for r in with_labels])
    if args.uncertainty:
        print_uncertainty(uncertainty, [0] + counts)
    return 0


def print_intervals(data: dict[str, dict], rows: list[tuple[str, str]]) -> None:
    """Gain over BMA in points with its 95% interval over tasks, per set."""
    names = list(data)
    print("\n| row | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for label, key in rows:
        cells = []
        for n in names:
            row = data[n].get(key)
            if row is None:
                cells.append("")
                continue
            ci = row.get("gain_over_bma_ci")
            cells.append(f"{100 * row['gain_over_bma']:+.2f}"
                         + (f" [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"
                            if ci and None not in ci else ""))
        print(f"| {label} | " + " | ".join(cells) + " |")


def print_uncertainty(entries: dict[str, list[dict]], counts: list[int]) -> None:
    """The stated uncertainty against what happened, per set and label count, and the mean
    over the sets (gains in points)."""
    print("\n| set | labels | in 90% interval | P(best) of top / was best | +10 labels, "
          "posterior: said / got | +10 labels, stacked switch: said / got | stack P / won (n) |")
    print("|---" * 7 + "|")
    keys = UNCERTAINTY_KEYS

    def line(name: str, count: int, e: dict) -> None:
        stack = (f"{e['stack_p']:.2f} / {e['stack_won']:.2f} ({e['stack_n']})"
                 if e.get("stack_n") else "-")
        print(f"| {name} | {count} | {e['coverage']:.2f} | {e['p_best_top']:.2f} / "
              f"{e['top_is_best']:.2f} | {100 * e['gain_predicted']:+.2f} / "
              f"{100 * e['gain_realised']:+.2f} | {100 * e['stack_gain_predicted']:+.2f} / "
              f"{100 * e['stack_gain_realised']:+.2f} | {stack} |")

    means: dict[int, list[dict]] = {c: [] for c in counts}
    for name, sets in entries.items():
        by_count = {e.get("labels"): e for e in sets if e.get("labels") is not None}
        for count in counts:
            if count in by_count:
                line(name, count, by_count[count])
                means[count].append(by_count[count])
    for count, found in means.items():
        if found:
            mean = {}
            for k in keys:  # nan where no set has a value (e.g. no switched pair)
                values = [e[k] for e in found if e[k] is not None and e[k] == e[k]]
                mean[k] = float(np.mean(values)) if values else float("nan")
            mean["stack_n"] = int(sum(e["stack_n"] for e in found))
            # the stack's P and wins: pooled over the sets' switched pairs
            n = [e["stack_n"] for e in found]
            if sum(n):
                for k in ("stack_p", "stack_won"):
                    mean[k] = float(np.nansum([(np.nan if e[k] is None else e[k]) * m
                                               for e, m in zip(found, n) if m]) / sum(n))
            line("mean of the sets", count, mean)


if __name__ == "__main__":
    raise SystemExit(main())
