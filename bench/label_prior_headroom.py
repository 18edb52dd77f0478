"""How much a better prior covariance could add to the stacked switch's label update, on the
synthetic leaderboard of ``leaderboard_sim.py`` (not real results).

The label update reads every candidate at once through S, the covariance of the true gains
over BMA around the zero-label prediction (router/label_update.py). The switch estimates S
from 33 reference tasks. Here, on the simulated set, the same Gaussian update (zero-label
prediction = the mean gain over the reference tasks, V the per-item covariance of the label
differences, scored on the unlabelled items, 10 seeded label draws per held-out task) is run
with S from:

  pop     the population covariance of the tasks' accuracies: 600 fresh tasks of the same
          models (same skills, new specialties; an oracle no fit has)
  sample  the reference tasks' sample covariance
  pool05  half sample, half its mean variance x I (the switch's lam = 0.5 mix, with c = 1 and
          no threshold: a proxy of the shipped rule, not the rule)
  f8      8 leading eigen-directions + the rest's diagonal (the true structure: 8 families)
  lw, oas scikit-learn's Ledoit-Wolf and OAS shrinkage

and prints each one's gain over BMA in points. ``pop`` minus the others bounds what any
estimate of S can add here.

    python bench/label_prior_headroom.py [--family-share 0.7] [--seed 0] [--labels 10,20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchinfo import print_header  # noqa: E402
from leaderboard_sim import N_MODELS, make_set  # noqa: E402

FRESH_TASKS, DRAWS = 600, 10


def population_accuracies(seed: int, family_share: float, families: int = 8,
                          specialty: float = 0.5) -> np.ndarray:
    """(FRESH_TASKS, M) expected accuracies of new tasks for the models of ``make_set(seed)``
    (the same first draw of skills), item difficulties as there."""
    skill = np.random.default_rng(seed).normal(0, 1, N_MODELS)
    rng = np.random.default_rng([seed, 99])
    special = rng.normal(0, specialty, (FRESH_TASKS, N_MODELS))
    shared = rng.normal(0, specialty, (FRESH_TASKS, families))[:, np.arange(N_MODELS) % families]
    special = np.sqrt(1 - family_share) * special + np.sqrt(family_share) * shared
    difficulty = rng.normal(0, 1.5, 3000)
    return np.array([(1 / (1 + np.exp(-(skill + s[None] - difficulty[:, None])))).mean(0)
                     for s in special])


def estimates(E: np.ndarray, pop: np.ndarray) -> dict[str, np.ndarray]:
    """{name: S (M, M)} from the reference tasks' centred gains E (T, M)."""
    from sklearn.covariance import OAS, LedoitWolf

    sample = E.T @ E / (len(E) - 1)
    w, U = np.linalg.eigh(sample)
    top = (U[:, -8:] * w[-8:]) @ U[:, -8:].T
    return {"pop": pop, "sample": sample,
            "pool05": 0.5 * sample + 0.5 * np.mean(np.diag(sample)) * np.eye(len(sample)),
            "f8": top + np.diag(np.clip(np.diag(sample - top), 1e-8, None)),
            "lw": LedoitWolf().fit(E).covariance_, "oas": OAS().fit(E).covariance_}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family-share", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels", default="10,20")
    args = parser.parse_args()
    print_header()
    table, _ = make_set(1000, 0.5, args.seed, args.family_share)
    tasks, models = sorted(table.task.unique()), sorted(table.model.unique())
    Y = {t: g.pivot(index="instance_id", columns="model", values="correct")[models].to_numpy()
         for t, g in table.groupby("task")}
    A = np.array([Y[t].mean(0) for t in tasks])
    A_pop = population_accuracies(args.seed, args.family_share)
    rng = np.random.default_rng([args.seed, 7])
    for n in (int(x) for x in args.labels.split(",")):
        gains: dict[str, list[float]] = {}
        for ti, t in enumerate(tasks):
            ref = [r for r in range(len(tasks)) if r != ti]
            b = int(np.argmax(A[ref].mean(0)))
            D = A[ref] - A[ref][:, [b]]
            d0 = D.mean(0)
            Dp = A_pop - A_pop[:, [b]]
            pop = np.cov(Dp.T)
            diffs = np.concatenate([Y[tasks[r]] - Y[tasks[r]][:, [b]] for r in ref])
            V = np.cov(diffs.T)
            S_all = estimates(D - d0, pop)
            keep = np.arange(len(models)) != b
            y = Y[t]
            for _ in range(DRAWS):
                lab = rng.choice(len(y), n, replace=False)
                rest = np.setdiff1d(np.arange(len(y)), lab)
                L = y[lab].mean(0) - y[lab][:, b].mean()
                acc = y[rest].mean(0)
                noise = V * (1 / n + 1 / len(rest))
                for name, S in S_all.items():
                    Sk, Nk = S[np.ix_(keep, keep)], noise[np.ix_(keep, keep)]
                    post = np.zeros(len(models))
                    post[keep] = d0[keep] + Sk @ np.linalg.solve(Sk + Nk, L[keep] - d0[keep])
                    gains.setdefault(name, []).append(acc[np.argmax(post)] - acc[b])
        print(f"{n} labels, gain over BMA in points: " + ", ".join(
            f"{name} {100 * np.mean(v):+.2f}" for name, v in gains.items()))


if __name__ == "__main__":
    main()
