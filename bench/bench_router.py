"""Speed and memory of the router's kNN against honest baselines doing the same work.

1. A new task of 1,000 prompts against 100,000 reference inputs (dim 384, 100 tasks) and
   30 models, embeddings given (i.e. cached). The router is fitted for real with
   ``Router(...).fit(table, embeddings=X)`` (timed: it includes the leave-one-task-out
   calibration that ``recommend`` needs) and ``Router.route(embeddings=Q)`` - per prompt, the
   k = 5 nearest references, the vote g_m = mean label, argmax_m (g_m + 0.01 x mean accuracy)
   - is compared with three baselines computing exactly that, each fitted and timed the same
   way, and checked to give the same choices:
   (a) scikit-learn ``NearestNeighbors(algorithm="brute", metric="cosine")``: one shared
       exact search for all models, then the per-model vote;
   (b) faiss-cpu ``IndexFlatIP`` (exact inner product on the unit vectors) + the vote;
       skipped with a message when faiss is not installed (``pip install faiss-cpu``);
   (c) bare numpy ``Q @ X.T`` + ``argpartition`` + the vote (the floor).
   ``Router.recommend(embeddings=Q)`` (top-19 search for u, S1-S3, p and the fallback test)
   is timed too. Nothing is extrapolated: every figure is a measured median of --repeats.
2. Memory at 1,000,000 references of dim 384, 30 models: a real fit there takes far longer
   (the calibration searches every reference against all others: 100x the pairs), so the largest
   real fit is the one of part 1 (its peak RSS is measured). For 1M, a router folder with
   every array at the shape and dtype a real fit gives (values synthetic, not calibrated;
   the default ``Router(task_k=200)``'s task-level S1 included) is written with
   ``persistence.save_router``; a fresh subprocess then runs ``load_router``
   (everything it loads and rebuilds) + ``recommend`` + ``route`` on 1,000 prompts; its
   peak RSS (VmHWM) is reported.

Synthetic data: unit vectors clustered by task, labels Bernoulli(skill of model on task);
all seeds fixed. Run from the repository root:

    python bench/bench_router.py                      # full run (~2 min on 2 cores, 2026-12-07)
    python bench/bench_router.py --n-ref 20000 --n-big 100000   # quick look
    python bench/bench_router.py --index exact    # the router's search without faiss

``--index`` is the router's neighbour search (``Router(index=...)``, default auto: faiss's
exact kernels from 30,000 references when faiss-cpu is installed); bench/bench_index.py
measures the search itself at 1M-5M references.
"""

from __future__ import annotations

import argparse
import importlib
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
from pathlib import Path

import numpy as np
import pandas as pd

from lm_router_plugin.router.calibration import Calibration
from lm_router_plugin.router.persistence import _CALIBRATION, load_router, save_router
from lm_router_plugin.router.router import Router

GIB = 1024 ** 3
TIE = 0.01  # the router's tie rule: + 0.01 x a model's mean reference accuracy


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


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def mean_accuracy(Y: np.ndarray, task_of: np.ndarray) -> np.ndarray:
    """(M,) mean over tasks of each model's task accuracy (the router's tie-break term)."""
    return np.stack([Y[task_of == d].mean(0) for d in np.unique(task_of)]).mean(0)


