"""Speed and memory of scoring a new task with the router (embeddings given, i.e. cached).

1. A new task of 1,000 prompts against 100,000 reference inputs (dim 384, ~100 tasks) and
   30 models: ``Router.recommend(embeddings=...)`` on a fitted router, against
   (a) one scikit-learn ``KNeighborsClassifier(n_neighbors=5, metric="cosine")`` per model
       (fit + predict_proba; target: the router >= 20x faster), and
   (b) a bare numpy matrix product + argpartition top-k over the same arrays
       (target: the router within 3x).
2. 1,000,000 reference inputs of dim 384: peak memory of scoring, measured in a fresh
   subprocess that loads the saved state and scores (target < 4 GiB); the fitted state is
   set directly there (no leave-one-task-out calibration over 1M inputs).

Synthetic data: unit vectors clustered by task, labels Bernoulli(skill of model on task);
all seeds fixed. Run from the repository root:

    python bench/bench_router.py                      # full run (~6 min on 2 cores)
    python bench/bench_router.py --fit attrs --sk-models 3 --n-big 200000   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

from lm_router_plugin.predictors import KNNPredictor
from lm_router_plugin.router import Router

GIB = 1024 ** 3


def synthetic(n_ref: int, n_tasks: int, n_models: int, dim: int, seed: int):
    """(X (n_ref, dim) float32 unit rows sorted by task, Y (n_ref, M) float32 0/1, task_of)."""
    rng = np.random.default_rng(seed)
    task_of = np.sort(rng.integers(0, n_tasks, n_ref))
    centres = rng.standard_normal((n_tasks, dim), dtype=np.float32)
    spread = rng.uniform(0.5, 2.0, n_tasks).astype(np.float32)  # tasks differ in u
    X = np.empty((n_ref, dim), dtype=np.float32)
    for r0 in range(0, n_ref, 100_000):  # in chunks: no float64 copy of a 1M x 384 array
        rows = slice(r0, min(r0 + 100_000, n_ref))
        block = rng.standard_normal((rows.stop - rows.start, dim), dtype=np.float32)
        block *= spread[task_of[rows], None]
        block += centres[task_of[rows]]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        X[rows] = block
    skill = rng.uniform(0.2, 0.9, (n_tasks, n_models)).astype(np.float32)
    Y = (rng.random((n_ref, n_models), dtype=np.float32) < skill[task_of]).astype(np.float32)
    return X, Y, task_of


def queries(X: np.ndarray, task_of: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A new task: prompts near the inputs of two reference tasks."""
    rng = np.random.default_rng(seed + 1)
    base = X[rng.choice(np.flatnonzero(task_of <= 1), n)]
    Q = base + 0.5 * rng.standard_normal(base.shape, dtype=np.float32) / np.sqrt(X.shape[1])
    return (Q / np.linalg.norm(Q, axis=1, keepdims=True)).astype(np.float32)


def as_table(Y: np.ndarray, task_of: np.ndarray) -> pd.DataFrame:
    """Correctness table whose build_pool order is the row order of Y (zero-padded ids)."""
    n, M = Y.shape
    width = len(str(n))
    ids = np.array([f"{i:0{width}d}" for i in range(n)], dtype=object)
    tasks = np.array([f"task_{t:03d}" for t in range(task_of.max() + 1)], dtype=object)[task_of]
    return pd.DataFrame({
        "task": np.repeat(tasks, M), "instance_id": np.repeat(ids, M),
        "model": np.tile(np.array([f"model_{m:02d}" for m in range(M)], dtype=object), n),
        "input_text": np.repeat(ids, M), "correct": Y.reshape(-1).astype(np.int8)})


