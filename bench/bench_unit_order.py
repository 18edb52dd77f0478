"""Which work unit the ingest pool starts first: plan order against largest first.

The lm-eval adapter reads one work unit per task, in a pool of processes. Task sizes differ
by orders of magnitude: on the Open LLM Leaderboard v2, MMLU-Pro has 12,032 docs, more than
the other 38 tasks together, and its name sorts after BBH's, GPQA's, IFEval's and MATH's.
Started in plan order, it would begin only after most of those, and be read alone at the
end. ``ingest.largest_first`` starts the units by the adapter's ``unit_cost`` (bytes),
largest first; the results are still taken in plan order.

This bench writes lm-eval 0.4 sample logs of ``--models`` models over tasks with the doc
counts of the leaderboard v2 (times ``--scale``; the line format of bench_ingest.py), then
times ``ingest.read_arrow(..., workers=N)`` with the pool started in plan order (the
baseline: what the code did before) and largest first, alternating, ``--passes`` times
each, and prints the best time of each, their ratio, and whether the two tables are equal.

    python bench/bench_unit_order.py                 # 8 models, ~0.8 GB in $TMPDIR
    python bench/bench_unit_order.py --scale 0.25    # a quick run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench_ingest import DATE, _line

from lm_router_plugin.store import ingest

# (task, kind, docs): the leaderboard v2's tasks with their sizes (BBH's 24 and MATH's 7
# subtasks at their mean size)
TASKS = ([(f"leaderboard_bbh_{i:02d}", "mc", 240) for i in range(24)]
         + [("leaderboard_gpqa_diamond", "mc", 198), ("leaderboard_gpqa_extended", "mc", 546),
            ("leaderboard_gpqa_main", "mc", 448), ("leaderboard_ifeval", "gen", 541)]
         + [(f"leaderboard_math_{i}_hard", "gen", 189) for i in range(7)]
         + [("leaderboard_mmlu_pro", "mc", 12032)]
         + [(f"leaderboard_musr_{i}", "mc", 252) for i in range(3)])


def generate(root: Path, n_models: int, scale: float) -> int:
    """Write the sample logs and each model's results file; the number of lines."""
    lines = 0
    for m in range(n_models):
        folder = root / f"bench__Model-{m}"
        folder.mkdir(parents=True)
        results = {"results": {}, "configs": {}, "higher_is_better": {},
                   "config": {"model": "hf", "model_args": f"pretrained=bench/Model-{m}"},
                   "model_name": f"bench/Model-{m}", "date": 1.0}
        for task, kind, docs in TASKS:
            metric = "acc" if kind == "mc" else "exact_match"
            results["results"][task] = {"alias": task}
            results["configs"][task] = {"task": task}
            results["higher_is_better"][task] = {metric: True}
            n = max(1, round(docs * scale))
            with open(folder / f"samples_{task}_{DATE}.jsonl", "wb", buffering=1 << 20) as fh:
                for doc_id in range(n):
                    fh.write(_line(task, kind, doc_id, m))
            lines += n
        (folder / f"results_{DATE}.json").write_text(json.dumps(results))
    return lines


def plan_order(adapter, units) -> list[int]:
    return list(range(len(units)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--scale", type=float, default=1.0, help="times the real doc counts")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    print(f"# python {' '.join(sys.argv)}")
    print(f"# {platform.platform()}, python {platform.python_version()}")
    shipped = ingest.largest_first
    with tempfile.TemporaryDirectory(prefix="bench_unit_order_") as tmp:
        root = Path(tmp) / "runs"
        start = time.perf_counter()
        lines = generate(root, args.models, args.scale)
        print(f"wrote {lines:,} lines ({len(TASKS)} tasks x {args.models} models) in "
              f"{time.perf_counter() - start:.1f} s")
        times: dict[str, list[float]] = {"plan order": [], "largest first": []}
        tables = {}
        for _ in range(args.passes):
            for name, order in (("plan order", plan_order), ("largest first", shipped)):
                ingest.largest_first = order
                start = time.perf_counter()
                table, _ = ingest.read_arrow("lm-eval", [root], workers=args.workers)
                times[name].append(time.perf_counter() - start)
                tables[name] = table
                del table
        ingest.largest_first = shipped
    for name, values in times.items():
        print(f"{name:14s}: best {min(values):.2f} s  (all: "
              f"{', '.join(f'{v:.2f}' for v in values)})")
    same = tables["plan order"].equals(tables["largest first"])
    print(f"ratio plan order / largest first: {min(times['plan order']) / min(times['largest first']):.2f}x "
          f"(tables equal: {same})")
    print(f"reproduce: python bench/bench_unit_order.py --models {args.models} --scale "
          f"{args.scale} --workers {args.workers} --passes {args.passes}")


if __name__ == "__main__":
    main()
