"""Leaderboard scale in one run: generate, ingest, embed, fit, recommend (issue 11 item 2).

Each phase runs in its own Python process (so its peak RSS is its own: ``ru_maxrss`` of the
phase process and, separately, of its worker processes), against the strongest fair
baseline doing the same work in the same run:

- ingest vs a plain orjson + pyarrow loop over the same files, with the same number of
  processes, that extracts the same fields (task, doc_id, model, prompt, score, prompt_hash)
  into one dictionary-encoded Arrow table - no validation, no thresholds, no instance-text
  rule, no merge, no store;
- fit (``fit_or_load``: the default ``Router(task_k=200)``) vs the numpy core of the same
  fit on the same embeddings: blocked X @ X.T, each row's 200 nearest rows outside its own
  task by argpartition, g = mean of Y over the k = 5 nearest, u over the 19 nearest,
  per-task p and accuracy, and the task-level S1 (kernel averages over the 200 nearest at 6
  bandwidths, per task); no table, no pool building, no saving. Its arrays are compared
  with the saved router's (max absolute differences printed);
- recommend vs numpy on the same query embeddings: Q @ X.T, top-k, g, S1/S2 per model,
  argmax (``Router.recommend`` also computes S3, the task-level S1 of the new task, the
  stacked switch and the label posterior: not a same-work ratio).
  The CLI's wall time (a fresh ``lm-router recommend`` process: imports, router load,
  cached prompt embeddings) is reported too.

Then the same for fewer models (--sweep-models, subsets of the model folders) and fewer
docs (--sweep-docs, a second generated folder), to show what grows with models and what
with prompts. By default the sweeps are 1/4 and 1/2 of the models and 1/2 of the docs of
the main run; sizes at or above the main run's are skipped (with a message).

    python bench/bench_scale.py --data /work/scratch/synth-1000x20x500 --work /work/scratch/bs
    python bench/bench_scale.py --models 20 --tasks 4 --docs 50 --work /tmp/bs   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GB = 2 ** 30


def _usage() -> dict:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_s": round(me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, 1),
            "rss_mib": round(me.ru_maxrss / 1024), "workers_rss_mib": round(kids.ru_maxrss / 1024)}


def _model_dirs(data: Path, n_models: int | None) -> list[str]:
    dirs = sorted(p for p in data.iterdir() if p.is_dir())
    return [str(p) for p in (dirs[:n_models] if n_models else dirs)]


# -- phases (each runs in its own process) ------------------------------------------------
def phase_ingest(args: argparse.Namespace, fresh: bool = True) -> dict:
    from lm_router_plugin.store.ingest import ingest
    from lm_router_plugin.store.store import Store

    if fresh:
        shutil.rmtree(args.store, ignore_errors=True)
    paths = _model_dirs(Path(args.data), args.n_models)
    start = time.perf_counter()
    report = ingest("lm-eval", paths, Store(args.store), workers=args.workers)
    wall = time.perf_counter() - start
    table = Path(args.store) / "data"
    size = sum(p.stat().st_size for p in table.rglob("table.parquet"))
    return {"wall_s": round(wall, 2), "rows": report.n_read, "added": report.n_added,
            "unchanged": report.n_unchanged, "models": len(report.models),
            "tasks": len(report.tasks), "table_mib": round(size / 2**20, 1), **_usage()}


def phase_reingest(args: argparse.Namespace) -> dict:
    """The same files again into the filled store: every row is merged and found identical."""
    return phase_ingest(args, fresh=False)


def _baseline_task(files: list[str]) -> bytes:
    import orjson
    import pyarrow as pa

    cols: dict[str, list] = {k: [] for k in ("task", "doc_id", "model", "prompt", "score",
                                             "prompt_hash")}
    for name in files:
        path = Path(name)
        stem = path.name[: -len(".jsonl")]
        task = stem[stem.find("_") + 1: stem.rfind("_")]
        model = path.parent.name.replace("__", "/")
        with open(path, "rb") as fh:
            for line in fh:
                rec = orjson.loads(line)
                metric = rec["metrics"][0]
                cols["task"].append(task)
                cols["doc_id"].append(str(rec["doc_id"]))
                cols["model"].append(model)
                cols["prompt"].append(rec["arguments"]["gen_args_0"]["arg_0"])
                cols["score"].append(rec[metric])
                cols["prompt_hash"].append(rec["prompt_hash"])
    arrays = {k: (pa.array(v, pa.float64()) if k == "score"
                  else pa.array(v, pa.string()).dictionary_encode()) for k, v in cols.items()}
    batch = pa.RecordBatch.from_pydict(arrays)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def phase_ingest_baseline(args: argparse.Namespace) -> dict:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import pyarrow as pa

    by_task: dict[str, list[str]] = {}
    for folder in _model_dirs(Path(args.data), args.n_models):
        for path in sorted(Path(folder).glob("samples_*.jsonl")):
            stem = path.name[: -len(".jsonl")]
            by_task.setdefault(stem[stem.find("_") + 1: stem.rfind("_")], []).append(str(path))
    start = time.perf_counter()
    batches = []
    workers = args.workers or len(os.sched_getaffinity(0))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        for data in pool.map(_baseline_task, list(by_task.values())):
            with pa.ipc.open_stream(data) as reader:
                batches.extend(reader)
    table = pa.Table.from_batches(batches)
    wall = time.perf_counter() - start
    return {"wall_s": round(wall, 2), "rows": table.num_rows, **_usage()}


def _pool_and_embeddings(store_dir: str):
    import numpy as np

    from lm_router_plugin.router.pool import build_pool
    from lm_router_plugin.router.router import Router
    from lm_router_plugin.store.schema import CORRECT, INPUT_TEXT, INSTANCE_ID, MODEL, TASK
    from lm_router_plugin.store.store import Store

    store = Store(store_dir)
    table = store.read_table(columns=[TASK, INSTANCE_ID, INPUT_TEXT, MODEL, CORRECT],
                             categorical=True)
    pool = build_pool(table)
    router = Router(embedder="static")
    X = np.asarray(router.embed(pool.texts, store), np.float32)
    return store, pool, X


def phase_embed(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    _, pool, X = _pool_and_embeddings(args.store)
    return {"wall_s": round(time.perf_counter() - start, 2), "instances": len(pool.texts),
            "dim": int(X.shape[1]), **_usage()}


def phase_fit(args: argparse.Namespace) -> dict:
    from lm_router_plugin.router.persistence import fit_or_load
    from lm_router_plugin.store.store import Store

    store = Store(args.store)
    shutil.rmtree(store.routers_dir(), ignore_errors=True)
    start = time.perf_counter()
    router = fit_or_load(store, embedder="static")
    wall = time.perf_counter() - start
    return {"wall_s": round(wall, 3), "instances": int(router.X_.shape[0]),
            "models": len(router.models_), **_usage()}


#: The task-level S1's bandwidths (router/task_level.py BANDWIDTHS), written out here: the
#: baseline's core uses nothing of the package; phase fit_baseline checks they are the fit's.
BASELINE_BANDWIDTHS = (0.01, 0.02, 0.05, 0.1, 0.2, float("inf"))


def _numpy_fit(X, Y, task_of, k: int = 5, kappa: int = 19, t: float = 0.5,
               task_k: int = 200, bandwidths=BASELINE_BANDWIDTHS, block: int = 1024):
    """The numpy core of a fit, the same work as ``Router(task_k=200).fit`` on the same
    arrays: per reference row its ``max(k, kappa, task_k)`` nearest rows outside its own task
    (blocked X @ X.T, argpartition, sort), g = mean label of the k nearest, u from the kappa
    nearest; per task p and accuracy; and the task-level S1 (H, D, M): per bandwidth h the
    mean over the task's rows of sum_j w_j y_j / sum_j w_j over their task_k nearest, w_j =
    exp((sim_j - 1) / h) (h = inf: 1). With every label present that average is linear in
    Y, so it is summed as one (H D, n) weight matrix times Y; with missing labels each row's
    neighbours' labels are gathered (rows, task_k, M)."""
    import numpy as np

    n, M = Y.shape
    D = int(task_of.max()) + 1
    H = len(bandwidths)
    K = min(max(k, kappa, task_k), n - 1)
    kt = min(task_k, K)
    complete = not np.isnan(Y).any()
    g = np.empty(Y.shape, np.float32)
    u_rows = np.empty(n, np.float64)
    Y0 = np.nan_to_num(Y, nan=0.0).astype(np.float32)
    have = (~np.isnan(Y)).astype(np.float32)
    # a model's mean label over the rows outside each task (g without labelled neighbours)
    label_sum = np.stack([Y0[task_of == d].sum(0) for d in range(D)])
    label_n = np.stack([have[task_of == d].sum(0) for d in range(D)])
    prior = ((label_sum.sum(0) - label_sum) / np.maximum(label_n.sum(0) - label_n, 1)
             ).astype(np.float32)
    # complete labels: task d's weight on reference row j, per bandwidth (H D n floats)
    weight = np.zeros((H, D, n)) if complete and kt else None
    sums, counts = np.zeros((H, D, M)), np.zeros((H, D, M))  # missing labels
    for s in range(0, n, block):
        sim = X[s:s + block] @ X.T
        rows_task = task_of[s:s + block]
        sim[rows_task[:, None] == task_of[None, :]] = -np.inf
        top = np.argpartition(-sim, K - 1, axis=1)[:, :K]
        top_sim = np.take_along_axis(sim, top, 1)
        order = np.argsort(-top_sim, axis=1, kind="stable")
        top, top_sim = np.take_along_axis(top, order, 1), np.take_along_axis(top_sim, order, 1)
        near = top[:, :k]
        count = have[near].sum(1)
        g[s:s + block] = np.where(count > 0, Y0[near].sum(1) / np.maximum(count, 1),
                                  prior[rows_task])  # no labelled neighbour: the prior
        close = top_sim[:, :kappa]
        finite = np.isfinite(close)
        u_rows[s:s + block] = (np.where(finite, 1.0 - close, 0.0).sum(1)
                               / np.maximum(finite.sum(1), 1))
        if not kt:
            continue
        idx, ksim = top[:, :kt], top_sim[:, :kt].astype(np.float64)
        valid = np.isfinite(ksim)
        shifted = np.where(valid, ksim - ksim[:, :1], 0.0)  # the row's best: no underflow
        w = np.stack([valid.astype(np.float64) if np.isinf(h)
                      else np.where(valid, np.exp(shifted / h), 0.0)
                      for h in bandwidths])  # (H, b, kt)
        if complete:
            w /= w.sum(2, keepdims=True)
            flat = (rows_task[:, None] * n + idx).ravel()  # (task, reference row)
            for j in range(H):  # add each row's normalised weights to its task's row
                weight[j] += np.bincount(flat, weights=w[j].ravel(),
                                         minlength=D * n).reshape(D, n)
            continue
        for r0 in range(0, len(idx), 64):  # (64, kt, M) gathered labels at a time
            i = idx[r0:r0 + 64]
            ww = w[:, r0:r0 + 64].transpose(1, 0, 2)  # (b, H, kt)
            num, den = np.matmul(ww, Y0[i]), np.matmul(ww, have[i])
            est = np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)
            has = ~np.isnan(est)
            onehot = np.zeros((D, len(i)))
            onehot[rows_task[r0:r0 + 64], np.arange(len(i))] = 1.0
            sums += np.einsum("dr,rhm->hdm", onehot, np.where(has, est, 0.0))
            counts += np.einsum("dr,rhm->hdm", onehot, has.astype(np.float64))
    if kt and complete:
        rows_per_task = np.bincount(task_of, minlength=D).astype(np.float64)
        sums = (weight.reshape(H * D, n) @ Y0.astype(np.float64)).reshape(H, D, M)
        counts = np.broadcast_to(rows_per_task[None, :, None], (H, D, M))
    task_s1 = (np.divide(sums, counts, out=np.full((H, D, M), np.nan), where=counts > 0.5)
               if kt else None)
    u = np.full(D, np.nan)
    p = np.full((D, M), np.nan)
    acc = np.full((D, M), np.nan)
    for d in range(D):
        rows = task_of == d
        if not rows.any():
            continue
        u[d] = u_rows[rows].mean()
        has = ~np.isnan(Y[rows])
        p[d] = (((g[rows] > t) == (Y[rows] == 1)) & has).sum(0) / np.maximum(has.sum(0), 1)
        acc[d] = np.nanmean(Y[rows], axis=0)
    return {"g": g, "u": u, "p": p, "accuracy": acc, "task_s1": task_s1}


