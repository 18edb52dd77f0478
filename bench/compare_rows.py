"""Check that two ``lm-router evaluate --json`` outputs of the same table agree on the rows
both hold: every figure of every kept row, each held-out task's chosen model and accuracy,
and every label draw (labelled ids, each row's choice and accuracy). Used to show that a
refactoring kept behaviour (e.g. before/after the "one decision path" redesign).

    python bench/compare_rows.py BEFORE.json AFTER.json
    python bench/compare_rows.py BEFORE.json AFTER.json --rows s1,s2,s3,stack,bma,oracle

Bootstrap intervals (``*_ci``) are left out unless ``--with-intervals``: they depend on how
the bootstrap generator is shared between rows, not on any decision. Exit 0 when every
compared value is equal (floats to 1e-12), 1 otherwise (the differences are listed).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

DEFAULT_ROWS = "s1,s2,s3,s3_true_p,stack,moe,bma,oracle,few_shot"


def _equal(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-12
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _kept(name: str, rows: set[str]) -> bool:
    return name.split("@")[0] in rows


def compare(a: dict, b: dict, rows: set[str], intervals: bool) -> tuple[int, list[str]]:
    """(number of values compared, differences)."""
    n, diffs = 0, []
    names = sorted(k for k in a["rows"] if _kept(k, rows))
    for name in names:
        if name not in b["rows"]:
            diffs.append(f"row {name}: missing in the second file")
            continue
        for key, value in a["rows"][name].items():
            if key.endswith("_ci") and not intervals:
                continue
            n += 1
            if not _equal(value, b["rows"][name].get(key)):
                diffs.append(f"row {name}.{key}: {value} vs {b['rows'][name].get(key)}")
    tasks_b = {t["task"]: t for t in b["per_task"]}
    for ta in a["per_task"]:
        tb = tasks_b.get(ta["task"])
        if tb is None:
            diffs.append(f"task {ta['task']}: missing in the second file")
            continue
        for name in (r for r in rows if r in ta):
            for key in ("model", "acc", "acc_half"):
                n += 1
                if not _equal(ta[name][key], tb.get(name, {}).get(key)):
                    diffs.append(f"task {ta['task']} {name}.{key}: {ta[name][key]} vs "
                                 f"{tb.get(name, {}).get(key)}")
        for da, db in zip(ta.get("label_draws", []), tb.get("label_draws", [])):
            n += 1
            if da["labelled"] != db["labelled"]:
                diffs.append(f"task {ta['task']} repeat {da['repeat']}: other labelled ids")
            for name in (r for r in rows if r in da["choice"]):
                n += 2
                if da["choice"][name] != db["choice"].get(name) or \
                        not _equal(da["acc"][name], db["acc"].get(name)):
                    diffs.append(f"task {ta['task']} repeat {da['repeat']} {name}: "
                                 f"{da['choice'][name]} vs {db['choice'].get(name)}")
        if len(ta.get("label_draws", [])) != len(tb.get("label_draws", [])):
            diffs.append(f"task {ta['task']}: a different number of label draws")
    return n, diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rows", default=DEFAULT_ROWS,
                        help="row names (label rows X@N are included with X)")
    parser.add_argument("--with-intervals", action="store_true")
    args = parser.parse_args()
    with open(args.a, encoding="utf-8") as fa, open(args.b, encoding="utf-8") as fb:
        a, b = json.load(fa), json.load(fb)
    rows = {r.strip() for r in args.rows.split(",") if r.strip()}
    n, diffs = compare(a, b, rows, args.with_intervals)
    kept = sorted(k for k in a["rows"] if _kept(k, rows))
    print(f"{args.a} vs {args.b}: {len(kept)} rows ({', '.join(kept)}), {n} values compared, "
          f"{len(diffs)} differ")
    for line in diffs[:50]:
        print("  " + line)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
