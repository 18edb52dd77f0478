"""Seeded synthetic lm-eval sample logs in the published layout, for scale benchmarks.

Writes ``OUT/<org>__<name>/samples_<task>_<date>.jsonl`` (no ``results_*.json``: the layout of
a leaderboard's published details, adapters/published.py) for M models x T tasks x D docs,
one line per (model, task, doc) with the keys lm-eval 0.4.7-0.4.13 ``--log_samples`` writes
(FORMATS.md §1.3): doc_id, doc, target, arguments (gen_args_i/arg_j), resps, filtered_resps,
filter, metrics, doc_hash, prompt_hash, target_hash and the metric values. Every model sees
the same docs and prompts (same hashes); only its responses and scores differ.

Correctness comes from a latent model, so routing on it means something:

    P(model m answers doc i of task t) = sigmoid(ability_m + skill_{m,domain(t)}
                                                 + 0.6 * skill_{m,t} - difficulty_{t,i})

Tasks belong to ``DOMAINS`` (arithmetic, geography, chemistry, law, code); their doc texts
use the domain's vocabulary (so tasks of one domain lie close in embedding space) and each
doc's difficulty is the sum of its words' difficulties plus noise (so similar docs are
similarly hard). Domain skills are drawn per model, so no model wins everywhere. Even task
indices are multiple choice (4 choices, metrics acc and acc_norm), odd ones generation
(metric exact_match, filter "strict-match"). Output is deterministic given the arguments.

    python bench/gen_synthetic_logs.py /work/scratch/synth --models 1000 --tasks 20 --docs 500
    python bench/gen_synthetic_logs.py /tmp/s --models 4 --tasks 3 --docs 10   # a test set

``truth.json`` beside the model folders holds the per-(task, model) accuracies computed
while writing (what an ingest of the folder must reproduce).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import orjson

DATE = "2026-11-28T12-00-00.000000"
DOMAINS = {
    "arithmetic": ("sum product quotient remainder integer fraction decimal percent ratio "
                   "prime divisor multiple square root power digit total average").split(),
    "geography": ("capital river mountain country border ocean island desert continent city "
                  "population climate latitude valley lake coast").split(),
    "chemistry": ("atom molecule bond electron proton acid base salt oxide reaction catalyst "
                  "isotope solution ion metal gas").split(),
    "law": ("contract tort statute plaintiff defendant court appeal liability negligence "
            "evidence witness verdict clause damages jurisdiction precedent").split(),
    "code": ("function variable loop array pointer compiler recursion string integer class "
             "method exception thread stack queue hash").split(),
}
FILLER = "which what how the of a an is are does in for with from given when".split()


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_names(n: int) -> list[str]:
    """``org-XX/synth-NNNN-SIZEb``: 50 organisations, sizes 1-70B."""
    sizes = (1, 3, 7, 8, 13, 34, 70)
    return [f"org-{i % 50:02d}/synth-{i:04d}-{sizes[i % len(sizes)]}b" for i in range(n)]


def task_names(n: int) -> list[tuple[str, str, str]]:
    """(task, domain, kind) per task; kind "mc" or "gen"."""
    domains = list(DOMAINS)
    return [(f"synth_{domains[t % len(domains)]}_{t:02d}", domains[t % len(domains)],
             "mc" if t % 2 == 0 else "gen") for t in range(n)]


def build_docs(seed: int, n_tasks: int, n_docs: int) -> list[dict]:
    """Per task: its docs (text, choices, label/answer, difficulty) - the same for all models."""
    rng = np.random.default_rng([seed, 1])
    word_difficulty = {d: rng.normal(0.0, 0.6, len(w)) for d, w in DOMAINS.items()}
    tasks = []
    for t, (task, domain, kind) in enumerate(task_names(n_tasks)):
        words = DOMAINS[domain]
        task_offset = rng.normal(0.0, 0.5)
        docs = []
        for i in range(n_docs):
            picks = rng.choice(len(words), size=4, replace=False)
            fill = rng.choice(FILLER, size=3)
            number = int(rng.integers(2, 999))
            question = (f"{fill[0].capitalize()} {words[picks[0]]} {fill[1]} {words[picks[1]]} "
                        f"{number} {fill[2]} {words[picks[2]]} and {words[picks[3]]}?")
            difficulty = float(word_difficulty[domain][picks].sum() + task_offset
                               + rng.normal(0.0, 0.7))
            if kind == "mc":
                choices = [f"{words[int(k)]} {int(rng.integers(1, 99))}"
                           for k in rng.choice(len(words), size=4, replace=False)]
                docs.append({"doc": {"id": f"{task}-{i}", "question": question,
                                     "choices": choices, "label": int(rng.integers(0, 4))},
                             "difficulty": difficulty})
            else:
                docs.append({"doc": {"question": question, "answer": str(number * 3 + i)},
                             "difficulty": difficulty})
        tasks.append({"task": task, "domain": domain, "kind": kind, "docs": docs})
    return tasks


def latent_probs(seed: int, n_models: int, tasks: list[dict]) -> np.ndarray:
    """(M, T, D) P(correct) from the latent model of the module docstring."""
    rng = np.random.default_rng([seed, 2])
    domains = list(DOMAINS)
    ability = rng.normal(0.3, 0.8, n_models)
    domain_skill = rng.normal(0.0, 0.9, (n_models, len(domains)))
    task_skill = rng.normal(0.0, 1.0, (n_models, len(tasks)))
    dom = np.array([domains.index(t["domain"]) for t in tasks])
    difficulty = np.array([[d["difficulty"] for d in t["docs"]] for t in tasks])  # (T, D)
    logit = (ability[:, None, None] + domain_skill[:, dom][:, :, None]
             + 0.6 * task_skill[:, :, None] - difficulty[None])
    return sigmoid(logit)


def _prepare(tasks: list[dict]) -> None:
    """Add each doc's constant line parts (prompt, arguments, hashes) in place."""
    for t in tasks:
        for i, d in enumerate(t["docs"]):
            doc = d["doc"]
            prompt = f"Question: {doc['question']}\nAnswer:"
            if t["kind"] == "mc":
                args = {f"gen_args_{k}": {"arg_0": prompt, "arg_1": f" {c}"}
                        for k, c in enumerate(doc["choices"])}
                target = str(doc["label"])
            else:
                args = {"gen_args_0": {"arg_0": prompt, "arg_1": {
                    "until": ["\n\n", "Question:"], "do_sample": False, "temperature": 0.0,
                    "max_gen_toks": 256}}}
                target = doc["answer"]
            d["doc_id"] = i
            d["arguments"] = args
            d["target"] = target
            d["doc_hash"] = _sha(json.dumps(doc, indent=2, ensure_ascii=False))
            d["prompt_hash"] = _sha(prompt)
            d["target_hash"] = _sha(target)