def router_from_attributes(X, Y, task_of, seed: int) -> Router:
    """A fitted-looking Router without the leave-one-task-out calibration (synthetic
    calibration pairs); scoring cost does not depend on their values."""
    rng = np.random.default_rng(seed + 2)
    D, M = int(task_of.max()) + 1, Y.shape[1]
    router = Router()
    router.X_, router.Y_, router.task_of_ = X, Y, task_of
    router.models_ = [f"model_{m:02d}" for m in range(M)]
    router.task_names_ = [f"task_{d:03d}" for d in range(D)]
    router.instance_ids_ = [str(i) for i in range(len(X))]
    router.embedder_id_ = "precomputed"
    router.u_ref_ = rng.uniform(0.3, 0.9, D)
    router.p_ref_ = rng.uniform(0.4, 0.9, (D, M))
    router.task_accuracy_ = np.stack([Y[task_of == d].mean(0) for d in range(D)])
    router.model_mean_accuracy_ = router.task_accuracy_.mean(0)
    router.predictor_ = KNNPredictor(n_neighbors=router.k).fit(X, Y)
    return router


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bare_numpy(Q, X, Y, k: int, kappa: int):
    """The floor: one matrix product, argpartition top-max(k, kappa), g and u."""
    kk = max(k, kappa)
    sims = Q @ X.T
    part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
    part_sims = np.take_along_axis(sims, part, 1)
    order = np.argsort(-part_sims, axis=1)
    idx = np.take_along_axis(part, order, 1)
    g = Y[idx[:, :k]].mean(axis=1)
    u = float((1 - np.take_along_axis(part_sims, order, 1)[:, :kappa]).mean())
    return g, u


def sklearn_per_model(Q, X, Y, n_models: int):
    from sklearn.neighbors import KNeighborsClassifier

    out = []
    for m in range(n_models):
        clf = KNeighborsClassifier(n_neighbors=5, metric="cosine").fit(X, Y[:, m].astype(int))
        proba = clf.predict_proba(Q)
        out.append(proba[:, list(clf.classes_).index(1)] if 1 in clf.classes_ else
                   np.zeros(len(Q)))
    return np.stack(out, 1)


def rss_now() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_since_reset() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def child_build(args) -> None:
    """Fresh process 1: write the synthetic 1M-reference state to ``args.state_dir``."""
    X, Y, task_of = synthetic(args.n_big, args.n_tasks, args.n_models, args.dim, args.seed)
    Q = queries(X, task_of, args.n_query, args.seed)
    for name, array in (("X", X), ("Y", Y), ("task_of", task_of), ("Q", Q)):
        np.save(os.path.join(args.state_dir, f"{name}.npy"), array)


