"""The stacked switch's label update: time and memory of a labelled switch fit, the update
that reads every candidate at once (label_update.py) against the per-candidate update it
replaced (stacking.py at commit 7239993, loaded from git history), same synthetic arrays,
same run.

Synthetic reference tasks (seeded): per-task accuracies around a model mean, correctness
drawn from them, S1 = the measured accuracies plus noise. Each size is timed ``--repeats``
times alternately (best of them), one process; peak memory traced (tracemalloc) for one fit.

    python bench/bench_label_update.py [--sizes 78x34,1000x100] [--items 100] [--labels 10]
        [--repeats 3]

Prints per size: the fit time and peak of each rule and their ratios (new / before).
Needs git and the repository's history for the baseline.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from lm_router_plugin.router import stacking
from lm_router_plugin.router.calibration import Calibration

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "7239993"


def stacking_before():
    """stacking.py as it was at BEFORE (its relative imports resolved in the package)."""
    source = subprocess.run(["git", "show", f"{BEFORE}:lm_router_plugin/router/stacking.py"],
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("lm_router_plugin.router._stacking_before",
                                           loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "lm_router_plugin.router"
    sys.modules[spec.name] = module  # dataclasses look their module up there
    exec(compile(source, f"stacking.py@{BEFORE}", "exec"), module.__dict__)
    return module


def reference(M: int, D: int, n: int, seed: int = 0):
    """(calibration, Y (D * n, M), rows_of) of D synthetic reference tasks."""
    rng = np.random.default_rng(seed)
    acc = np.clip(rng.normal(0.6, 0.1, M)[None] + rng.normal(0, 0.05, (D, M)), 0.05, 0.95)
    Y = (rng.random((D * n, M)) < np.repeat(acc, n, axis=0)).astype(float)
    rows_of = [np.arange(z * n, (z + 1) * n) for z in range(D)]
    measured = np.array([Y[r].mean(0) for r in rows_of])
    s1 = measured + rng.normal(0, 0.03, measured.shape)
    cal = Calibration(u=np.full(D, 0.5), p=np.full((D, M), 0.7), accuracy=measured,
                      included=np.ones(D, dtype=bool), mean_accuracy=measured.mean(0),
                      s1=s1, residual_cov=np.eye(M) * 0.2, s2=(s1 > 0.5).astype(float),
                      n=np.full(D, n))
    return cal, Y, rows_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="78x34,1000x100", help="MODELSxTASKS,...")
    parser.add_argument("--items", type=int, default=100, help="items per task")
    parser.add_argument("--labels", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        sizes = [tuple(int(x) for x in size.split("x")) for size in args.sizes.split(",")]
        if any(len(s) != 2 or min(s) < 2 for s in sizes):
            raise ValueError
    except ValueError:
        parser.error(f"--sizes {args.sizes!r}: give MODELSxTASKS pairs of integers >= 2, "
                     "e.g. 78x34,1000x100")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchinfo import print_header

    print_header()
    before = stacking_before()
    rules = {"before": before.fit_switch, "new": stacking.fit_switch}
    for M, D in sizes:
        cal, Y, rows_of = reference(M, D, args.items)
        allowed = np.ones(M, dtype=bool)

        def fit(rule):
            return rules[rule](cal, allowed, sigma=0.09, n_labels=args.labels, Y=Y,
                               rows_of=rows_of)

        times = {rule: [] for rule in rules}
        for _ in range(args.repeats):
            for rule in rules:
                t0 = time.perf_counter()
                fit(rule)
                times[rule].append(time.perf_counter() - t0)
        peaks = {}
        for rule in rules:
            tracemalloc.start()
            fit(rule)
            peaks[rule] = tracemalloc.get_traced_memory()[1] / 1e6
            tracemalloc.stop()
        t = {rule: min(v) for rule, v in times.items()}
        print(f"{M} models x {D} tasks x {args.items} items, {args.labels} labels: "
              f"fit {t['new']:.3f} s vs {t['before']:.3f} s before "
              f"(x{t['new'] / t['before']:.1f}); "
              f"peak {peaks['new']:.0f} MB vs {peaks['before']:.0f} MB "
              f"(x{peaks['new'] / peaks['before']:.1f})")
    print(f"reproduce: python bench/bench_label_update.py --sizes {args.sizes} --items "
          f"{args.items} --labels {args.labels} --repeats {args.repeats}")


if __name__ == "__main__":
    main()