def _compare_with_router(store_dir: str, pool, core: dict) -> dict:
    """How close the baseline's arrays are to the fitted router's (saved by phase fit):
    max absolute differences, nan-aware (ties between equally similar rows may order
    neighbours differently; everything else is the same arithmetic)."""
    import numpy as np

    from lm_router_plugin.router.persistence import fit_or_load
    from lm_router_plugin.store.store import Store

    router = fit_or_load(Store(store_dir), embedder="static")  # loaded, not fitted
    cal = router.calibration_
    if list(router.instance_ids_) != list(pool.instance_ids) or cal.task_s1 is None:
        return {"compared": False}
    assert tuple(cal.task_bandwidths) == BASELINE_BANDWIDTHS, cal.task_bandwidths

    def diff(a, b):
        a, b = np.asarray(a, float), np.asarray(b, float)
        both = ~np.isnan(a) & ~np.isnan(b)
        same_nan = bool(np.array_equal(np.isnan(a), np.isnan(b)))
        return (float(np.abs(a[both] - b[both]).max()) if both.any() else 0.0), same_nan

    out = {"compared": True}
    for name, ours, theirs in (("g", core["g"], router.loo_g_), ("u", core["u"], cal.u),
                               ("p", core["p"], cal.p),
                               ("accuracy", core["accuracy"], cal.accuracy),
                               ("task_s1", core["task_s1"], cal.task_s1)):
        out[f"max_diff_{name}"], out[f"same_nan_{name}"] = diff(ours, theirs)
    return out


