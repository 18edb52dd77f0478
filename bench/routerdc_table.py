"""Write RouterDC's per-question results (../shared/data/routerdc) as a binarised table that
``lm-router ingest table`` reads: ``task, instance_id, model, correct, input_text``.

Binarisation as the data's README says: multiple-choice tasks (mmlu, cmmlu, ceval,
arc_challenge, arc_easy) hold 0 or the probability on the chosen correct option, so
``correct > 0``; generative tasks (gsm8k, MATH_prealgebra, humaneval, mbpp, javascript) hold
the fraction of correct generations, so ``correct >= 0.5``. The output goes to /tmp by
default: the data must never be committed, nor anything derived from it.

    python bench/routerdc_table.py                      # -> /tmp/routerdc/table.tsv.gz
    lm-router ingest table /tmp/routerdc/table.tsv.gz --store /work/stores/routerdc-static
    lm-router evaluate --store /work/stores/routerdc-static --embedder static
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routerdc" / "table.tsv.gz"
MULTIPLE_CHOICE = {"mmlu", "cmmlu", "ceval", "arc_challenge", "arc_easy"}
GENERATIVE = {"gsm8k", "MATH_prealgebra", "humaneval", "mbpp", "javascript"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--out", default="/tmp/routerdc/table.tsv.gz")
    args = parser.parse_args()
    if not Path(args.data).exists():
        print(f"skipped: {args.data} is absent (RouterDC table, see ../shared/data)")
        return 0
    import pandas as pd

    table = pd.read_csv(args.data, sep="\t", keep_default_na=False)
    unknown = set(table["task"]) - MULTIPLE_CHOICE - GENERATIVE
    if unknown:
        print(f"error: {args.data}: tasks {sorted(unknown)} are neither multiple choice nor "
              "generative: extend MULTIPLE_CHOICE / GENERATIVE", file=sys.stderr)
        return 1
    raw = table["correct"].astype(float)
    mc = table["task"].isin(MULTIPLE_CHOICE)
    table["correct"] = ((mc & (raw > 0)) | (~mc & (raw >= 0.5))).astype(int)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table[["task", "instance_id", "model", "correct", "input_text"]].to_csv(
        out, sep="\t", index=False)
    acc = table.groupby(["task", "model"])["correct"].mean().groupby("task").max()
    print(f"{len(table)} rows, {table['instance_id'].nunique()} questions, "
          f"{table['model'].nunique()} models -> {out}")
    print("best model's accuracy per task: " + ", ".join(f"{t} {a:.2f}" for t, a in acc.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
