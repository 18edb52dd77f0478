"""Regenerate the quick-start example data: ``examples/runs/`` and ``examples/models.yaml``.

An example, not real results: four fake "replay" models (tests/lmeval_replay.py), each with
its own strengths per topic, answer the ``router_toy`` tasks of task_configs/ through lm-eval
itself (offline), which scores them and writes ordinary ``--log_samples`` output:

    examples/runs/toy__math-whiz-7b/results_<date>.json
    examples/runs/toy__math-whiz-7b/samples_toy_arith_<date>.jsonl
    ...

Run from anywhere (about 10 s):

    python examples/make_example.py

The task ``toy_percent`` (tag ``router_toy_new``) is left out on purpose: it plays the new
task of the quick start, ``lm-router recommend --task toy_percent --include-path task_configs``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RUNS = HERE / "runs"

MODELS_YAML = """\
# Model metadata of the quick-start example (fake models: an example, not real results).
# lm-router ingest lm-eval examples/runs --models examples/models.yaml
{entries}"""
COST_PER_1M = {"toy/math-whiz-7b": 0.2, "toy/geo-buff-7b": 0.2, "toy/generalist-70b": 0.9,
               "toy/tiny-1b": 0.05}


def main() -> None:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO / "tests"))
    import lmeval_replay

    if RUNS.exists():
        shutil.rmtree(RUNS)
    results = lmeval_replay.run_profiles(RUNS, tasks=("router_toy",),
                                         include_path=REPO / "task_configs")
    for path in RUNS.glob("*/results_*.json"):  # no machine-specific paths in the example
        path.write_text(path.read_text().replace(f"{REPO}{os.sep}", ""))
    entries = "".join(
        f"{model}: {{params: {lmeval_replay.PROFILES[model]['params'] // 10**9}B, "
        f"cost_per_1m: {COST_PER_1M[model]}}}\n" for model in results)
    (HERE / "models.yaml").write_text(MODELS_YAML.format(entries=entries))
    size = sum(p.stat().st_size for p in RUNS.rglob("*") if p.is_file())
    print(f"wrote {RUNS} ({size / 1e6:.1f} MB) and {HERE / 'models.yaml'}")
    for model, res in results.items():
        scores = ", ".join(f"{task} {next(v for k, v in r.items() if ',' in k):.2f}"
                           for task, r in sorted(res["results"].items()))
        print(f"  {model}: {scores}")


if __name__ == "__main__":
    main()
