"""First use of ``--embedder static`` (empty caches) vs all-MiniLM-L6-v2 on 2,000 prompts.

Each side runs in a fresh Python process, timed from before its imports to the last vector:
the static embedder with an EMPTY model cache ($LM_ROUTER_CACHE_DIR, so it builds its model)
and an empty store (so every prompt is embedded), MiniLM with an empty store. The sides
alternate --repeats times in the same run; the ratio uses the medians, so machine load hits
both. Prompts: the lm-eval example runs' questions (examples/runs) varied with a seeded
generator into --n distinct question-like texts (templates x topics x numbers).

    HF_HUB_OFFLINE=1 python bench/bench_static_first_use.py              # 2,000 prompts, 2 repeats
    HF_HUB_OFFLINE=1 python bench/bench_static_first_use.py --n 500 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TEMPLATES = [
    "The following are multiple choice questions about {topic}.\nQuestion: {q}\n"
    "A. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer:",
    "Question: {q} Consider {n} cases in {topic} before answering.\nAnswer:",
    "{q} Explain your reasoning step by step, then give the final answer about {topic}.",
    "In the context of {topic}, {q_lower} Choose from: {a}, {b}, {c} or {d}.",
]
TOPICS = ["basic science", "world history", "geography", "cooking", "unit conversion",
          "arithmetic", "chemistry", "physics", "law", "economics", "biology", "philosophy",
          "computer science", "psychology", "engineering", "medicine", "statistics"]


def example_questions() -> tuple[list[str], list[str]]:
    """(questions, answer choices) from the lm-eval sample logs in examples/runs."""
    questions, choices = set(), set()
    for path in sorted((ROOT / "examples" / "runs").rglob("samples_*.jsonl")):
        for line in path.read_text().splitlines():
            doc = json.loads(line).get("doc", {})
            if doc.get("question"):
                questions.add(str(doc["question"]))
            choices.update(str(c) for c in doc.get("choices", []))
    return sorted(questions), sorted(choices)


def make_prompts(n: int, seed: int = 0) -> list[str]:
    questions, choices = example_questions()
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        q = rng.choice(questions)
        a, b, c, d = rng.sample(choices, 4)
        out.add(rng.choice(TEMPLATES).format(
            topic=rng.choice(TOPICS), q=q, q_lower=q[:1].lower() + q[1:], a=a, b=b, c=c, d=d,
            n=rng.randint(2, 999)))
    return sorted(out)


CHILD = r"""
import sys, time, json
t0 = time.perf_counter()
from lm_router_plugin.embedding.embedders import embed_texts, make_embedder
from lm_router_plugin.store.store import Store
texts = json.load(open(sys.argv[1]))
embedder = make_embedder(sys.argv[2], device="cpu")
X = embed_texts(texts, embedder, Store(sys.argv[3]))
build = getattr(embedder, "distill_seconds", None)
print(json.dumps({"seconds": time.perf_counter() - t0, "shape": list(X.shape),
                  "build": build, "id": embedder.id}))
"""


def run_side(name: str, prompts_file: Path, tmp: Path, i: int) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               LM_ROUTER_CACHE_DIR=str(tmp / f"cache-{name}-{i}"))  # empty: builds the model
    out = subprocess.run([sys.executable, "-c", CHILD, str(prompts_file), name,
                          str(tmp / f"store-{name}-{i}")], env=env, capture_output=True,
                         text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    prompts = make_prompts(args.n)
    words = [len(p.split()) for p in prompts]
    print(f"# HF_HUB_OFFLINE=1 python bench/bench_static_first_use.py {' '.join(sys.argv[1:])}")
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {len(prompts)} "
          f"prompts, {sum(words) / len(words):.0f} words on average")
    times: dict[str, list[float]] = {"static": [], "minilm": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        prompts_file = tmp / "prompts.json"
        prompts_file.write_text(json.dumps(prompts))
        for i in range(args.repeats):
            for name in ("static", "minilm"):
                r = run_side(name, prompts_file, tmp, i)
                times[name].append(r["seconds"])
                extra = f", model built in {r['build']:.2f} s" if r["build"] else ""
                print(f"{name:7s} run {i + 1}: {r['seconds']:7.2f} s from an empty cache "
                      f"(process incl. imports{extra}) {r['id']}", flush=True)
    s, m = statistics.median(times["static"]), statistics.median(times["minilm"])
    print(f"median: static {s:.2f} s, MiniLM {m:.2f} s; static / MiniLM = {s / m:.3f} "
          f"(MiniLM / static = {m / s:.1f}x)")


if __name__ == "__main__":
    main()
