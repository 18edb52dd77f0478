"""A leaderboard-shaped synthetic correctness table with input texts, for running issue 19's
check command end to end through the CLI (ingest table, embed, evaluate) at the size of its
unseen set: 78 models x 34 tasks, 8,075 items (not real results).

Each task has its own vocabulary and five topics; an item's text is drawn from both, and its
difficulty rises with its topic, so the embeddings carry item-level signal (unlike
leaderboard_sim.py, whose vectors are drawn directly). Correctness is logistic in model skill
+ task specialty - item difficulty; the models come in 8 families sharing 70% of the
specialty's variance; 10 models lack 70% of the tasks and 5% of all results are missing.

    python bench/leaderboard_table.py OUT.tsv.gz [--seed 0]
    lm-router ingest table OUT.tsv.gz --store S
    lm-router -q evaluate --store S --labels 10,20 --repeats 5 --json > S.json
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

N_TASKS, N_MODELS, N_ITEMS, FAMILIES, FAMILY_SHARE = 34, 78, 8075, 8, 0.7
MIN_ITEMS, SPARSE_MODELS, MISSING = 60, 10, 0.05


def make_table(seed: int) -> pd.DataFrame:
    """(rows, 5) task, instance_id, model, correct (0/1), input_text."""
    rng = np.random.default_rng(seed)
    sizes = rng.multinomial(N_ITEMS - N_TASKS * MIN_ITEMS, np.ones(N_TASKS) / N_TASKS) + MIN_ITEMS
    words = [f"w{i}" for i in range(3000)]
    skill = rng.normal(0, 1, N_MODELS)
    family = np.arange(N_MODELS) % FAMILIES
    shared = rng.normal(0, 0.6, (N_TASKS, FAMILIES))
    special = (np.sqrt(1 - FAMILY_SHARE) * rng.normal(0, 0.6, (N_TASKS, N_MODELS))
               + np.sqrt(FAMILY_SHARE) * shared[:, family])
    sparse = rng.choice(N_MODELS, SPARSE_MODELS, replace=False)
    rows = []
    for t in range(N_TASKS):
        vocab = rng.choice(len(words), 60, replace=False)
        topics = rng.choice(len(words), (5, 20))
        for j in range(sizes[t]):
            topic = rng.integers(5)
            text = f"Task {t} question: " + " ".join(
                words[w] for w in np.r_[rng.choice(vocab, 8), rng.choice(topics[topic], 6)])
            difficulty = rng.normal(0, 1.5) + 0.4 * topic
            p = 1 / (1 + np.exp(-(skill + special[t] - difficulty)))
            y = (rng.random(N_MODELS) < p).astype(int)
            for m in range(N_MODELS):
                if m in sparse and (t * 7 + m) % 10 < 7:  # a sparse model: 70% of tasks gone
                    continue
                if rng.random() < MISSING:
                    continue
                rows.append((f"lb_task_{t:02d}", str(j), f"org{family[m]}/model-{m:02d}",
                             y[m], text))
    return pd.DataFrame(rows, columns=["task", "instance_id", "model", "correct",
                                       "input_text"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the table to write (.tsv.gz)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    table = make_table(args.seed)
    table.to_csv(args.out, sep="\t", index=False)
    print(f"{len(table):,} rows, {table.task.nunique()} tasks, {table.model.nunique()} models, "
          f"{table.groupby('task').instance_id.nunique().sum():,} items -> {args.out}")


if __name__ == "__main__":
    main()
