"""The six shared sets (as bench/six_sets.sh: RouterDC all / no top; MMLU-Pro 14 categories,
91 sources: all, <= 13B, no top) with `lm-router evaluate`'s own code (api.evaluate, strict
leave-one-task-out), in one process, so the IRT fits of the same table are shared across
candidate sets (they do not depend on the candidates). Writes OUT/SET.json exactly as
`lm-router evaluate --json` would. The data live outside the repository.

    python bench/irt_six_sets.py ROUTERDC_STORE MMLU_STORE OUT [--labels 10,20] [--repeats 5]
    python bench/compare_evaluations.py OUT/src91.json OUT/src91.json --rows stack,irt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def notop(store: str) -> list[str]:
    """Every model but the best on average (mean over tasks of the accuracy), as six_sets.sh."""
    from lm_router_plugin import Store

    t = Store(store).read_table()
    acc = t.groupby(["task", "model"])["correct"].mean().groupby("model").mean()
    return [m for m in acc.index if m != acc.idxmax()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("routerdc")
    parser.add_argument("mmlu")
    parser.add_argument("out")
    parser.add_argument("--labels", default="10,20")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--embedder", default="minilm")
    parser.add_argument("--sets", default="routerdc,routerdc_notop,cat14,src91,src91_small,"
                        "src91_notop")
    args = parser.parse_args()
    from lm_router_plugin import api
    from lm_router_plugin.router import irt

    irt.register()  # not registered by default (docs/irt.md): adds the irt rows
    here = Path(__file__).resolve().parent
    side = here.parent.parent / "shared" / "data" / "mmlu_pro" / "instances.tsv.gz"
    labels = [int(x) for x in args.labels.split(",") if x]
    src = {"tasks_by": "src", "tasks_file": str(side)}
    sets = {
        "routerdc": (args.routerdc, {}),
        "routerdc_notop": (args.routerdc, {"candidates": notop(args.routerdc)}),
        "cat14": (args.mmlu, {}),
        "src91": (args.mmlu, src),
        "src91_small": (args.mmlu, {**src, "max_params": "13B"}),
        "src91_notop": (args.mmlu, {**src, "candidates": notop(args.mmlu)}),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.sets.split(","):
        store, extra = sets[name]
        t0 = time.time()
        result = api.evaluate(store, alphas=[0.0], label_counts=labels, repeats=args.repeats,
                              settings={"embedder": {"name": args.embedder}}, **extra)
        (out / f"{name}.json").write_text(json.dumps(result.to_dict()))
        rows = result.rows
        line = "  ".join(f"{r} {100 * rows[r]['gain_over_bma']:+.2f}" for r in rows
                         if r.split("@")[0] in ("stack", "irt", "s3", "s1"))
        print(f"{name}: {time.time() - t0:.0f}s  {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
