"""Ingest speed and memory of the lm-eval adapter on a large, realistic sample log.

Writes lm-eval 0.4.13-format sample logs (``<model>/results_<date>.json`` +
``samples_<task>_<date>.jsonl``) with 1,000,000 lines in all to a temporary folder: several
models over the same docs, ~1 KB prompts, multiple-choice lines (4 choices, so the prompt is
repeated in each ``gen_args_i`` as lm-eval does), a generation task with two filters (the
second filter's lines are skipped) and a continuous ``token_f1`` task. Then, on the same
files, it measures

  (a) the floor: ``orjson.loads`` of every line (file reading included) - the same parser
      the adapter uses, so the ratio shows what the adapter's own work costs;
  (a') for context only: the stdlib ``json.loads`` of the same lines;
  (b) ``ingest.read_rows("lm-eval", ...)``: the adapter, thresholds and the validated table;
  (c) the full ``ingest`` into an empty temporary store (Parquet written atomically);

and prints the rates, the ratio (b)/(a) (target >= 0.5), (b)/(a') as context, and the peak
RSS. (a) and (a') run twice, alternating, and (b) twice: the faster pass of each is kept (the
machine is shared); (c) runs once.

    python bench/bench_ingest.py                    # 1,000,000 lines, ~3.5 GB in $TMPDIR
    python bench/bench_ingest.py --lines 100000     # a quick run
    python bench/bench_ingest.py --profile          # cProfile of (b), top 25 functions
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import io
import json
import pstats
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

DATE = "2026-11-28T02-58-12.139447"
# (task, kind, share of one model's lines); "gen2" = generation with two filters
TASKS = [("bench_mc_a", "mc", 0.32), ("bench_mc_b", "mc", 0.32), ("bench_gen", "gen2", 0.24),
         ("bench_f1", "f1", 0.12)]
WORDS = ("the of and to in is that for it as was with be by on not he this are or his from "
         "at which but have an they you were her she there been one all we their has would "
         "when if so no what can more out other about into them than then some could these "
         "two may first any like now my such make over our even most after also did many").split()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _question(task: str, doc_id: int, size: int = 1000) -> str:
    """A ~1 KB question text, different per doc (deterministic)."""
    out, i = [f"[{task} #{doc_id}]"], doc_id * 7919
    length = len(out[0])
    while length < size:
        word = WORDS[i % len(WORDS)]
        i = (i * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(word)
        length += len(word) + 1
    return " ".join(out) + "?"


def _line(task: str, kind: str, doc_id: int, model_i: int, filt: str = "none") -> bytes:
    question = _question(task, doc_id)
    prompt = f"Question: {question}\nAnswer:"
    right = (doc_id * 31 + model_i * 17) % 100 < 40 + 6 * model_i
    if kind == "mc":
        choices = [f"option {c} for {doc_id}" for c in "ABCD"]
        label = doc_id % 4
        doc = {"id": f"{task}-{doc_id}", "question": question, "choices": choices,
               "label": label, "answer": choices[label]}
        args = {f"gen_args_{i}": {"arg_0": prompt, "arg_1": " " + c} for i, c in enumerate(choices)}
        resps = [[[repr(-0.1 - 0.37 * ((i + doc_id) % 4)), "False"]] for i in range(4)]
        rec = {"doc_id": doc_id, "doc": doc, "target": str(label), "arguments": args,
               "resps": resps, "filtered_resps": [r[0] for r in resps], "filter": "none",
               "metrics": ["acc", "acc_norm"], "doc_hash": _sha(question),
               "prompt_hash": _sha(prompt), "target_hash": _sha(str(label)),
               "acc": float(right), "acc_norm": float(right)}
    else:
        answer = f"answer {doc_id % 97} words here"
        doc = {"id": f"{task}-{doc_id}", "question": question, "answer": answer}
        gen = answer if right else "something else entirely"
        metric = "token_f1" if kind == "f1" else "exact_match"
        value = (0.4 + 0.6 * right - 0.1 * (doc_id % 3)) if kind == "f1" else float(right)
        rec = {"doc_id": doc_id, "doc": doc, "target": answer,
               "arguments": {"gen_args_0": {"arg_0": prompt, "arg_1": {
                   "until": ["\n"], "max_gen_toks": 32, "do_sample": False}}},
               "resps": [[gen]], "filtered_resps": [gen], "filter": filt, "metrics": [metric],
               "doc_hash": _sha(question), "prompt_hash": _sha(prompt),
               "target_hash": _sha(answer), metric: value}
    return orjson.dumps(rec) + b"\n"


def generate(root: Path, n_lines: int, n_models: int) -> tuple[list[Path], int]:
    """Write the sample logs; (sample files, bytes written)."""
    per_model = n_lines // n_models
    files, size = [], 0
    for m in range(n_models):
        folder = root / f"bench__Model-{m}"
        folder.mkdir(parents=True)
        written = 0
        results = {"results": {}, "group_subtasks": {}, "configs": {}, "higher_is_better": {},
                   "config": {"model": "hf", "model_args": f"pretrained=bench/Model-{m}",
                              "model_num_parameters": (m + 1) * 10**9},
                   "model_name": f"bench/Model-{m}", "date": 1.0}
        for t, (task, kind, share) in enumerate(TASKS):
            n_task = (per_model - written) if t == len(TASKS) - 1 else int(per_model * share)
            written += n_task
            metric = {"mc": "acc", "gen2": "exact_match", "f1": "token_f1"}[kind]
            results["results"][task] = {"alias": task}
            results["configs"][task] = {"task": task}
            results["higher_is_better"][task] = {metric: True}
            path = folder / f"samples_{task}_{DATE}.jsonl"
            with open(path, "wb", buffering=1 << 20) as fh:
                if kind == "gen2":  # one line per (doc, filter), like gsm8k
                    half = n_task // 2
                    for filt, count in (("strict-match", half), ("flexible-extract", n_task - half)):
                        for doc_id in range(count):
                            fh.write(_line(task, kind, doc_id, m, filt))
                else:
                    for doc_id in range(n_task):
                        fh.write(_line(task, kind, doc_id, m))
            files.append(path)
            size += path.stat().st_size
        (folder / f"results_{DATE}.json").write_text(json.dumps(results))
    return files, size


def orjson_parse(files: list[Path]) -> int:
    """Parse every line with orjson (the adapter's parser): the floor of any ingest."""
    n = 0
    loads = orjson.loads
    for path in files:
        with open(path, "rb") as fh:
            for line in fh:
                loads(line)
                n += 1
    return n


def stdlib_parse(files: list[Path]) -> int:
    n = 0
    loads = json.loads
    for path in files:
        with open(path, "rb") as fh:
            for line in fh:
                loads(line)
                n += 1
    return n


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--dir", type=Path, help="write here (kept) instead of a temp folder")
    parser.add_argument("--no-store", action="store_true", help="skip (c), the full ingest")
    parser.add_argument("--profile", action="store_true", help="cProfile (b); print top 25")
    args = parser.parse_args()

    from lm_router_plugin.store.ingest import ingest, read_rows
    from lm_router_plugin.store.store import Store

    tmp = None if args.dir else Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    root = args.dir or tmp
    try:
        t0 = time.perf_counter()
        files, size = generate(root / "runs", args.lines, args.models)
        print(f"wrote {args.lines:,} lines ({size / 1e9:.2f} GB, {len(files)} files, "
              f"{args.models} models) in {time.perf_counter() - t0:.1f} s")
        stdlib_parse(files[:1])  # warm the page cache path
        best = {"orjson": float("inf"), "json": float("inf")}
        for _ in range(2):  # alternate, keep each one's faster pass (a busy machine)
            for name, parse in (("orjson", orjson_parse), ("json", stdlib_parse)):
                t0 = time.perf_counter()
                n = parse(files)
                best[name] = min(best[name], time.perf_counter() - t0)
        rate_orjson, rate_json = n / best["orjson"], n / best["json"]
        print(f"(a) orjson.loads per line      : {rate_orjson:>10,.0f} lines/s  "
              f"({best['orjson']:.1f} s; the floor)")
        print(f"(a') stdlib json.loads per line: {rate_json:>10,.0f} lines/s  "
              f"({best['json']:.1f} s; context)")

        gc.collect()
        rss_before = peak_rss_mb()
        profiler = cProfile.Profile() if args.profile else None
        t_rows = float("inf")
        for attempt in range(2):  # best of 2, like (a) and (a')
            table = None
            gc.collect()
            t0 = time.perf_counter()
            if profiler and attempt == 0:
                profiler.enable()
            table, _ = read_rows("lm-eval", [root / "runs"])
            if profiler and attempt == 0:
                profiler.disable()
            t_rows = min(t_rows, time.perf_counter() - t0)
        rate_rows = n / t_rows
        print(f"(b) read_rows -> table         : {rate_rows:>10,.0f} lines/s  ({t_rows:.1f} s, "
              f"best of 2, {len(table):,} rows)")
        print(f"    ratio (b)/(a) vs orjson    : {rate_rows / rate_orjson:.2f}  (target >= 0.5)")
        print(f"    ratio (b)/(a') vs json     : {rate_rows / rate_json:.2f}  (context)")
        print(f"    peak RSS                   : {peak_rss_mb():,.0f} MB (before (b): "
              f"{rss_before:,.0f} MB; files: {size / 1e6:,.0f} MB)")
        n_rows = len(table)
        del table
        gc.collect()
        if profiler:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue())
        if not args.no_store:
            store = Store(root / "store")
            t0 = time.perf_counter()
            report = ingest("lm-eval", [root / "runs"], store)
            t_full = time.perf_counter() - t0
            print(f"(c) full ingest into a store   : {n / t_full:>10,.0f} lines/s  "
                  f"({t_full:.1f} s, {report.n_added:,} rows added, table "
                  f"{store.table_path.stat().st_size / 1e6:,.0f} MB)")
            print(f"    ratio (c)/(a) vs orjson    : {(n / t_full) / rate_orjson:.2f}")
            print(f"    ratio (c)/(a') vs json     : {(n / t_full) / rate_json:.2f}  (context)")
            print(f"    peak RSS                   : {peak_rss_mb():,.0f} MB")
            assert report.n_added == n_rows
        print(f"\nreproduce: python bench/bench_ingest.py --lines {args.lines} "
              f"--models {args.models}   (python {sys.version.split()[0]}, "
              f"orjson {orjson.__version__})")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