def phase_fit_baseline(args: argparse.Namespace) -> dict:
    _, pool, X = _pool_and_embeddings(args.store)
    start = time.perf_counter()
    core = _numpy_fit(X, pool.Y, pool.task_of)
    wall = time.perf_counter() - start
    usage = _usage()
    return {"wall_s": round(wall, 3), **usage,
            **_compare_with_router(args.store, pool, core)}


def phase_recommend(args: argparse.Namespace) -> dict:
    """In-process: api.recommend (router loaded from the store, prompts' embeddings cached)."""
    import numpy as np

    from lm_router_plugin.api import recommend
    from lm_router_plugin.router.persistence import fit_or_load
    from lm_router_plugin.store.store import Store

    store = Store(args.store)
    start = time.perf_counter()
    rec = recommend(store, prompts_file=args.prompts, settings={"embedder": {"name": "static"}})
    wall = time.perf_counter() - start
    # the numpy baseline on the same embeddings: Q @ X.T, top-k, g, S1/S2, argmax
    router = fit_or_load(store, embedder="static")
    texts = [line for line in Path(args.prompts).read_text().splitlines() if line.strip()]
    Q = np.asarray(router.embed(texts, store), np.float32)
    b0 = time.perf_counter()
    sim = Q @ router.X_.T
    near = np.argpartition(-sim, router.k, axis=1)[:, :router.k]
    Yn = router.Y_[near]
    g = np.nansum(Yn, 1) / np.maximum((~np.isnan(Yn)).sum(1), 1)
    s1, s2 = g.mean(0), (g > router.t).mean(0)
    int(np.argmax(s1 + s2))
    base = time.perf_counter() - b0
    r0 = time.perf_counter()
    router.recommend(embeddings=Q, model_info=store.read_models())
    router_only = time.perf_counter() - r0
    return {"wall_s": round(wall, 2), "router_recommend_s": round(router_only, 4),
            "baseline_s": round(base, 4), "prompts": len(texts), "models": len(router.models_),
            "choice": rec.choice, **_usage()}