def child_score(args) -> None:
    """Fresh process 2: load the state (as Router.load would), then score; the process peak
    RSS is then loading + scoring only, not the synthetic data generation."""
    import tracemalloc

    X, Y, task_of, Q = (np.load(os.path.join(args.state_dir, f"{name}.npy"))
                        for name in ("X", "Y", "task_of", "Q"))
    router = router_from_attributes(X, Y, task_of, args.seed)
    state_bytes = X.nbytes + Y.nbytes + task_of.nbytes + Q.nbytes
    rss_before, peak_before = rss_now(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    was_reset = reset_peak_rss()
    tracemalloc.start()
    t0 = time.perf_counter()
    rec = router.recommend(embeddings=Q)
    seconds = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    scoring_peak = peak_rss_since_reset() if was_reset else None
    print(json.dumps({"state_bytes": state_bytes, "rss_before": rss_before,
                      "peak_before": peak_before * 1024, "peak": peak,
                      "scoring_peak": scoring_peak,
                      "scoring_traced_peak": traced_peak, "seconds": seconds,
                      "choice": rec.choice}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-ref", type=int, default=100_000)
    parser.add_argument("--n-tasks", type=int, default=100)
    parser.add_argument("--n-models", type=int, default=30)
    parser.add_argument("--n-query", type=int, default=1_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--n-big", type=int, default=1_000_000,
                        help="reference inputs of the memory run (0: skip it)")
    parser.add_argument("--fit", choices=["full", "attrs"], default="full",
                        help="full: Router.fit with precomputed embeddings (leave-one-task-out "
                             "calibration over all references); attrs: set the fitted state")
    parser.add_argument("--sk-models", type=int, default=5,
                        help="models timed for the scikit-learn baseline (extrapolated to all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=["build", "score"], help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        (child_build if args.child == "build" else child_score)(args)
        return

    command = "python bench/bench_router.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"# {command.strip()}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"numpy {np.__version__}, python {platform.python_version()}")
    X, Y, task_of = synthetic(args.n_ref, args.n_tasks, args.n_models, args.dim, args.seed)
    Q = queries(X, task_of, args.n_query, args.seed)
    print(f"references {X.shape}, models {Y.shape[1]}, tasks {int(task_of.max()) + 1}, "
          f"new task {Q.shape}")

    t0 = time.perf_counter()
    if args.fit == "full":
        table = as_table(Y, task_of)
        router = Router().fit(table, embeddings=X)
        fit_note = f"Router.fit on {len(table):,} table rows (leave-one-task-out calibration)"
    else:
        router = router_from_attributes(X, Y, task_of, args.seed)
        fit_note = "fitted state set directly (no calibration)"
    fit_seconds = time.perf_counter() - t0
    print(f"fit: {fit_seconds:.1f} s  ({fit_note})")

    router.recommend(embeddings=Q[:10])  # warm-up
    t_router, rec = timed(lambda: router.recommend(embeddings=Q), args.repeats)
    print(f"Router.recommend(embeddings=...): {t_router:.3f} s (median of {args.repeats}); "
          f"choice {rec.choice}, u {rec.u:.3f}")

    t_bare, (g_bare, _) = timed(lambda: bare_numpy(Q, router.X_, router.Y_, router.k,
                                                   router.kappa), args.repeats)
    print(f"bare numpy matmul + argpartition top-{max(router.k, router.kappa)}: "
          f"{t_bare:.3f} s (median of {args.repeats})")

    n_sk = min(args.sk_models, args.n_models)
    t0 = time.perf_counter()
    g_sk = sklearn_per_model(Q, X, Y, n_sk)
    t_sk_part = time.perf_counter() - t0
    t_sk = t_sk_part * args.n_models / n_sk
    how = "measured" if n_sk == args.n_models else \
        f"{t_sk_part:.1f} s for {n_sk} models, extrapolated linearly to {args.n_models}"
    print(f"scikit-learn KNeighborsClassifier(5, cosine) per model: {t_sk:.1f} s ({how})")
    # same neighbours, same g (up to ties): the baselines compute the same thing
    g_router = router.predict_correctness(Q)[0]
    agree = float(np.mean(np.isclose(g_router[:, :n_sk], g_sk)))
    print(f"g agreement with scikit-learn: {agree:.4f}; with bare numpy: "
          f"{float(np.mean(np.isclose(g_router, g_bare))):.4f}")

    speedup = t_sk / t_router
    vs_bare = t_router / t_bare
    print(f"\nspeed-up over scikit-learn per model: {speedup:.1f}x (target >= 20x) "
          f"{'PASS' if speedup >= 20 else 'FAIL'}")
    print(f"router time / bare numpy time: {vs_bare:.2f}x (target <= 3x) "
          f"{'PASS' if vs_bare <= 3 else 'FAIL'}")

    if args.n_big:
        with tempfile.TemporaryDirectory() as state_dir:
            cmd = [sys.executable, os.path.abspath(__file__), "--n-big", str(args.n_big),
                   "--n-tasks", str(args.n_tasks), "--n-models", str(args.n_models),
                   "--n-query", str(args.n_query), "--dim", str(args.dim), "--seed",
                   str(args.seed), "--state-dir", state_dir]
            subprocess.run(cmd + ["--child", "build"], check=True)
            out = subprocess.run(cmd + ["--child", "score"], check=True, capture_output=True,
                                 text=True)
        mem = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"\n{args.n_big:,} references x {args.dim} (fitted state set directly: the "
              f"leave-one-task-out calibration is not run; scoring only), "
              f"{args.n_query} prompts, {args.n_models} models, fresh subprocess:")
        print(f"  arrays of the state: {mem['state_bytes'] / GIB:.2f} GiB; RSS after loading "
              f"them {mem['rss_before'] / GIB:.2f} GiB (peak while loading "
              f"{mem['peak_before'] / GIB:.2f} GiB)")
        print(f"  scoring: {mem['seconds']:.1f} s, allocations traced during scoring peak at "
              f"{mem['scoring_traced_peak'] / GIB:.3f} GiB")
        if mem["scoring_peak"]:
            print(f"  peak RSS while scoring (VmHWM reset after loading): "
                  f"{mem['scoring_peak'] / GIB:.2f} GiB")
        print(f"  process peak RSS, loading + scoring (ru_maxrss): {mem['peak'] / GIB:.2f} GiB "
              f"(target < 4 GiB) {'PASS' if mem['peak'] < 4 * GIB else 'FAIL'}")


if __name__ == "__main__":
    main()
