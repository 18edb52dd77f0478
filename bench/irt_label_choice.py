"""Issue 19 item 3: labels chosen by what they tell about which candidate is best, against
random labels at the same count, for the irt decider, with the strict protocol.

For each held-out task d of a real set (data outside the repository), the IRT reference
model is fitted without d (router/irt.py, as in evaluate); N docs of d are labelled (each
with every candidate's outcome) either at random (the same seeded draws as `lm-router
evaluate --labels N`, repeat by repeat) or by irt.informative_docs (the docs where the four
leading candidates of the zero-label estimate are most likely to disagree); the irt
decider's rule (threshold fitted for N random labels on the reference tasks) chooses, and
the choice is scored on d's other docs. Reported: the mean gain over BMA (accuracy points)
of each, the spread over repeats of the random one, and a paired bootstrap interval over
tasks of informative - random (random averaged over its repeats).

    python bench/irt_label_choice.py ROUTERDC_STORE MMLU_STORE [--labels 10,20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("routerdc")
    parser.add_argument("mmlu")
    parser.add_argument("--labels", default="10,20")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sets", default="routerdc,cat14,src91")
    parser.add_argument("--draws", type=int, default=10_000)
    args = parser.parse_args()
    from irt_doc_params import load

    from lm_router_plugin.router.deciders import ReferenceData
    from lm_router_plugin.router.irt import (
        informative_docs,
        reference_model,
        reference_rule,
    )
    from lm_router_plugin.router.scores import argmax_with_ties, quiet_nanmean

    side = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmlu_pro" / \
        "instances.tsv.gz"
    sets = {"routerdc": (args.routerdc, "task", None), "cat14": (args.mmlu, "task", None),
            "src91": (args.mmlu, "src", str(side)),
            "src91_notop": (args.mmlu, "src", str(side))}
    counts = [int(x) for x in args.labels.split(",")]
    for name in args.sets.split(","):
        store, by, side_file = sets[name]
        X, Y, task_of = load(store, by, side_file, "minilm")
        candidates = np.ones(Y.shape[1], bool)
        if name.endswith("_notop"):  # without the best model on average (six_sets.sh's rule)
            from irt_six_sets import notop

            from lm_router_plugin import Store
            from lm_router_plugin.router.pool import build_pool

            models = build_pool(Store(store).read_table()).models
            candidates = np.isin(models, notop(store))
        D = int(task_of.max()) + 1
        rows_of = [np.flatnonzero(task_of == d) for d in range(D)]
        accs = np.array([quiet_nanmean(Y[r]) for r in rows_of])
        t0 = time.time()
        refs = []
        for d in range(D):
            data = ReferenceData(X, Y, task_of, rows=np.flatnonzero(task_of != d), seed=0)
            refs.append((data, reference_model(data)))
        print(f"{name}: {D} tasks, IRT fits {time.time() - t0:.0f}s", flush=True)
        for N in counts:
            gain = {"random": np.zeros((args.repeats, D)), "informative":
                    np.zeros((args.repeats, D))}
            for rep in range(args.repeats):
                rng = np.random.default_rng([0, rep, 10**9 + N])  # evaluate's draws
                for d in range(D):
                    rows = rows_of[d]
                    n_lab = min(N, len(rows) - 1)
                    random_lab = np.sort(rng.choice(rows, size=n_lab, replace=False))
                    data, ref = refs[d]
                    has = ~np.isnan(accs)
                    others = np.delete(np.arange(D), d)
                    mean_acc = np.nan_to_num(quiet_nanmean(accs[others]))
                    mu = ref.mu(X[rows])
                    allowed0 = has[d] & candidates
                    picked = rows[informative_docs(ref, mu, n_lab, allowed0, mean_acc,
                                                   seed=rep)]
                    for kind, lab in (("random", random_lab), ("informative", picked)):
                        rest = np.setdiff1d(rows, lab)
                        acc = quiet_nanmean(Y[rest])
                        allowed = ~np.isnan(acc) & candidates
                        bma = argmax_with_ties(np.where(allowed, mean_acc, -np.inf), mean_acc)
                        est = ref.estimate(X[rest], Q_lab=X[lab], y_lab=Y[lab])
                        best = argmax_with_ties(np.where(allowed, est.mean, -np.inf), mean_acc)
                        rule = reference_rule(data, allowed, n_lab)
                        choice = best if best != bma and est.p_beats(best, bma) > rule.eta \
                            else bma
                        gain[kind][rep, d] = acc[choice] - acc[bma]
            rnd, inf = gain["random"], gain["informative"]
            diff = inf.mean(0) - rnd.mean(0)
            boot = np.random.default_rng(0).integers(0, D, size=(args.draws, D))
            lo, hi = np.percentile(diff[boot].mean(1), [2.5, 97.5])
            print(f"  {N} labels: random {100 * rnd.mean():+.2f} (sd over repeats "
                  f"{100 * rnd.mean(1).std():.2f}), informative {100 * inf.mean():+.2f} "
                  f"(sd {100 * inf.mean(1).std():.2f}); informative - random "
                  f"{100 * diff.mean():+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