PHASES = {"ingest": phase_ingest, "reingest": phase_reingest,
          "ingest_baseline": phase_ingest_baseline, "embed": phase_embed, "fit": phase_fit,
          "fit_baseline": phase_fit_baseline, "recommend": phase_recommend}


def run_phase(name: str, **kw) -> dict:
    argv = [sys.executable, str(Path(__file__).resolve()), "--phase", name]
    for key, value in kw.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"phase {name} failed ({out.returncode})")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = round(time.perf_counter() - start, 1)
    return result


def cli_recommend(store: str, prompts: str) -> float:
    """Wall seconds of a fresh ``lm-router recommend --prompts`` process."""
    exe = Path(sys.executable).parent / "lm-router"
    start = time.perf_counter()
    subprocess.run([str(exe), "recommend", "--prompts", prompts, "--embedder", "static",
                    "--store", store, "--json"], check=True, capture_output=True)
    return time.perf_counter() - start


def write_prompts(path: Path, n: int, seed: int = 99) -> None:
    """``n`` prompts of a new synthetic task (another seed: texts not in the store)."""
    sys.path.insert(0, str(HERE))
    from gen_synthetic_logs import build_docs

    tasks = build_docs(seed, 1, n)
    path.write_text("".join(f"Question: {d['doc']['question']}\nAnswer:\n".replace("\n", " ")
                            .rstrip() + "\n" for d in tasks[0]["docs"]))


