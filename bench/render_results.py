"""Render `lm-router evaluate --json` outputs as the README's Markdown tables.

    python bench/render_results.py bench/out/mmlu_pro    # reads cat14.json, src91.json, ...
    python bench/render_results.py FILE.json [FILE.json ...]

A folder is read for the files it holds of cat14.json, src91.json, src91_small.json,
src91_notop.json and routerdc*.json; a named file or folder that does not exist, or nothing
rendered at all, exits with status 2 and a message.

Rows: one per decider the JSON lists (``settings["deciders"]``: s1, s2, s3, stack and any
plugin's), s3_true_p, moe, bma, oracle, compare_to; with labels, few_shot and every decider.
A row absent from the JSON (e.g. an older one) is left blank or out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: the files read from a folder argument (those present), before its routerdc*.json
FOLDER_FILES = ("cat14", "src91", "src91_small", "src91_notop")

#: the deciders of a JSON written before ``settings["deciders"]`` existed
OLD_DECIDERS = ("s1", "s2", "s3", "stack")


def deciders(data: dict) -> list[str]:
    """The JSON's deciders (one row each, with and without labels; plugins included)."""
    return list(data.get("settings", {}).get("deciders") or OLD_DECIDERS)


def main_rows(data: dict) -> list[str]:
    names = []
    for name in deciders(data):
        names += [name, "s3_true_p"] if name == "s3" else [name]
    return names + ["moe", "bma", "oracle", "compare_to"]


def sweep_rows(data: dict) -> list[str]:
    return ["few_shot"] + deciders(data)


def fmt(value, spec=".3f"):
    return "" if value is None or value != value else format(value, spec)


def params(value):
    return "" if value is None or value != value else f"{value / 1e9:.1f}B"


def ci(row, key="acc_ci", spec=".3f"):
    value = row.get(key)  # (evaluate --json writes an undefined interval as nulls)
    if not value or any(v is None or v != v for v in value):
        return ""
    return f"[{format(value[0], spec)}, {format(value[1], spec)}]"


def main_table(data: dict) -> str:
    lines = ["| row | Acc. [95% CI] | half-split Acc. | gap closed | gap closed, split-half | "
             "W/T/L vs BMA | Ratio to Best | Pearson | Spearman | % BMA | # Params | Rank |",
             "|---" * 12 + "|"]
    for name in main_rows(data):
        row = data["rows"].get(name)
        if row is None:
            continue
        label = f"compare to {row['model']}" if name == "compare_to" else name
        wtl = "" if row.get("wins") is None else f"{row['wins']}/{row['ties']}/{row['losses']}"
        lines.append(
            f"| {label} | {fmt(row['acc'])} {ci(row)} | {fmt(row.get('acc_half'))} | "
            f"{fmt(row.get('gap_closed'), '.2f')} {ci(row, 'gap_closed_ci', '.2f')} | "
            f"{fmt(row.get('gap_closed_half'), '.2f')} {ci(row, 'gap_closed_half_ci', '.2f')} | "
            f"{wtl} | {fmt(row['ratio_to_best'])} | {fmt(row['pearson'])} | "
            f"{fmt(row['spearman'])} | {fmt(row['pct_bma'], '.2f')} | {params(row['params'])} | "
            f"{fmt(row['rank'], '.2f')} |")
    lines.append(f"\nCorrectness predictors on held-out tasks: accuracy "
                 f"{data['predictor_accuracy']:.3f}; kernel-smoothed p: MAE {data['p_mae']:.3f}.")
    return "\n".join(lines)


def sweep_table(data: dict) -> str:
    names = sweep_rows(data)
    lines = ["| in-task labels | " + " | ".join(names) + " | predictor acc. |",
             "|---" * (len(names) + 2) + "|"]
    rows = data["rows"]
    # zero labels: no few-shot; every decider's zero-label row (blank where absent)
    lines.append("| 0 | " + " | ".join(
        "" if name == "few_shot" else fmt(rows.get(name, {}).get("acc")) for name in names)
        + f" | {data['predictor_accuracy']:.3f} |")
    for entry in data["alpha_sweep"]:
        what = (f"alpha {entry['alpha']:g} ({entry['mean_labels']:.1f})"
                if entry.get("alpha") is not None else f"{entry['labels']}")
        cells = []
        for name in names:
            row = entry.get(name)
            cells.append("" if row is None else
                         f"{row['acc']:.3f} ± {row['acc_std']:.3f} "
                         f"({row['wins']:.1f}/{row['ties']:.1f}/{row['losses']:.1f})")
        lines.append(f"| {what} | " + " | ".join(cells) +
                     f" | {entry['predictor_accuracy']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="an `lm-router evaluate --json` file, or a folder of them")
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.paths if not path.exists()]
    if missing:
        parser.exit(2, f"render_results.py: no such file or folder: {', '.join(missing)}\n")
    paths = []
    for path in args.paths:
        if path.is_dir():
            paths += [path / f"{n}.json" for n in FOLDER_FILES if (path / f"{n}.json").exists()]
            paths += sorted(path.glob("routerdc*.json"))
        else:
            paths.append(path)
    if not paths:
        parser.exit(2, "render_results.py: nothing to render: no "
                       f"{', '.join(n + '.json' for n in FOLDER_FILES)} or routerdc*.json in "
                       f"{', '.join(map(str, args.paths))}\n")
    for path in paths:
        data = json.loads(path.read_text())
        print(f"### {path.stem}: {data['n_tasks']} tasks, {data['n_models']} models, "
              f"embedder {data['settings']['embedder']}\n")
        print(main_table(data) + "\n")
        if data["alpha_sweep"]:
            print(f"Mean accuracy ± std over {data['settings']['repeats']} repeats (W/T/L vs "
                  "BMA per repeat, averaged):\n")
            print(sweep_table(data) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
