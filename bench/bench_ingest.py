"""Ingest speed and memory of the lm-eval adapter on a large, realistic sample log.

Writes lm-eval 0.4.13-format sample logs (``<model>/results_<date>.json`` +
``samples_<task>_<date>.jsonl``) with 1,000,000 lines in all to a temporary folder: several
models over the same docs, ~1 KB prompts, multiple-choice lines (4 choices, so the prompt is
repeated in each ``gen_args_i`` as lm-eval does), a generation task with two filters (the
second filter's lines are skipped) and a continuous ``token_f1`` task. Then, on the same
files, it measures

  (a) the floor: ``orjson.loads`` of every line (file reading included) - the same parser
      the adapter uses, so the ratio shows what the adapter's own work costs - in the same
      way the ingest reads: the files grouped per task (one unit per task, as the lm-eval
      adapter plans them), the groups parsed in a process pool of the same size
      (``--workers``, default the usable cores, capped at the number of tasks; pool start
      included, as in (b));
  (a') for context only: the stdlib ``json.loads`` of the same lines, same pool;
  (a1) for context only: (a) in one process (the floor per core);
  (b) ``ingest.read_rows("lm-eval", ..., workers=N)``: the adapter, thresholds and the
      validated table;
  (c) the full ``ingest`` into an empty temporary store (Parquet written atomically);

and prints the rates, the ratio (b)/(a) (target >= 0.5), (b)/(a') and (b)/(a1) as context,
and the peak RSS. (a), (a'), (a1) and (b) run in turn, --passes times (default 3): the
fastest pass of each is kept (the machine is shared); (c) runs once.

    python bench/bench_ingest.py                    # 1,000,000 lines, ~4.8 GB in $TMPDIR
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
import multiprocessing
import pstats
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import orjson

from lm_router_plugin.adapters.lmeval import READ_BUFFER

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
                    for filt, count in (("strict-match", half),
                                        ("flexible-extract", n_task - half)):
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
    """Parse every line with orjson (the adapter's parser), in this process."""
    n = 0
    loads = orjson.loads
    for path in files:
        with open(path, "rb", buffering=READ_BUFFER) as fh:  # as the adapter reads
            for line in fh:
                loads(line)
                n += 1
    return n


def stdlib_parse(files: list[Path]) -> int:
    n = 0
    loads = json.loads
    for path in files:
        with open(path, "rb", buffering=READ_BUFFER) as fh:
            for line in fh:
                loads(line)
                n += 1
    return n


PARSERS = {"orjson": orjson_parse, "json": stdlib_parse}


def _parse_group(group: list[Path], parser: str) -> int:
    return PARSERS[parser](group)


def by_task(files: list[Path]) -> list[list[Path]]:
    """The sample files grouped per task (``samples_<task>_<date>.jsonl``), in task order:
    the lm-eval adapter's work units."""
    groups: dict[str, list[Path]] = {}
    for path in files:
        groups.setdefault(path.name[len("samples_"):-len(f"_{DATE}.jsonl")], []).append(path)
    return [groups[task] for task in sorted(groups)]


def pool_parse(groups: list[list[Path]], workers: int, parser: str) -> int:
    """Parse the groups in ``min(workers, len(groups))`` forked processes (as read_arrow's
    pool: the largest groups, in bytes, started first); the pool's start and stop are
    included."""
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
    groups = sorted(groups, key=lambda g: -sum(p.stat().st_size for p in g))
    with ProcessPoolExecutor(min(workers, len(groups)), mp_context=context) as pool:
        return sum(pool.map(_parse_group, groups, [parser] * len(groups)))


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None,
                        help="processes of the ingest and of the floor's pool (default: "
                             "$LM_ROUTER_WORKERS, else the usable cores)")
    parser.add_argument("--passes", type=int, default=3,
                        help="passes of (a), (a'), (a1) and (b), alternating; the fastest of "
                             "each is kept")
    parser.add_argument("--dir", type=Path, help="write here (kept) instead of a temp folder")
    parser.add_argument("--no-store", action="store_true", help="skip (c), the full ingest")
    parser.add_argument("--profile", action="store_true", help="cProfile (b); print top 25")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchinfo import print_header

    from lm_router_plugin.store.ingest import default_workers, ingest, read_rows
    from lm_router_plugin.store.store import Store

    print_header()
    workers = args.workers or default_workers()
    tmp = None if args.dir else Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    root = args.dir or tmp
    try:
        t0 = time.perf_counter()
        files, size = generate(root / "runs", args.lines, args.models)
        groups = by_task(files)
        used = min(workers, len(groups))
        print(f"wrote {args.lines:,} lines ({size / 1e9:.2f} GB, {len(files)} files, "
              f"{args.models} models, {len(groups)} tasks) in {time.perf_counter() - t0:.1f} s; "
              f"{used} worker processes (the ingest's and the floor's)")
        stdlib_parse(files[:1])  # warm the page cache path
        floors = {"orjson": lambda: pool_parse(groups, workers, "orjson"),
                  "json": lambda: pool_parse(groups, workers, "json"),
                  "orjson-1": lambda: orjson_parse(files)}
        best = dict.fromkeys(floors, float("inf"))
        gc.collect()
        rss_before = peak_rss_mb()
        profiler = cProfile.Profile() if args.profile else None
        t_rows = float("inf")
        # (a), (a'), (a1) and (b) in turn, --passes times; each keeps its fastest pass (the
        # machine is shared: alternating spreads its load over all of them alike)
        for attempt in range(args.passes):
            for name, run in floors.items():
                t0 = time.perf_counter()
                n = run()
                best[name] = min(best[name], time.perf_counter() - t0)
            table = None
            gc.collect()
            t0 = time.perf_counter()
            if profiler and attempt == 0:
                profiler.enable()
            table, _ = read_rows("lm-eval", [root / "runs"], workers=workers)
            if profiler and attempt == 0:
                profiler.disable()
            t_rows = min(t_rows, time.perf_counter() - t0)
        rate = {name: n / t for name, t in best.items()}
        print(f"(a) orjson.loads per line, {used} processes : {rate['orjson']:>10,.0f} lines/s  "
              f"({best['orjson']:.1f} s; the floor)")
        print(f"(a') stdlib json.loads, {used} processes    : {rate['json']:>10,.0f} lines/s  "
              f"({best['json']:.1f} s; context)")
        print(f"(a1) orjson.loads, one process         : {rate['orjson-1']:>10,.0f} lines/s  "
              f"({best['orjson-1']:.1f} s; context: the floor per core)")
        rate_rows = n / t_rows
        print(f"(b) read_rows -> table, {used} processes    : {rate_rows:>10,.0f} lines/s  "
              f"({t_rows:.1f} s, best of {args.passes}, {len(table):,} rows)")
        ratio = rate_rows / rate["orjson"]
        print(f"    ratio (b)/(a) vs orjson, same processes : {ratio:.2f}  (target >= 0.5: "
              f"{'PASS' if ratio >= 0.5 else 'FAIL'})")
        print(f"    ratio (b)/(a') vs json, same processes  : {rate_rows / rate['json']:.2f}  "
              "(context)")
        print(f"    ratio (b)/(a1) vs orjson, one process   : "
              f"{rate_rows / rate['orjson-1']:.2f}  (context: {used} processes against 1)")
        print(f"    peak RSS (this process)                 : {peak_rss_mb():,.0f} MB (before "
              f"(b): {rss_before:,.0f} MB; files: {size / 1e6:,.0f} MB)")
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
            report = ingest("lm-eval", [root / "runs"], store, workers=workers)
            t_full = time.perf_counter() - t0
            print(f"(c) full ingest into a store, {used} processes : {n / t_full:>10,.0f} "
                  f"lines/s  ({t_full:.1f} s, {report.n_added:,} rows added, table "
                  f"{store.table_path.stat().st_size / 1e6:,.0f} MB)")
            print(f"    ratio (c)/(a) vs orjson, same processes : "
                  f"{(n / t_full) / rate['orjson']:.2f}")
            print(f"    ratio (c)/(a') vs json, same processes  : "
                  f"{(n / t_full) / rate['json']:.2f}  (context)")
            print(f"    peak RSS (this process)                 : {peak_rss_mb():,.0f} MB")
            assert report.n_added == n_rows
        print(f"\nreproduce: python bench/bench_ingest.py --lines {args.lines} "
              f"--models {args.models} --workers {workers} --passes {args.passes}   "
              f"(python {sys.version.split()[0]}, orjson {orjson.__version__})")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