def scenario(label: str, data: Path, work: Path, n_models: int | None, prompts: Path,
             workers: int | None, baselines: bool = True) -> dict:
    store = str(work / f"store-{label}")
    out = {"label": label}
    out["ingest"] = run_phase("ingest", data=data, store=store, n_models=n_models,
                              workers=workers)
    print(f"[{label}] ingest {out['ingest']}", flush=True)
    if baselines:
        out["ingest_baseline"] = run_phase("ingest_baseline", data=data, n_models=n_models,
                                           workers=workers)
        print(f"[{label}] ingest baseline {out['ingest_baseline']}", flush=True)
        out["reingest"] = run_phase("reingest", data=data, store=store, n_models=n_models,
                                    workers=workers)
        print(f"[{label}] re-ingest {out['reingest']}", flush=True)
    out["embed"] = run_phase("embed", store=store)
    print(f"[{label}] embed {out['embed']}", flush=True)
    out["fit"] = run_phase("fit", store=store)
    print(f"[{label}] fit {out['fit']}", flush=True)
    if baselines:
        out["fit_baseline"] = run_phase("fit_baseline", store=store)
        print(f"[{label}] fit baseline {out['fit_baseline']}", flush=True)
    run_phase("recommend", store=store, prompts=prompts)  # embeds the prompts (cache)
    out["recommend"] = run_phase("recommend", store=store, prompts=prompts)
    out["recommend_cli_s"] = round(min(cli_recommend(store, str(prompts)) for _ in range(2)), 2)
    print(f"[{label}] recommend {out['recommend']} cli {out['recommend_cli_s']} s", flush=True)
    return out


