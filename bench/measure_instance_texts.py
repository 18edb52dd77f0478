"""How distinct are the embedded texts of real HELM runs? (the figure of the README section
"What the router embeds").

    python bench/measure_instance_texts.py [../shared/fixtures/helm_real]

For each run folder: the mean pairwise cosine (all-MiniLM-L6-v2, packaged copy) of
(a) the request prompts (what lm-router stored before table format 2), (b) the bare instance
inputs, (c) what the HELM adapter stores now (the input, with the answer options for
multiple_choice_joint runs); and, over all runs together, the share of instances whose
nearest neighbour is from the same run. Only the instances the adapter reads (main split).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lm_router_plugin.adapters.helm import HELMAdapter
from lm_router_plugin.embedding.embedders import SentenceTransformerEmbedder

#: ../shared/fixtures/helm_real, relative to the repository
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "helm_real"


def _texts(run: Path) -> dict[str, list[str]]:
    """Per instance the adapter reads (main split): the prompt, the bare input, and the
    text the adapter stores (the input, with the options for multiple_choice_joint)."""
    stored = {r.instance_id: r.input_text for r in HELMAdapter().read([run])}
    states = json.loads((run / "scenario_state.json").read_text())["request_states"]
    out: dict[str, list[str]] = {"prompt": [], "input": [], "stored": []}
    seen = set()
    for rs in states:
        inst = rs["instance"]
        if inst["id"] in seen or inst["id"] not in stored or inst.get("perturbation"):
            continue
        seen.add(inst["id"])
        out["prompt"].append(rs["request"]["prompt"])
        out["input"].append(inst["input"]["text"])
        out["stored"].append(stored[inst["id"]])
    return out


def main(root: Path) -> None:
    runs = sorted(p for p in root.iterdir() if (p / "scenario_state.json").exists())
    embedder = SentenceTransformerEmbedder()
    tokenizer = embedder.model.tokenizer
    limit = embedder.model.max_seq_length
    by_kind: dict[str, list[np.ndarray]] = {}
    labels: list[int] = []
    for r, run in enumerate(runs):
        texts = _texts(run)
        labels += [r] * len(texts["input"])
        print(run.name[:70])
        for kind, items in texts.items():
            X = embedder.encode(items)
            X = X / np.linalg.norm(X, axis=1, keepdims=True)
            by_kind.setdefault(kind, []).append(X)
            C = X @ X.T
            iu = np.triu_indices(len(X), 1)
            n_tok = [len(tokenizer(t)["input_ids"]) for t in items]
            print(f"  {kind:8s} n={len(X):3d} mean pairwise cosine {C[iu].mean():.4f} "
                  f"(min {C[iu].min():.4f}); tokens median {int(np.median(n_tok))}, "
                  f"over {limit}: {sum(n > limit for n in n_tok)}")
    y = np.array(labels)
    for kind, parts in by_kind.items():
        X = np.vstack(parts)
        C = X @ X.T
        np.fill_diagonal(C, -np.inf)
        nn = C.argmax(axis=1)
        print(f"all runs, {kind:8s}: nearest neighbour from the same run "
              f"{(y[nn] == y).mean():.3f} ({len(y)} instances)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=DEFAULT_ROOT,
                        help="a folder of HELM run folders (default: "
                             "../shared/fixtures/helm_real next to the repository)")
    args = parser.parse_args()
    if not args.root.is_dir():
        sys.exit(f"measure_instance_texts.py: no such folder: {args.root}")
    main(args.root)
