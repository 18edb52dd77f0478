"""How honest the IRT estimates' intervals are on real data, strict leave-one-task-out: for
each held-out task d, the IRT reference model fitted without d estimates every candidate's
accuracy on d's docs (0 labels: all docs; N labels: the same seeded random draws as
`lm-router evaluate --labels N`, scored on the other docs). Reported per label count: the
share of (task, candidate) accuracies inside the 90% interval, the mean interval width, the
RMSE of the estimates and the Pearson correlation across candidates within a task (mean
over tasks).

    python bench/irt_coverage.py STORE [--tasks-by src --tasks-file F] [--labels 10,20]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--tasks-by", default="task")
    parser.add_argument("--tasks-file")
    parser.add_argument("--labels", default="10,20")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from irt_doc_params import load

    from lm_router_plugin.router.deciders import ReferenceData
    from lm_router_plugin.router.irt import reference_model
    from lm_router_plugin.router.scores import quiet_nanmean

    X, Y, task_of = load(args.store, args.tasks_by, args.tasks_file, "minilm")
    D = int(task_of.max()) + 1
    rows_of = [np.flatnonzero(task_of == d) for d in range(D)]
    refs = [reference_model(ReferenceData(X, Y, task_of, rows=np.flatnonzero(task_of != d)))
            for d in range(D)]
    for N in [0] + [int(x) for x in args.labels.split(",")]:
        inside, width, sq, corr = [], [], [], []
        for rep in range(args.repeats if N else 1):
            rng = np.random.default_rng([0, rep, 10**9 + N])  # evaluate's draws
            for d in range(D):
                rows = rows_of[d]
                lab = np.empty(0, np.int64)
                if N:
                    lab = np.sort(rng.choice(rows, size=min(N, len(rows) - 1), replace=False))
                rest = np.setdiff1d(rows, lab)
                acc = quiet_nanmean(Y[rest])
                ok = ~np.isnan(acc)
                est = refs[d].estimate(X[rest], Q_lab=X[lab] if N else None,
                                       y_lab=Y[lab] if N else None)
                low, high = est.interval(0.9).T
                inside.extend(((acc >= low) & (acc <= high))[ok])
                width.extend((high - low)[ok])
                sq.extend(((est.mean - acc) ** 2)[ok])
                if ok.sum() > 2 and np.ptp(acc[ok]) > 0:
                    corr.append(np.corrcoef(est.mean[ok], acc[ok])[0, 1])
        print(f"{N} labels: 90% coverage {np.mean(inside):.3f}, mean width "
              f"{np.mean(width):.3f}, RMSE {np.sqrt(np.mean(sq)):.3f}, Pearson within task "
              f"{np.nanmean(corr):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