def _sweep(text: str | None, full: int, shares: tuple[float, ...], what: str) -> list[int]:
    """The sweep's sizes: ``text`` (comma list; '' none) or ``shares`` of the full size;
    sizes at or above ``full`` (the main run) are skipped, with a message."""
    if text is None:
        sizes = sorted({max(1, int(full * share)) for share in shares})
        print(f"# sweep {what}: {', '.join(map(str, sizes)) or 'none'} "
              f"({' and '.join(f'{share:g}' for share in shares)} of the main run's {full})")
    else:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    kept = [n for n in sizes if n < full]
    if len(kept) < len(sizes):
        print(f"# sweep {what}: skipped {[n for n in sizes if n >= full]} (not smaller than "
              f"the main run's {full})")
    return kept


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phase", choices=sorted(PHASES))
    ap.add_argument("--data", help="generated folder (bench/gen_synthetic_logs.py); made "
                                   "under --work when absent")
    ap.add_argument("--store")
    ap.add_argument("--n-models", type=int)
    ap.add_argument("--workers", type=int)
    ap.add_argument("--prompts")
    ap.add_argument("--work", default="/work/scratch/bench-scale",
                    help="scratch folder for stores and generated data (not the repo)")
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--docs", type=int, default=500)
    ap.add_argument("--sweep-models", default=None,
                    help="also run with the first N model folders (comma list; '' for none; "
                         "default: 1/4 and 1/2 of the main run's models); N >= the main "
                         "run's models is skipped")
    ap.add_argument("--sweep-docs", default=None,
                    help="also run on a folder generated with N docs per task (comma list; "
                         "'' for none; default: 1/2 of the main run's docs); N >= the main "
                         "run's docs is skipped")
    ap.add_argument("--n-prompts", type=int, default=500)
    args = ap.parse_args(argv)
    if args.phase:
        print(json.dumps(PHASES[args.phase](args)))
        return 0

    sys.path.insert(0, str(HERE))
    from benchinfo import machine_line, print_header

    print_header(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    gen = [sys.executable, str(HERE / "gen_synthetic_logs.py")]
    results: dict = {"generate": {}}
    data = Path(args.data) if args.data else work / f"synth-{args.models}x{args.tasks}x{args.docs}"
    if not (data / "truth.json").exists():
        subprocess.run(gen + [str(data), "--models", str(args.models), "--tasks",
                              str(args.tasks), "--docs", str(args.docs), "--force"], check=True)
    truth = json.loads((data / "truth.json").read_text())
    results["generate"][data.name] = {k: truth[k] for k in ("lines", "bytes", "seconds")}
    sweep = _sweep(args.sweep_models, truth["models"], (0.25, 0.5), "models")
    sweep_docs = _sweep(args.sweep_docs, truth["docs"], (0.5,), "docs")
    prompts = work / f"prompts-{args.n_prompts}.txt"
    write_prompts(prompts, args.n_prompts)
    results["full"] = scenario("full", data, work, None, prompts, args.workers)
    for n in sweep:
        results[f"models={n}"] = scenario(f"m{n}", data, work, n, prompts, args.workers,
                                          baselines=False)
    if sweep:  # growing a store: all models into the store of the largest sweep's models
        n = max(sweep)
        results["grow"] = run_phase("reingest", data=data, store=work / f"store-m{n}",
                                    workers=args.workers)
        print(f"[grow] all {truth['models']} models into the {n}-model store "
              f"{results['grow']}", flush=True)
    for n in sweep_docs:
        small = work / f"synth-{truth['models']}x{truth['tasks']}x{n}"
        if not (small / "truth.json").exists():
            subprocess.run(gen + [str(small), "--models", str(truth["models"]), "--tasks",
                                  str(truth["tasks"]), "--docs", str(n), "--force"], check=True)
        t2 = json.loads((small / "truth.json").read_text())
        results["generate"][small.name] = {k: t2[k] for k in ("lines", "bytes", "seconds")}
        results[f"docs={n}"] = scenario(f"d{n}", small, work, None, prompts, args.workers,
                                        baselines=False)
    print(json.dumps(results, indent=1))
    full = results["full"]
    ing, ib = full["ingest"], full["ingest_baseline"]
    print(f"\nfull: {ing['rows']:,} rows ({truth['models']} models x {truth['tasks']} tasks x "
          f"{truth['docs']} docs; files {truth['bytes'] / GB:.2f} GiB, generated in "
          f"{truth['seconds']} s)")
    print(f"ingest   {ing['wall_s']:7.1f} s  cpu {ing['cpu_s']} s  RSS parent "
          f"{ing['rss_mib']} MiB, largest worker {ing['workers_rss_mib']} MiB  | baseline "
          f"{ib['wall_s']} s -> ratio {ing['wall_s'] / ib['wall_s']:.2f}x the baseline's time")
    re = full["reingest"]
    print(f"re-ingest of the same files (merge, {re['unchanged']:,} identical rows): "
          f"{re['wall_s']} s, RSS parent {re['rss_mib']} MiB")
    print(f"embed    {full['embed']['wall_s']:7.1f} s  ({full['embed']['instances']:,} "
          f"instance texts, static embedder, into the store's cache)")
    if "grow" in results:
        grow = results["grow"]
        print(f"growing a store (ingest all files into the {max(sweep)}-model store): "
              f"{grow['added']:,} added, {grow['unchanged']:,} identical, {grow['wall_s']} s, "
              f"RSS parent {grow['rss_mib']} MiB")
    fit, fb = full["fit"], full["fit_baseline"]
    print(f"fit      {fit['wall_s']:7.1f} s  RSS {fit['rss_mib']} MiB  | numpy core "
          f"(same work, task-level S1 included) {fb['wall_s']} s -> ratio "
          f"{fit['wall_s'] / max(fb['wall_s'], 1e-3):.2f}x the baseline's time")
    if fb.get("compared"):
        print("  baseline vs the saved router, max |difference|: " + ", ".join(
            f"{name} {fb[f'max_diff_{name}']:.1e}"
            + ("" if fb[f"same_nan_{name}"] else " (nan differ)")
            for name in ("g", "u", "p", "accuracy", "task_s1")))
    else:
        print("  baseline not compared with the router (other pool order, or task_k 0)")
    rec = full["recommend"]
    print(f"recommend {rec['prompts']} prompts x {rec['models']} models: api "
          f"{rec['wall_s']} s, CLI {full['recommend_cli_s']} s; Router.recommend "
          f"{rec['router_recommend_s']} s | numpy {rec['baseline_s']} s -> ratio "
          f"{rec['router_recommend_s'] / max(rec['baseline_s'], 1e-4):.2f}x the baseline's "
          f"time (the router does more: S3, task-level S1, switch, posterior)")
    print("\ngrowth (rows, ingest s, ingest RSS MiB, embed s, fit s, fit RSS MiB, "
          "recommend api s, CLI s):")
    for key, r in results.items():
        if key in ("generate", "grow"):
            continue
        print(f"  {key:12s} {r['ingest']['rows']:>11,} {r['ingest']['wall_s']:8.1f} "
              f"{r['ingest']['rss_mib']:6d} {r['embed']['wall_s']:6.1f} "
              f"{r['fit']['wall_s']:7.1f} {r['fit']['rss_mib']:6d} "
              f"{r['recommend']['wall_s']:7.2f} {r['recommend_cli_s']:6.2f}")
    command = (f"python bench/bench_scale.py --data {data} --work {work} --sweep-models "
               f"'{','.join(map(str, sweep))}' --sweep-docs '{','.join(map(str, sweep_docs))}' "
               f"--n-prompts {args.n_prompts}"
               + (f" --workers {args.workers}" if args.workers else ""))
    print(f"\nreproduce: python bench/gen_synthetic_logs.py {data} --models {truth['models']} "
          f"--tasks {truth['tasks']} --docs {truth['docs']} && {command}")
    print(f"machine: {machine_line()}")
    (work / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
