"""Render `lm-router evaluate --json` outputs as the README's Markdown tables.

    python bench/render_results.py bench/out/mmlu_pro    # reads cat14.json, src91.json, ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MAIN_ROWS = ("s1", "s2", "s3", "s3_true_p", "moe", "bma", "oracle", "compare_to")


def fmt(value, spec=".3f"):
    return "" if value is None or value != value else format(value, spec)


def params(value):
    return "" if value is None or value != value else f"{value / 1e9:.1f}B"


def main_table(data: dict) -> str:
    lines = ["| row | Acc. | Ratio to Best | Pearson | Spearman | % BMA | # Params | Rank |",
             "|---|---|---|---|---|---|---|---|"]
    for name in MAIN_ROWS:
        row = data["rows"].get(name)
        if row is None:
            continue
        label = f"compare to {row['model']}" if name == "compare_to" else name
        lines.append(f"| {label} | {fmt(row['acc'])} | {fmt(row['ratio_to_best'])} | "
                     f"{fmt(row['pearson'])} | {fmt(row['spearman'])} | "
                     f"{fmt(row['pct_bma'], '.2f')} | {params(row['params'])} | "
                     f"{fmt(row['rank'], '.2f')} |")
    lines.append(f"\nCorrectness predictors on held-out tasks: accuracy "
                 f"{data['predictor_accuracy']:.3f}; kernel-smoothed p: MAE {data['p_mae']:.3f}.")
    return "\n".join(lines)


def sweep_table(data: dict) -> str:
    names = ["s1", "s3", "few_shot", "s3_label_p"]
    lines = ["| alpha | " + " | ".join(names) + " | predictor acc. |",
             "|---" * (len(names) + 2) + "|"]
    lines.append(f"| 0 | {fmt(data['rows']['s1']['acc'])} | {fmt(data['rows']['s3']['acc'])} | "
                 f" | | {data['predictor_accuracy']:.3f} |")
    for entry in data["alpha_sweep"]:
        cells = []
        for name in names:
            row = entry.get(name)
            cells.append("" if row is None else f"{row['acc']:.3f} ± {row['acc_std']:.3f}")
        lines.append(f"| {entry['alpha']:g} | " + " | ".join(cells) +
                     f" | {entry['predictor_accuracy']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    folder = Path(sys.argv[1])
    for name in ("cat14", "src91", "src91_small"):
        path = folder / f"{name}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        print(f"### {name}: {data['n_tasks']} tasks, {data['n_models']} models, "
              f"embedder {data['settings']['embedder']}\n")
        print(main_table(data) + "\n")
        print(sweep_table(data) + "\n")


if __name__ == "__main__":
    main()
