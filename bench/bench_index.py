"""Neighbour search past brute force: exact numpy vs faiss-flat (exact) vs faiss-ivf.

What it measures (every figure from this run; nothing extrapolated):

1. Crossover (``--crossover``, default 1k..300k reference rows, float32 in memory as a
   fitted router holds them): time of one search of 1,000 queries (k = 19; also 10 queries)
   with index kind ``exact`` (numpy ``topk_cosine``) and ``faiss-flat`` (``faiss_topk``), median
   of ``--repeats``; where faiss-flat becomes faster is the default ``AUTO_FAISS_MIN_REFS``.
2. Large pools (``--sizes``, default 1M and 5M rows): each method in a fresh subprocess over
   the same data, stored as a float16 ``.npy`` memmap (5M x 384 float16 = 3.8 GB; a float32
   copy would be 7.7 GB): build time, time of one 1,000-query search (k = 19), the process's
   peak RSS (VmHWM; it includes the memmap's file pages that were read), recall@19 of IVF
   against the exact result, the ratio against exact numpy brute force from the same run,
   and for IVF the time to save and to read the trained index (persist vs rebuild).

Data: synthetic, seeded: 384-dim unit vectors around n / 100 random cluster centres
(row = centre + 1.25 x N(0, I), normalised), queries drawn the same way (IVF recall at 100k
rows with the default rules, 0.977 in a first run, was close to that on real MiniLM
question embeddings at 12k, 0.970). How hard this is
for IVF depends on the spread (see the note printed with the recall); ``--real DIR`` adds
recall on real embeddings: the ``*.vecs.npy`` shards of an lm-router embedding cache (1,000
rows held out as queries).

    python bench/bench_index.py                                # everything (~30 min, 2 cores)
    python bench/bench_index.py --sizes 1000000 --crossover 10000,100000   # quicker
    python bench/bench_index.py --sizes 0 --real STORE/embeddings/EMBEDDER  # crossover + real
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lm_router_plugin.router.neighbors import (
    AUTO_FAISS_MIN_REFS,
    FaissIVFIndex,
    faiss_topk,
    import_faiss,
    ivf_nlist,
    ivf_nprobe,
    topk_cosine,
)

GIB = 1024 ** 3
K = 19
ROWS_PER_CLUSTER, SPREAD = 100, 1.25


def peak_rss() -> int:
    """Peak RSS of this process in bytes (VmHWM)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def clustered(n: int, dim: int, seed: int, n_clusters: int,
              out: np.ndarray | None = None) -> np.ndarray:
    """(n, dim) unit rows around ``n_clusters`` centres (centres: seed 0; rows: ``seed``),
    written chunk by chunk into ``out`` (any dtype, e.g. a float16 memmap)."""
    centres = np.random.default_rng(0).standard_normal((n_clusters, dim), dtype=np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32) if out is None else out
    for r0 in range(0, n, 100_000):
        m = min(100_000, n - r0)
        block = centres[rng.integers(0, n_clusters, m)]
        block += SPREAD * rng.standard_normal((m, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[r0:r0 + m] = block
    return out


def n_clusters(n: int) -> int:
    """Clusters of about ROWS_PER_CLUSTER rows at every pool size, so the difficulty for IVF
    does not fall as the pool grows (with a fixed number of clusters, a query's 19
    neighbours all sit in its own, ever denser cluster and any nprobe finds them)."""
    return max(1, n // ROWS_PER_CLUSTER)


def timed(fn, repeats: int = 1):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / k."""
    return float(np.mean([len(np.intersect1d(a[a >= 0], b)) / len(b)
                          for a, b in zip(approx, exact)]))


# -- large pools: one method per fresh process -------------------------------------------------
def child(args) -> None:
    refs = np.load(args.data, mmap_mode="r")
    Q = np.load(args.queries)
    out: dict = {"method": args.child, "n": len(refs)}
    if args.child == "exact":
        out["search_s"], (idx, _) = timed(lambda: topk_cosine(Q, refs, K))
        np.save(args.truth, idx)
    elif args.child == "faiss-flat":
        out["search_s"], (idx, _) = timed(lambda: faiss_topk(Q, refs, K))
        truth = np.load(args.truth)
        out["same_as_exact"] = float(np.mean(idx == truth))
        # where the lists differ: how far apart (float64) the two neighbours' similarities are
        rows, cols = np.nonzero(idx != truth)
        q64 = Q[rows].astype(np.float64)
        gap = [abs(q64[i] @ np.asarray(refs[idx[r, c]], np.float64)
                   - q64[i] @ np.asarray(refs[truth[r, c]], np.float64))
               for i, (r, c) in enumerate(zip(rows, cols))]
        out["max_gap"] = float(max(gap, default=0.0))
    else:
        out["build_s"], index = timed(lambda: FaissIVFIndex(refs, args.nlist, None))
        out["nlist"], out["nprobe"] = index.nlist, index.nprobe
        truth = np.load(args.truth)
        for nprobe in sorted({index.nprobe, *args.nprobes}):
            index.set_nprobe(nprobe)
            t, (idx, _) = timed(lambda: index.search(Q, K))
            out.setdefault("probes", []).append({"nprobe": nprobe, "search_s": t,
                                                 "recall": recall(idx, truth)})
        index.set_nprobe(None)
        out["search_s"] = next(p["search_s"] for p in out["probes"]
                               if p["nprobe"] == index.nprobe)
        out["recall"] = next(p["recall"] for p in out["probes"] if p["nprobe"] == index.nprobe)
        out["peak_build_search"] = peak_rss()
        path = Path(args.workdir) / "ivf.faiss"
        out["save_s"], _ = timed(lambda: index.save(path))
        out["file_bytes"] = path.stat().st_size
        del index
        out["read_s"], loaded = timed(lambda: FaissIVFIndex.load(path, refs))
        assert loaded.index.ntotal == len(refs)
        path.unlink()
    out["peak_rss"] = peak_rss()
    print(json.dumps(out))


def large(args, n: int) -> None:
    dim = args.dim
    workdir = Path(args.workdir)
    data, queries, truth = workdir / f"refs_{n}.npy", workdir / "queries.npy", workdir / "truth.npy"
    t0 = time.perf_counter()
    mm = np.lib.format.open_memmap(data, mode="w+", dtype=np.float16, shape=(n, dim))
    clustered(n, dim, seed=1, n_clusters=n_clusters(n), out=mm)
    mm.flush()
    del mm
    np.save(queries, clustered(args.n_query, dim, seed=2, n_clusters=n_clusters(n)))
    print(f"\n## {n:,} reference rows x {dim} (float16 memmap, {data.stat().st_size / GIB:.2f} "
          f"GiB; written in {time.perf_counter() - t0:.0f} s), {args.n_query} queries, k = {K}")
    base = [sys.executable, os.path.abspath(__file__), "--data", str(data), "--queries",
            str(queries), "--truth", str(truth), "--workdir", str(workdir), "--nprobes",
            ",".join(map(str, args.nprobes))] + (["--nlist", str(args.nlist)] if args.nlist
                                                  else [])
    rows = {}
    for method in ("exact", "faiss-flat", "faiss-ivf"):
        res = subprocess.run(base + ["--child", method], capture_output=True, text=True)
        if res.returncode:
            print(f"{method}: failed\n{res.stderr[-2000:]}")
            continue
        rows[method] = json.loads(res.stdout.strip().splitlines()[-1])
    data.unlink()
    ex = rows.get("exact", {}).get("search_s")
    print(f"{'method':<11} {'build s':>8} {'search s':>9} {'vs exact':>9} {'peak RSS GiB':>13} "
          f"{'recall@19':>10}")
    for method, r in rows.items():
        ratio = f"{ex / r['search_s']:.2f}x" if ex else "-"
        rec = r.get("recall", r.get("same_as_exact", 1.0))
        print(f"{method:<11} {r.get('build_s', 0.0):>8.1f} {r['search_s']:>9.2f} {ratio:>9} "
              f"{r['peak_rss'] / GIB:>13.2f} {rec:>10.4f}")
    if "faiss-flat" in rows:
        print(f"faiss-flat: share of neighbour entries equal to exact numpy: "
              f"{rows['faiss-flat']['same_as_exact']:.6f}; where they differ, the two "
              f"neighbours' float64 similarities differ by at most "
              f"{rows['faiss-flat']['max_gap']:.1e} (float32 rounding: near-ties swapped)")
    if "faiss-ivf" in rows:
        r = rows["faiss-ivf"]
        print(f"faiss-ivf: nlist {r['nlist']}, nprobe {r['nprobe']} (rules round(sqrt(n)), "
              f"ceil(nlist/8)); other nprobe:")
        for p in r["probes"]:
            print(f"  nprobe {p['nprobe']:>4}: search {p['search_s']:.2f} s "
                  f"({ex / p['search_s']:.1f}x exact), recall@19 {p['recall']:.4f}"
                  if ex else f"  nprobe {p['nprobe']}: {p['search_s']:.2f} s, {p['recall']:.4f}")
        print(f"faiss-ivf persisted: save {r['save_s']:.1f} s, file {r['file_bytes'] / GIB:.2f} "
              f"GiB, read {r['read_s']:.1f} s (page cache warm) vs build {r['build_s']:.1f} s; "
              f"peak RSS build + search {r['peak_build_search'] / GIB:.2f} GiB")


# -- crossover ------------------------------------------------------------------------------
def crossover(args) -> None:
    print(f"\n## crossover: float32 pool in memory, k = {K}, median of {args.repeats}")
    print(f"{'refs':>8} {'queries':>7} {'exact s':>9} {'faiss-flat s':>13} {'flat/exact':>11} "
          f"{'ivf build s':>12} {'ivf search s':>13} {'ivf recall':>11}")
    faster: dict[int, list[bool]] = {}
    for n in args.crossover:
        X = clustered(n, args.dim, seed=1, n_clusters=n_clusters(n))
        Qall = clustered(args.n_query, args.dim, seed=2, n_clusters=n_clusters(n))
        ivf_build, ivf = timed(lambda: FaissIVFIndex(X))
        for nq in (args.n_query, 10):
            Q = Qall[:nq]
            faiss_topk(Q[:2], X, K)  # warm-up (faiss threads)
            t_ex, (idx, _) = timed(lambda: topk_cosine(Q, X, K), args.repeats)
            t_fl, (idx_fl, _) = timed(lambda: faiss_topk(Q, X, K), args.repeats)
            t_iv, (idx_iv, _) = timed(lambda: ivf.search(Q, K), args.repeats)
            assert np.mean(idx_fl == idx) > 0.999
            print(f"{n:>8,} {nq:>7} {t_ex:>9.4f} {t_fl:>13.4f} {t_fl / t_ex:>11.2f} "
                  f"{ivf_build if nq == args.n_query else float('nan'):>12.2f} {t_iv:>13.4f} "
                  f"{recall(idx_iv, idx):>11.4f}")
            faster.setdefault(n, []).append(t_fl < t_ex)
    first_faster = None
    for n in args.crossover:  # the smallest size from which faiss-flat always won
        if all(faster[n]) and first_faster is None:
            first_faster = n
        elif not all(faster[n]):
            first_faster = None
    print(f"smallest size from which faiss-flat was faster for both {args.n_query} and 10 "
          f"queries at every larger size measured: {first_faster or 'none'} (the default "
          f"index.threshold (--config) is {AUTO_FAISS_MIN_REFS:,})")


def real(folder: str, nprobes: list[int]) -> None:
    files = sorted(glob.glob(os.path.join(folder, "*.vecs.npy")))
    if not files:
        print(f"\n--real {folder}: no *.vecs.npy files")
        return
    X = np.concatenate([np.load(f) for f in files]).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(X))
    Q, R = X[perm[:1000]], X[perm[1000:]]
    exact, _ = topk_cosine(Q, R, K)
    index = FaissIVFIndex(R)
    print(f"\n## real embeddings ({folder}): {len(R):,} references, 1,000 held-out queries")
    for nprobe in sorted({index.nprobe, *nprobes, index.nlist // 4, index.nlist}):
        if 1 <= nprobe <= index.nlist:
            index.set_nprobe(nprobe)
            print(f"  IVF nlist {index.nlist}, nprobe {nprobe}: recall@19 "
                  f"{recall(index.search(Q, K)[0], exact):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ints = lambda s: [int(x) for x in s.split(",") if x.strip() and int(x)]  # noqa: E731
    parser.add_argument("--sizes", type=ints, default=[1_000_000, 5_000_000])
    parser.add_argument("--crossover", type=ints,
                        default=[1_000, 3_000, 10_000, 20_000, 30_000, 100_000, 300_000])
    parser.add_argument("--n-query", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nlist", type=int, default=None)
    parser.add_argument("--nprobes", type=ints, default=[16, 64],
                        help="extra nprobe values to report beside the rule's")
    parser.add_argument("--real", action="append", default=[],
                        help="embedding cache folder (*.vecs.npy), repeatable")
    parser.add_argument("--workdir", default=None, help="where the big arrays go (default "
                        "a temporary folder)")
    for hidden in ("--child", "--data", "--queries", "--truth"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if import_faiss() is None:
        sys.exit("faiss-cpu is not installed: pip install 'lm-router-plugin[faiss]'")
    faiss = import_faiss()
    print("# python bench/bench_index.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}, faiss "
          f"{faiss.__version__} ({faiss.omp_get_max_threads()} threads), python "
          f"{platform.python_version()}")
    print(f"# data: synthetic, n/{ROWS_PER_CLUSTER} clusters, spread {SPREAD} (seeded); IVF rules: "
          f"nlist = round(sqrt(n)) (1M: {ivf_nlist(10**6)}), nprobe = ceil(nlist/8) "
          f"(1M: {ivf_nprobe(ivf_nlist(10**6))})")
    if args.crossover:
        crossover(args)
    for folder in args.real:
        real(folder, args.nprobes)
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        args.workdir = workdir
        for n in args.sizes:
            large(args, n)


if __name__ == "__main__":
    main()