def vote(idx: np.ndarray, Y: np.ndarray, tie: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(g (n, M), choice (n,)) from neighbour rows idx (n, k): the per-model kNN vote."""
    g = Y[idx].mean(axis=1)
    return g, np.argmax(g + TIE * tie[None, :], axis=1)


class SklearnBaseline:
    """One shared exact scikit-learn search (brute force, cosine) + the per-model vote."""

    name = "scikit-learn NearestNeighbors(brute, cosine) + vote"
    module = "sklearn.neighbors"

    def fit(self, X, Y, task_of, k):
        from sklearn.neighbors import NearestNeighbors

        self.nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="cosine").fit(X)
        self.Y, self.tie = Y, mean_accuracy(Y, task_of)
        return self

    def route(self, Q):
        return vote(self.nn.kneighbors(Q, return_distance=False), self.Y, self.tie)


class FaissBaseline:
    """faiss IndexFlatIP (exact inner product = cosine on unit vectors) + the vote."""

    name = "faiss-cpu IndexFlatIP + vote"
    module = "faiss"

    def fit(self, X, Y, task_of, k):
        import faiss

        self.index = faiss.IndexFlatIP(X.shape[1])
        self.index.add(np.ascontiguousarray(X, dtype=np.float32))
        self.k, self.Y, self.tie = k, Y, mean_accuracy(Y, task_of)
        return self

    def route(self, Q):
        _, idx = self.index.search(np.ascontiguousarray(Q, dtype=np.float32), self.k)
        return vote(idx, self.Y, self.tie)


class NumpyBaseline:
    """Bare numpy: one matrix product, argpartition top-k, sort, vote (the floor)."""

    name = "numpy Q @ X.T + argpartition + vote"
    module = "numpy"

    def fit(self, X, Y, task_of, k):
        self.X, self.Y, self.k, self.tie = X, Y, k, mean_accuracy(Y, task_of)
        return self

    def route(self, Q):
        sims = Q @ self.X.T
        part = np.argpartition(-sims, self.k - 1, axis=1)[:, :self.k]
        order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1, kind="stable")
        return vote(np.take_along_axis(part, order, 1), self.Y, self.tie)


def peak_rss() -> int:
    """Peak RSS of this process in bytes (VmHWM; since the last reset_peak_rss)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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


def child_save(args) -> None:
    """Fresh process 1: write a 1M-reference router folder with save_router. Every array
    has the shape and dtype of a real fit (checked against a small real fit); the values
    of the calibration arrays are synthetic (a real fit at 1M takes hours)."""
    X, Y, task_of = synthetic(args.n_big, args.n_tasks, args.n_models, args.dim, args.seed)
    Xs, Ys, ts = synthetic(2000, 10, args.n_models, args.dim, args.seed)
    small = Router().fit(as_table(Ys, ts), embeddings=Xs)
    router = Router(index=args.index)
    rng = np.random.default_rng(args.seed + 2)
    n, D, M = len(X), int(task_of.max()) + 1, Y.shape[1]
    task_acc = np.stack([Y[task_of == d].mean(0) for d in range(D)]).astype(np.float64)
    router.X_, router.Y_, router.task_of_ = X, Y, task_of.astype(np.int64)
    router.loo_g_ = rng.random((n, M))
    router.calibration_ = Calibration(
        u=rng.uniform(0.3, 0.9, D), p=rng.uniform(0.4, 0.9, (D, M)), accuracy=task_acc,
        included=np.ones(D, dtype=bool), mean_accuracy=task_acc.mean(0),
        s1=rng.uniform(0.3, 0.9, (D, M)), residual_cov=np.eye(M) * 0.2,
        s2=rng.uniform(0.0, 1.0, (D, M)), n=np.bincount(task_of, minlength=D).astype(np.int64),
        # the task-level S1 (Router(task_k=200), the default): (H, D, M) per bandwidth
        task_s1=rng.uniform(0.3, 0.9, (len(small.calibration_.task_bandwidths), D, M)),
        task_bandwidths=small.calibration_.task_bandwidths.copy())
    router.models_ = [f"model_{m:02d}" for m in range(M)]
    router.task_names_ = [f"task_{d:03d}" for d in range(D)]
    router.instance_ids_ = [f"{i:07d}" for i in range(n)]
    router.embedder_id_ = "precomputed"
    for name in ("X_", "Y_", "task_of_", "loo_g_"):  # same layout as a real fit, only bigger
        real, ours = getattr(small, name), getattr(router, name)
        assert real.dtype == ours.dtype and real.shape[1:] == ours.shape[1:], name
    for name in _CALIBRATION:  # every field save_router writes
        real, ours = getattr(small.calibration_, name), getattr(router.calibration_, name)
        assert real is not None and ours is not None, name  # task_k > 0: all are set
        assert real.dtype == ours.dtype and real.ndim == ours.ndim, name
    assert router.task_k == small.task_k > 0  # recommend computes the task-level S1 too
    save_router(router, Path(args.state_dir) / "router")
    np.save(Path(args.state_dir) / "Q.npy", queries(X, task_of, args.n_query, args.seed))


def child_load(args) -> None:
    """Fresh process 2: load_router (arrays, state, the rebuilt predictor) + recommend +
    route; the process peak RSS is loading + scoring only."""
    Q = np.load(Path(args.state_dir) / "Q.npy")
    t0 = time.perf_counter()
    router = load_router(Path(args.state_dir) / "router")
    t_load = time.perf_counter() - t0
    rss_loaded, peak_loaded = rss_now(), peak_rss()
    t0 = time.perf_counter()
    rec = router.recommend(embeddings=Q)
    t_rec = time.perf_counter() - t0
    t0 = time.perf_counter()
    router.route(embeddings=Q)
    t_route = time.perf_counter() - t0
    print(json.dumps({"load_s": t_load, "rss_loaded": rss_loaded, "peak_loaded": peak_loaded,
                      "recommend_s": t_rec, "route_s": t_route, "peak": peak_rss(),
                      "choice": rec.choice,
                      "arrays_bytes": sum(getattr(router, n).nbytes
                                          for n in ("X_", "Y_", "task_of_", "loo_g_"))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-ref", type=int, default=100_000)
    parser.add_argument("--n-tasks", type=int, default=100)
    parser.add_argument("--n-models", type=int, default=30)
    parser.add_argument("--n-query", type=int, default=1_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--n-big", type=int, default=1_000_000,
                        help="references of the load_router memory run (0: skip it)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index", default="auto",
                        choices=["auto", "exact", "faiss-flat", "faiss-ivf"],
                        help="the router's neighbour search (Router(index=...))")
    parser.add_argument("--child", choices=["save", "load"], help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        (child_save if args.child == "save" else child_load)(args)
        return

    command = "python bench/bench_router.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"# {command.strip()}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"numpy {np.__version__}, python {platform.python_version()}")
    X, Y, task_of = synthetic(args.n_ref, args.n_tasks, args.n_models, args.dim, args.seed)
    Q = queries(X, task_of, args.n_query, args.seed)
    table = as_table(Y, task_of)
    print(f"references {X.shape}, models {Y.shape[1]}, tasks {int(task_of.max()) + 1}, "
          f"new task {Q.shape}, table {len(table):,} rows")

    rss_before = rss_now()
    was_reset = reset_peak_rss()
    t0 = time.perf_counter()
    router = Router(index=args.index).fit(table, embeddings=X)
    t_fit = time.perf_counter() - t0
    fit_peak = peak_rss() if was_reset else None
    assert np.array_equal(router.Y_, Y) and np.array_equal(router.X_, X)  # same row order
    print(f"\nRouter.fit: {t_fit:.1f} s (includes the leave-one-task-out calibration)"
          + (f"; peak RSS during the fit {fit_peak / GIB:.2f} GiB (RSS before "
             f"{rss_before / GIB:.2f} GiB: the data and the table)" if fit_peak else ""))

    router.route(embeddings=Q[:10])  # warm-up
    t_route, decisions = timed(lambda: router.route(embeddings=Q), args.repeats)
    t_rec, rec = timed(lambda: router.recommend(embeddings=Q), args.repeats)
    choice = np.array([router.models_.index(d.model) for d in decisions])
    g_router = np.array([[d.g[m] for m in router.models_] for d in decisions])
    print(f"neighbour search: {router.neighbor_index().describe()}")
    print(f"Router.route(embeddings=Q)     : {t_route:.3f} s (median of {args.repeats})")
    print(f"Router.recommend(embeddings=Q) : {t_rec:.3f} s (median of {args.repeats}); "
          f"choice {rec.choice}")

    rows = []
    for baseline in (SklearnBaseline(), FaissBaseline(), NumpyBaseline()):
        try:
            importlib.import_module(baseline.module)  # not timed: imports are one-off
        except ImportError:
            print(f"{baseline.name}: skipped ({baseline.module} is not installed; "
                  "pip install faiss-cpu, or pip install -e '.[faiss]')")
            continue
        t0 = time.perf_counter()
        baseline.fit(X, Y, task_of, router.k)
        t_bfit = time.perf_counter() - t0
        baseline.route(Q[:10])  # warm-up
        t_b, (g_b, choice_b) = timed(lambda: baseline.route(Q), args.repeats)
        same_g = float(np.mean(np.isclose(g_b, g_router)))
        same_choice = float(np.mean(choice_b == choice))
        rows.append((baseline.name, t_bfit, t_b, same_g, same_choice))
        print(f"{baseline.name}: fit {t_bfit:.2f} s, route {t_b:.3f} s (median of "
              f"{args.repeats}); same g {same_g:.4f}, same choice {same_choice:.4f}")
    print("\nroute time ratio, baseline / router (> 1: the router is faster):")
    for name, _, t_b, _, _ in rows:
        print(f"  {name:<55} {t_b / t_route:6.2f}x")

    if args.n_big:
        with tempfile.TemporaryDirectory() as state_dir:
            cmd = [sys.executable, os.path.abspath(__file__), "--n-big", str(args.n_big),
                   "--n-tasks", str(args.n_tasks), "--n-models", str(args.n_models),
                   "--n-query", str(args.n_query), "--dim", str(args.dim), "--seed",
                   str(args.seed), "--state-dir", state_dir, "--index", args.index]
            subprocess.run(cmd + ["--child", "save"], check=True)
            size = sum(f.stat().st_size for f in Path(state_dir, "router").iterdir())
            out = subprocess.run(cmd + ["--child", "load"], check=True, capture_output=True,
                                 text=True)
        mem = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"\n{args.n_big:,} references x {args.dim}, {args.n_models} models: a router "
              f"folder of {size / GIB:.2f} GiB (save_router; arrays {mem['arrays_bytes'] / GIB:.2f}"
              f" GiB, shapes of a real fit, calibration values synthetic), fresh subprocess:")
        print(f"  load_router: {mem['load_s']:.1f} s, RSS after it {mem['rss_loaded'] / GIB:.2f} "
              f"GiB (peak while loading {mem['peak_loaded'] / GIB:.2f} GiB)")
        print(f"  recommend {mem['recommend_s']:.1f} s, route {mem['route_s']:.1f} s on "
              f"{args.n_query} prompts")
        print(f"  process peak RSS (VmHWM), load + recommend + route: {mem['peak'] / GIB:.2f} GiB"
              f" (target < 4 GiB) {'PASS' if mem['peak'] < 4 * GIB else 'FAIL'}")


if __name__ == "__main__":
    main()
