"""A leaderboard-sized synthetic check of ``evaluate``: its run time and how every row and the
stated uncertainty behave where the answer is known (not real results).

78 models x 34 tasks, 250-1,000 items per task (the size of an Open LLM Leaderboard set),
correctness drawn from a logistic model: logit = skill(model) + specialty(task, model) -
difficulty(item), specialty ~ N(0, ``--specialty``). The embeddings cluster by task and carry
no item-level signal, so zero-label routing cannot find the specialists (the stacked switch
should stay with BMA) and only in-task labels can; the label posterior's Gaussian model is
right here, so its intervals, P(best) and expected gain should be honest. With
``--family-share F`` the models come in ``--families`` families (assigned in turn) sharing
a share F of the specialty's variance, as fine-tunes of one base model do (0: independent,
the set as before). ``--sparse-models N`` drops N models' results on about 70% of the tasks
and ``--missing F`` a share F of the single results, as real leaderboards have holes.

    python bench/leaderboard_sim.py [--items 1000] [--specialty 0.5] [--seed 0]
        [--family-share 0.7] [--families 8] [--sparse-models 10] [--missing 0.05]

Prints the wall time of ``evaluate(alphas=[0, 0.05], label_counts=[5, 10, 20, 30],
repeats=10)``, each row's gain over BMA in points and share of the BMA -> Oracle gap, and the
``uncertainty`` entries (said vs happened).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from lm_router_plugin.evaluation.protocol import evaluate
from lm_router_plugin.router.pool import build_pool

N_TASKS, N_MODELS, DIM = 34, 78, 64


def make_set(items: int, specialty: float, seed: int, family_share: float = 0.0,
             families: int = 8) -> tuple[pd.DataFrame, np.ndarray]:
    """(correctness table, embeddings (n, DIM) in build_pool order). family_share: the
    share of the specialty's variance the models of one family (``families`` of them, models
    assigned in turn) have in common."""
    rng = np.random.default_rng(seed)
    skill = rng.normal(0, 1, N_MODELS)
    special = rng.normal(0, specialty, (N_TASKS, N_MODELS))
    if family_share > 0:  # drawn after the rest: the same set as before for share 0
        shared = rng.normal(0, specialty, (N_TASKS, families))[:, np.arange(N_MODELS) % families]
        special = np.sqrt(1 - family_share) * special + np.sqrt(family_share) * shared
    centres = rng.normal(size=(N_TASKS, DIM))
    tables, vectors = [], {}
    for t in range(N_TASKS):
        n = int(rng.integers(items // 4, items))
        difficulty = rng.normal(0, 1.5, n)
        logit = skill[None, :] + special[t][None, :] - difficulty[:, None]
        y = (rng.random((n, N_MODELS)) < 1 / (1 + np.exp(-logit))).astype(float)
        noise = rng.normal(0, 1.0, (n, DIM))
        vectors.update({(f"task{t:02d}", str(i)): centres[t] + noise[i] for i in range(n)})
        tables.append(pd.DataFrame({
            "task": f"task{t:02d}", "instance_id": np.repeat(np.arange(n).astype(str), N_MODELS),
            "model": np.tile([f"model{m:02d}" for m in range(N_MODELS)], n),
            "correct": y.ravel()}))
    table = pd.concat(tables, ignore_index=True)
    pool = build_pool(table)
    X = np.array([vectors[(pool.task_names[t], i)] for t, i in zip(pool.task_of,
                                                                   pool.instance_ids)])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return table, X.astype(np.float32)


def drop_results(table: pd.DataFrame, sparse_models: int, missing: float, seed: int
                 ) -> pd.DataFrame:
    """The table without the results of ``sparse_models`` models (every 8th) on about 70% of
    the tasks and without a share ``missing`` of the other single results (seeded). Every
    item keeps results of most models, so the embeddings (build_pool order) still fit."""
    rng = np.random.default_rng([seed, 17])
    if not 0 <= missing < 1 or not 0 <= sparse_models <= N_MODELS // 8 + 1:
        raise SystemExit("--missing must be in [0, 1) and --sparse-models in 0..10")
    sparse = [f"model{m:02d}" for m in range(0, N_MODELS, 8)][:sparse_models]
    tasks = sorted(table["task"].unique())
    skipped = dict(zip(tasks, rng.random(len(tasks)) < 0.7))
    drop = table["model"].isin(sparse) & table["task"].map(skipped)
    drop |= rng.random(len(table)) < missing
    return table[~drop].reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000, help="most items per task")
    parser.add_argument("--specialty", type=float, default=0.5,
                        help="sd of the task-specific skill (logit scale)")
    parser.add_argument("--family-share", type=float, default=0.0,
                        help="share of the specialty's variance common to a model family")
    parser.add_argument("--families", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sparse-models", type=int, default=0,
                        help="this many models (every 8th) ran only about 30%% of the tasks")
    parser.add_argument("--missing", type=float, default=0.0,
                        help="share of single (item, model) results dropped at random")
    args = parser.parse_args()
    if args.items < 8 or args.specialty < 0:
        parser.error("--items must be >= 8 (each task gets items/4 to items) and "
                     "--specialty >= 0")
    if not 0 <= args.family_share <= 1 or args.families < 1:
        parser.error("--family-share must be in [0, 1] (a share of variance) and "
                     "--families >= 1")
    table, X = make_set(args.items, args.specialty, args.seed, args.family_share, args.families)
    if args.sparse_models or args.missing:  # results missing as on real leaderboards
        table = drop_results(table, args.sparse_models, args.missing, args.seed)
    print(f"{N_MODELS} models x {N_TASKS} tasks, {len(X)} items, {len(table)} rows (synthetic)")
    t0 = time.perf_counter()
    result = evaluate(table, embeddings=X, alphas=[0, 0.05], label_counts=[5, 10, 20, 30],
                      repeats=10)
    print(f"evaluate --alpha 0,0.05 --labels 5,10,20,30 --repeats 10: "
          f"{time.perf_counter() - t0:.1f} s")
    bma = result.rows["bma"]["acc"]
    print("gain over BMA in points [share of the BMA -> Oracle gap]:")
    deciders = result.settings["deciders"]  # s1, s2, s3, stack and any plugin's
    names = deciders + ["oracle"] + [
        f"{r}@{n}labels" for n in (10, 20, 30) for r in ["few_shot"] + deciders]
    for name in names:
        row = result.rows.get(name)
        if row is None:
            continue
        print(f"  {name:<22} {100 * (row['acc'] - bma):+6.2f} [{row['gap_closed']:.0%}]")
    print("the stated uncertainty against what happened (gains in points):")
    for e in result.uncertainty:
        what = f"alpha {e['alpha']:g}" if e.get("alpha") is not None else f"{e['labels']} labels"
        print(f"  {what:<10} in 90% interval {e['coverage']:.2f}; P(best) of top "
              f"{e['p_best_top']:.2f} / was best {e['top_is_best']:.2f}; +10 labels, posterior "
              f"{100 * e['gain_predicted']:+.2f} / {100 * e['gain_realised']:+.2f}, stack "
              f"{100 * e['stack_gain_predicted']:+.2f} / {100 * e['stack_gain_realised']:+.2f}; "
              f"stack P {e['stack_p']:.2f} / won {e['stack_won']:.2f} ({e['stack_n']})")
    print(f"reproduce: python bench/leaderboard_sim.py --items {args.items} --specialty "
          f"{args.specialty} --family-share {args.family_share} --families {args.families} "
          f"--sparse-models {args.sparse_models} --missing {args.missing} "
          f"--seed {args.seed}")


if __name__ == "__main__":
    main()