_SPECS: list[dict] = []  # the docs, set once per worker process (initializer)


def _init_worker(specs: list[dict]) -> None:
    global _SPECS
    _SPECS = specs


def _write_model(job: tuple) -> tuple[int, int, dict[str, float]]:
    """Write one model's files; (lines, bytes, {task: accuracy})."""
    out, model_index, name, seed, probs = job
    tasks = _SPECS
    acc: dict[str, float] = {}
    rng = np.random.default_rng([seed, 3, model_index])
    folder = Path(out) / name.replace("/", "__")
    folder.mkdir(parents=True, exist_ok=True)
    n_lines = n_bytes = 0
    for t, task in enumerate(tasks):
        correct = rng.random(len(task["docs"])) < probs[t]
        noise = rng.normal(0.0, 1.0, (len(task["docs"]), 4))
        lines = []
        for d, ok, z in zip(task["docs"], correct.tolist(), noise):
            doc = d["doc"]
            if task["kind"] == "mc":
                label = doc["label"]
                ll = -np.abs(z) - 0.2
                best = int(np.argmax(ll))
                if ok and best != label:  # the gold choice gets the highest log-likelihood
                    ll[label] = ll[best] + 0.1
                elif not ok and best == label:
                    ll[label] = ll[label] - 1.0 - abs(ll[(label + 1) % 4] - ll[label])
                pairs = [[repr(float(v)), "False"] for v in ll]
                rec = {"doc_id": d["doc_id"], "doc": doc, "target": d["target"],
                       "arguments": d["arguments"], "resps": [[p] for p in pairs],
                       "filtered_resps": pairs, "filter": "none",
                       "metrics": ["acc", "acc_norm"], "doc_hash": d["doc_hash"],
                       "prompt_hash": d["prompt_hash"], "target_hash": d["target_hash"],
                       "acc": 1.0 if ok else 0.0, "acc_norm": 1.0 if ok else 0.0}
            else:
                answer = doc["answer"] if ok else str(int(doc["answer"]) + 1 + int(abs(z[0]) * 9))
                text = f" The answer is {answer}."
                rec = {"doc_id": d["doc_id"], "doc": doc, "target": d["target"],
                       "arguments": d["arguments"], "resps": [[text]],
                       "filtered_resps": [answer if ok else text], "filter": "strict-match",
                       "metrics": ["exact_match"], "doc_hash": d["doc_hash"],
                       "prompt_hash": d["prompt_hash"], "target_hash": d["target_hash"],
                       "exact_match": 1.0 if ok else 0.0}
            lines.append(orjson.dumps(rec))
        data = b"\n".join(lines) + b"\n"
        (folder / f"samples_{task['task']}_{DATE}.jsonl").write_bytes(data)
        n_lines += len(lines)
        n_bytes += len(data)
        acc[task["task"]] = float(correct.mean())
    return n_lines, n_bytes, acc


def generate(out: str | Path, models: int, tasks: int, docs: int, *, seed: int = 0,
             workers: int | None = None) -> dict:
    """Write the folder; returns {"lines", "bytes", "seconds", "accuracy": {task: {model: acc}}}."""
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs = build_docs(seed, tasks, docs)
    probs = latent_probs(seed, models, specs)
    _prepare(specs)
    for t in specs:
        for d in t["docs"]:
            d.pop("difficulty")
    names = model_names(models)
    jobs = [(str(out), m, names[m], seed, probs[m]) for m in range(models)]
    workers = workers or os.cpu_count() or 1
    accuracy: dict[str, dict[str, float]] = {}
    n_lines = n_bytes = 0
    if workers == 1:
        _init_worker(specs)
        results = map(_write_model, jobs)
    else:
        pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(specs,))
        results = pool.map(_write_model, jobs, chunksize=8)
    for name, (lines, size, acc) in zip(names, results):
        n_lines += lines
        n_bytes += size
        for task, value in acc.items():
            accuracy.setdefault(task, {})[name] = value
    if workers != 1:
        pool.shutdown()
    seconds = time.perf_counter() - start
    truth = {"models": models, "tasks": tasks, "docs": docs, "seed": seed, "lines": n_lines,
             "bytes": n_bytes, "seconds": round(seconds, 2), "accuracy": accuracy}
    (out / "truth.json").write_text(json.dumps(truth))
    return truth


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output folder (created; never inside the repository)")
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--docs", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--force", action="store_true", help="delete OUT first if it exists")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        if not args.force:
            print(f"{out}: exists and is not empty (use --force to regenerate)", file=sys.stderr)
            return 1
        shutil.rmtree(out)
    truth = generate(out, args.models, args.tasks, args.docs, seed=args.seed,
                     workers=args.workers)
    print(f"wrote {truth['lines']:,} lines, {truth['bytes'] / 2**30:.2f} GiB in "
          f"{truth['seconds']:.1f} s to {out} ({args.models} models x {args.tasks} tasks x "
          f"{args.docs} docs, seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
