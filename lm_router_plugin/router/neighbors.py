"""Exact cosine top-k search over L2-normalised embeddings, chunked to bound memory.

    >>> idx, sim = topk_cosine(queries, refs, k=19)          # (n_q, 19) each, best first
    >>> idx, sim = topk_cosine(X, X, k=19, query_groups=task_of_x, ref_groups=task_of_x)
    ...     # leave-one-task-out: neighbours of each input among the *other* tasks' inputs

One search serves every model (neighbours do not depend on the model) and every score.

Past brute force (:func:`build_index`): a fitted router searches its reference pool through a
:class:`NeighborIndex` of one of these kinds (``Router(index=...)``, ``--index``):

- ``exact``: :func:`topk_cosine` (numpy, chunked; float16 and memmaps work).
- ``faiss-flat``: exact too, with faiss-cpu's BLAS + SIMD top-k kernels (``faiss.knn``) on the
  router's own array, chunked (no copy of the pool, nothing to build or store). Same
  neighbours as ``exact`` and the same tie rule (lower row first); similarities can differ in
  the last float32 bit, so two references within ~1e-7 of each other can swap places.
- ``faiss-ivf``: approximate, an ``IndexIVFFlat`` (inner product) trained with a fixed seed
  on a seeded sample; ``nlist``/``nprobe`` from :func:`ivf_nlist`/:func:`ivf_nprobe` unless
  given. It changes results (recall < 1), so it is part of the fitted router's cache key and
  is saved with the router (building it costs minutes at millions of rows, reading it
  seconds: ``bench/bench_index.py``).
- ``auto`` (default): ``exact`` below ``AUTO_FAISS_MIN_REFS`` reference rows, ``faiss-flat``
  from there when faiss is installed (else ``exact`` with a logged note). Never approximate.
"""

from __future__ import annotations

import logging
import math
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import FaissNotInstalledError, LMRouterError

logger = logging.getLogger(__name__)

INDEX_KINDS = ("auto", "exact", "faiss-flat", "faiss-ivf")
# Reference rows from which ``auto`` uses faiss-flat, measured by bench/bench_index.py on 2
# loaded cores: for 1,000 queries (k = 19) faiss-flat took 0.5-0.75x the time of numpy at
# every size (1k-300k); for 10 queries it was slower up to 20k (1.3-2.3x, a few ms: faiss
# skips BLAS below 20 queries) and 0.9x, 1.0x, 0.7x at 30k, 100k, 300k. The fit's
# leave-one-task-out search (every row a query) gains like the 1,000-query case.
AUTO_FAISS_MIN_REFS = 30_000
FAISS_INSTALL = "pip install 'lm-router-plugin[faiss]'"
IVF_SEED = 0  # k-means initialisation and training sample of faiss-ivf
# faiss-flat searches the pool in chunks of this many rows (a float32 copy of a float16 or
# memmapped chunk is 100k x 384 x 4 B = 154 MB); float32 in-memory pools go in whole.
FAISS_REF_BLOCK = 100_000
TIE_SLACK = 8  # extra neighbours fetched from faiss so ties at the k-th place are resolved
# The fit's leave-one-task-out search runs on faiss's kernels (faiss_topk_grouped: two small
# searches per task) only when tasks average this many rows. Measured at 30,000 rows on 2
# cores (numpy masked search vs faiss_topk_grouped): tasks of 10 rows 28 s vs 120 s, 100 rows
# 46 s vs 77 s, 1,000 rows 37 s vs 29 s.
FAISS_GROUPED_MIN_ROWS = 1000

# A (query_block x ref_block) float32 similarity block is 512 * 32768 * 4 B = 64 MiB.
QUERY_BLOCK = 512
REF_BLOCK = 32768


def in_groups(groups: np.ndarray, exclude) -> np.ndarray:
    """(n,) bool: which entries of ``groups`` are among the values ``exclude`` (compared as
    they are: a string is never cut to the groups' string width, so "bbx" is not "bb")."""
    groups, exclude = np.asarray(groups), list(exclude)
    if not exclude:
        return np.zeros(groups.shape, dtype=bool)
    # as objects the values compare whole (a fixed-width string array would cut them)
    return np.isin(groups, np.asarray(exclude, dtype=object if groups.dtype.kind in "USO"
                                      else None))


def identical_rows(refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(members, canon), each (m,): the rows of ``refs`` (n, dim) that have an identical
    twin (the same embedding: the same text in two places) and, for each, the lowest row of
    its set. Rows are compared by a prefix of their bytes first, then whole."""
    R = np.asarray(refs)
    none = np.zeros(0, dtype=np.int64)
    if len(R) < 2 or R.ndim != 2 or R.shape[1] == 0:
        return none, none

    def keys(rows: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(rows)
        return rows.view(np.dtype((np.void, rows.itemsize * rows.shape[1])))[:, 0]

    _, inverse, count = np.unique(keys(R[:, :8]), return_inverse=True, return_counts=True)
    cand = np.flatnonzero(count[inverse.ravel()] > 1)
    if not len(cand):
        return none, none
    _, first, inverse, count = np.unique(keys(R[cand]), return_index=True,
                                         return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    twin = count[inverse] > 1
    return cand[twin], cand[first[inverse[twin]]]


def twin_similarity(queries: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """(q, r) float32 similarities of ``queries`` (q, dim) to twin rows ``refs`` (r, dim),
    computed in float64 and rounded once: the same value whatever the product's layout
    (numpy's blocks, faiss's kernels), so every search gives identical rows one value."""
    q64 = np.asarray(queries, dtype=np.float64)
    return (q64 @ np.asarray(refs, dtype=np.float64).T).astype(np.float32)


def _mask_of(twins: tuple[np.ndarray, np.ndarray], n: int) -> np.ndarray:
    """(n,) bool: the rows of :func:`identical_rows`' ``twins`` (members, canon)."""
    mask = np.zeros(n, dtype=bool)
    mask[twins[0]] = True
    return mask


def _equalise_twins(sim: np.ndarray, queries: np.ndarray, refs: np.ndarray,
                    twins: tuple[np.ndarray, np.ndarray], r0: int) -> None:
    """Give identical reference rows the same similarity, in place: ``sim`` (qb, rb) holds
    ``queries`` (qb, dim) against refs[r0:r0 + rb]. A matrix product may round the same dot
    product differently by where a column sits (the last float32 bit), so twins would not tie
    and which one is kept at the k-th place would depend on the pool's layout (a refit
    without one task could keep the other twin); here each set's value comes from
    :func:`twin_similarity` of one row, and the tie goes to the lower row."""
    members, canon = twins
    sel = (members >= r0) & (members < r0 + sim.shape[1])
    if not sel.any():
        return
    unique, inverse = np.unique(canon[sel], return_inverse=True)
    values = twin_similarity(queries, refs[unique])  # (qb, sets)
    sim[:, members[sel] - r0] = values[:, inverse.ravel()]


def topk_cosine(queries: np.ndarray, refs: np.ndarray, k: int, *,
                query_groups: np.ndarray | None = None, ref_groups: np.ndarray | None = None,
                twins: tuple[np.ndarray, np.ndarray] | None = None,
                ) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar reference rows of each query row.

    Args:
        queries: (n_q, dim) unit-norm embeddings.
        refs: (n_r, dim) unit-norm embeddings (float32 or float16; may be a memmap).
        k: neighbours per query (capped at the number of eligible references).
        query_groups, ref_groups: (n_q,), (n_r,) integer group ids; a reference of the same
            group as the query is never a neighbour (leave-one-group-out).
        twins: :func:`identical_rows` of ``refs`` if already known (None: found here).

    Returns:
        (indices, similarities), each (n_q, k): reference row numbers and cosine similarities,
        sorted by decreasing similarity (ties: lower row number first; identical reference
        rows get the same similarity, so the lower is kept first). Where fewer than k
        references are eligible the tail holds index -1 and similarity -inf.
    """
    queries = np.asarray(queries, dtype=np.float32)
    n_q, n_r = len(queries), len(refs)
    twins = identical_rows(refs) if twins is None else twins
    k = max(1, min(k, n_r))
    best_sim = np.full((n_q, k), -np.inf, dtype=np.float32)
    best_idx = np.full((n_q, k), -1, dtype=np.int64)
    masked = query_groups is not None and ref_groups is not None
    for r0 in range(0, n_r, REF_BLOCK):
        ref_block = np.asarray(refs[r0:r0 + REF_BLOCK], dtype=np.float32)
        ref_ids = np.arange(r0, r0 + len(ref_block))
        for q0 in range(0, n_q, QUERY_BLOCK):
            q1 = min(q0 + QUERY_BLOCK, n_q)
            sim = queries[q0:q1] @ ref_block.T  # (qb, rb)
            _equalise_twins(sim, queries[q0:q1], refs, twins, r0)
            if masked:
                same = query_groups[q0:q1, None] == ref_groups[None, r0:r0 + len(ref_block)]
                sim[same] = -np.inf
            kk = min(k, sim.shape[1])
            part = _top_columns(sim, kk)
            cand_sim = np.concatenate([best_sim[q0:q1], np.take_along_axis(sim, part, 1)], 1)
            cand_idx = np.concatenate([best_idx[q0:q1], ref_ids[part]], 1)
            best_sim[q0:q1], best_idx[q0:q1] = _select_top(cand_sim, cand_idx, k)
    best_idx[~np.isfinite(best_sim)] = -1
    return best_idx, best_sim


def _top_columns(sim: np.ndarray, k: int) -> np.ndarray:
    """Column numbers of the k largest values per row, ties at the k-th value resolved to the
    lower column (argpartition alone picks an arbitrary subset of tied columns)."""
    part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(sim, part, 1).min(axis=1)
    tied = ((sim >= kth[:, None]).sum(axis=1) > k) & np.isfinite(kth)
    for row in np.flatnonzero(tied):  # rare: exact duplicates of the k-th similarity
        part[row] = np.lexsort((np.arange(sim.shape[1]), -sim[row]))[:k]
    return part


def _select_top(sim: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k candidates of highest similarity, ties broken by lower index."""
    # -1 placeholders (no candidate yet) sort after every real row number.
    tie = np.where(idx < 0, np.iinfo(np.int64).max, idx)
    order = np.lexsort((tie, -sim), axis=1)[:, :k]
    return np.take_along_axis(sim, order, 1), np.take_along_axis(idx, order, 1)


def select_top_many(sim: np.ndarray, idx: np.ndarray, k: int, slack: int = 8
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``_select_top`` for many candidates per row: argpartition keeps the k + slack largest,
    which are sorted exactly; rows with more ties at the k-th value than that fall back to
    the full sort (so the result is always identical to ``_select_top``)."""
    n_cols = sim.shape[1]
    keep = k + slack
    if keep >= n_cols:
        return _select_top(sim, idx, k)
    part = np.argpartition(-sim, keep - 1, axis=1)[:, :keep]
    cand_sim = np.take_along_axis(sim, part, 1)
    cand_idx = np.take_along_axis(idx, part, 1)
    best_sim, best_idx = _select_top(cand_sim, cand_idx, k)
    # exact unless values equal to the k-th best were cut off by the partition
    kth = best_sim[:, -1]
    cut = (sim >= kth[:, None]).sum(axis=1) > (cand_sim >= kth[:, None]).sum(axis=1)
    cut &= np.isfinite(kth)
    for row in np.flatnonzero(cut):
        best_sim[row], best_idx[row] = _select_top(sim[row:row + 1], idx[row:row + 1], k)
    return best_sim, best_idx


def merge_topk(idx_a: np.ndarray, sim_a: np.ndarray, idx_b: np.ndarray, sim_b: np.ndarray,
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge two neighbour lists of the same queries (e.g. reference pool + in-task labels)."""
    sim, idx = _select_top(np.concatenate([sim_a, sim_b], 1),
                           np.concatenate([idx_a, idx_b], 1), k)
    return idx, sim


class GroupedNeighbors:
    """Leave-group-out neighbour lists that can also leave out *any further* groups exactly.

    Built once over the reference rows X (n, dim) with groups (n,) (the tasks). ``query(rows,
    exclude)`` gives each row's K nearest references outside its own group and outside the
    groups in ``exclude`` -- exactly what a neighbour search over a pool without those groups
    would return (same similarities, ties to the lower row), without searching again.

    How: every row keeps its top-K within *each* group, (n, G, K) arrays (memory n G K 12
    bytes: 12,000 rows x 91 tasks x 19 = 250 MB). Rows whose plain leave-own-group list holds
    no excluded group keep that list; the others merge their per-group lists.
    ``per_group=False`` keeps only the leave-own-group lists (what fitting needs); with
    ``backend="faiss"`` they are found with faiss's exact kernels (same neighbours).
    """

    def __init__(self, X: np.ndarray, groups: np.ndarray, K: int, *, per_group: bool = True,
                 backend: str = "numpy"):
        X = np.asarray(X, dtype=np.float32)
        self.groups = np.asarray(groups)
        self.codes, self.group_code = np.unique(self.groups, return_inverse=True)
        self.K = K = max(1, min(K, len(X)))
        self.per_group_idx = self.per_group_sim = None
        if not per_group:
            # backend "faiss": the same exact search on faiss's kernels (faiss_topk_grouped)
            if backend == "faiss":
                self.idx, self.sim = faiss_topk_grouped(X, self.group_code, K)
            else:
                self.idx, self.sim = topk_cosine(X, X, K, query_groups=self.group_code,
                                                 ref_groups=self.group_code)
            return
        G = len(self.codes)
        members = [np.flatnonzero(self.group_code == g) for g in range(G)]
        idx = np.full((len(X), G, K), -1, dtype=np.int64)
        sim = np.full((len(X), G, K), -np.inf, dtype=np.float32)
        twins = identical_rows(X)
        for q0 in range(0, len(X), QUERY_BLOCK):
            block = X[q0:q0 + QUERY_BLOCK] @ X.T  # (qb, n)
            _equalise_twins(block, X[q0:q0 + QUERY_BLOCK], X, twins, 0)
            for g, cols in enumerate(members):
                sub = block[:, cols]
                kk = min(K, len(cols))
                part = _top_columns(sub, kk)
                s, i = _select_top(np.take_along_axis(sub, part, 1), cols[part], kk)
                sim[q0:q0 + len(block), g, :kk], idx[q0:q0 + len(block), g, :kk] = s, i
        self.per_group_idx, self.per_group_sim = idx, sim
        # A deeper leave-own-group list (2K): leaving out one more group usually removes
        # fewer than K of its entries, and then the first K left are exact.
        self.deep_idx, self.deep_sim = self._merge(np.arange(len(X)), np.zeros(G, dtype=bool),
                                                   min(2 * K, G * K))
        self.idx, self.sim = self.deep_idx[:, :K].copy(), self.deep_sim[:, :K].copy()

    def _merge(self, rows: np.ndarray, excluded: np.ndarray, k: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (default K) of ``rows`` over the per-group lists of groups not excluded (nor
        own)."""
        sim = self.per_group_sim[rows].copy()  # (r, G, K)
        sim[:, excluded, :] = -np.inf
        sim[np.arange(len(rows)), self.group_code[rows], :] = -np.inf
        n_rows = len(rows)
        best_sim, best_idx = select_top_many(sim.reshape(n_rows, -1),
                                             self.per_group_idx[rows].reshape(n_rows, -1),
                                             self.K if k is None else k)
        best_idx = np.where(np.isfinite(best_sim), best_idx, -1)
        return best_idx, best_sim

    def exclusion_mask(self, exclude) -> np.ndarray:
        """(G,) bool of the group codes of the group values in ``exclude``."""
        return in_groups(self.codes, exclude)

    def query(self, rows: np.ndarray, exclude=()) -> tuple[np.ndarray, np.ndarray]:
        """(idx, sim), each (len(rows), K): neighbours of reference rows ``rows`` outside their
        own group and the groups ``exclude`` (group values), sorted, -1/-inf padded."""
        rows = np.asarray(rows, dtype=np.int64)
        idx, sim = self.idx[rows].copy(), self.sim[rows].copy()
        excluded = self.exclusion_mask(exclude)
        if not excluded.any():
            return idx, sim
        if self.per_group_idx is None:
            raise ValueError("GroupedNeighbors(per_group=False) cannot leave out more groups")
        valid = idx >= 0
        hit = np.flatnonzero((valid & excluded[self.group_code[np.maximum(idx, 0)]]).any(axis=1))
        if len(hit) == 0:
            return idx, sim
        deep_idx, deep_sim = self.deep_idx[rows[hit]], self.deep_sim[rows[hit]]
        keep = (deep_idx >= 0) & ~excluded[self.group_code[np.maximum(deep_idx, 0)]]
        # the deep list is sorted: its first K kept entries are the answer when K are kept
        order = np.argsort(~keep, axis=1, kind="stable")[:, :self.K]
        enough = keep.sum(axis=1) >= self.K
        idx[hit[enough]] = np.take_along_axis(deep_idx, order, 1)[enough]
        sim[hit[enough]] = np.take_along_axis(deep_sim, order, 1)[enough]
        short = hit[~enough]
        if len(short):
            idx[short], sim[short] = self._merge(rows[short], excluded)
        return idx, sim


# ---------------------------------------------------------------------------------------
# Index layer: exact numpy, exact faiss, approximate faiss IVF.

def import_faiss(kind: str | None = None):
    """The faiss module, or None when it is not installed (``kind`` given: raise a
    FaissNotInstalledError naming the install command)."""
    try:
        import faiss
    except ImportError:
        if kind is None:
            return None
        raise FaissNotInstalledError(
            f"index.kind {kind} needs faiss-cpu, which is not installed: {FAISS_INSTALL} "
            "(or set index.kind: exact in --config)") from None
    return faiss


def check_index_kind(kind: str) -> None:
    """Raise for an unknown kind, or for a faiss kind without faiss (cheap; no search)."""
    if kind not in INDEX_KINDS:
        from ..errors import UnknownNameError
        from ..registry import unknown_name_message

        raise UnknownNameError(unknown_name_message("index", kind, list(INDEX_KINDS)))
    if kind.startswith("faiss"):
        import_faiss(kind)


def resolve_index_kind(kind: str, n_ref: int, threshold: int = AUTO_FAISS_MIN_REFS) -> str:
    """The concrete kind ("exact", "faiss-flat", "faiss-ivf") for ``n_ref`` reference rows."""
    check_index_kind(kind)
    if kind != "auto":
        return kind
    if n_ref < threshold:
        return "exact"
    if import_faiss() is None:
        logger.info("%d reference inputs: faiss-cpu is not installed, so the neighbour search "
                    "stays numpy brute force (exact; faster with %s)", n_ref, FAISS_INSTALL)
        return "exact"
    return "faiss-flat"


def ivf_nlist(n_ref: int) -> int:
    """Rule for the number of IVF lists: round(sqrt(n)) (1,000 at 1M rows, 2,236 at 5M).
    Build cost (assigning every row to a list) grows with n x nlist, search cost per query
    with nlist + nprobe x n / nlist; sqrt(n) keeps the build within minutes on 2 cores."""
    return max(1, int(round(math.sqrt(max(n_ref, 1)))))


def ivf_nprobe(nlist: int) -> int:
    """Rule for the lists probed per query: ceil(nlist / 8), i.e. about 1/8 of the pool is
    scanned. On real MiniLM question embeddings (12k RouterDC / MMLU-Pro inputs) that gave
    recall@19 of 0.93 (nlist / 4: 0.97); see bench/bench_index.py for larger pools."""
    return max(1, math.ceil(nlist / 8))


def _tie_fix(sim: np.ndarray, idx: np.ndarray, k: int, complete: bool
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort faiss candidates (n, k + slack) by (-sim, row) and keep k. Returns (idx, sim,
    unsure): ``unsure`` marks rows whose k-th similarity equals the last candidate's, so an
    equally similar lower row may lie beyond what faiss returned (``complete``: the
    candidates are all eligible rows, never unsure)."""
    sim = np.where(idx < 0, -np.inf, sim).astype(np.float32)
    best_sim, best_idx = _select_top(sim, idx.astype(np.int64), k)
    if complete:
        unsure = np.zeros(len(sim), dtype=bool)
    else:
        unsure = np.isfinite(best_sim[:, -1]) & (sim.min(axis=1) >= best_sim[:, -1])
    best_idx = np.where(np.isfinite(best_sim), best_idx, -1)
    return best_idx, best_sim, unsure


def _faiss_knn(faiss, queries: np.ndarray, refs: np.ndarray, k: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """faiss.knn (exact inner product) of float32 queries against a float32 block."""
    sim, idx = faiss.knn(queries, np.ascontiguousarray(refs, dtype=np.float32), k,
                         metric=faiss.METRIC_INNER_PRODUCT)
    return idx.astype(np.int64), sim


def faiss_topk(queries: np.ndarray, refs: np.ndarray, k: int, ref_offset: int = 0,
               twin_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k with faiss's kernels: the contract of :func:`topk_cosine` (no groups).
    Ties go to the lower row as there: faiss returns k + TIE_SLACK candidates, which are
    re-sorted; rows where ties reach past them are searched again with topk_cosine.
    Candidates that have an identical twin get :func:`twin_similarity`, as in topk_cosine.
    ``twin_mask`` (len(refs),): which rows have a twin (:func:`identical_rows`; in a larger pool
    for faiss_topk_grouped's parts); None: found here."""
    faiss = import_faiss("faiss-flat")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n_r = len(refs)
    twins = None
    if twin_mask is None:
        twins = identical_rows(refs)
        twin_mask = _mask_of(twins, n_r)
    k = max(1, min(k, n_r))
    fetch = min(k + TIE_SLACK, n_r)
    whole = isinstance(refs, np.ndarray) and refs.dtype == np.float32 \
        and not isinstance(refs, np.memmap)
    block = n_r if whole else FAISS_REF_BLOCK
    best_idx = np.full((len(queries), k), -1, dtype=np.int64)
    best_sim = np.full((len(queries), k), -np.inf, dtype=np.float32)
    unsure = np.zeros(len(queries), dtype=bool)
    for r0 in range(0, n_r, block):
        chunk = refs[r0:r0 + block]
        f = min(fetch, len(chunk))
        idx, sim = _faiss_knn(faiss, queries, chunk, f)
        idx = np.where(idx >= 0, idx + r0, -1)
        q, c = np.nonzero((idx >= 0) & twin_mask[np.maximum(idx, 0)])
        if len(q):  # each pair in float64, rounded once (as twin_similarity)
            dots = np.einsum("ij,ij->i", queries[q].astype(np.float64),
                             np.asarray(refs[idx[q, c]], dtype=np.float64))
            sim[q, c] = dots.astype(np.float32)
        c_idx, c_sim, c_unsure = _tie_fix(sim, idx, min(k, f), complete=f == len(chunk))
        unsure |= c_unsure
        best_sim, best_idx = _select_top(np.concatenate([best_sim, c_sim], 1),
                                         np.concatenate([best_idx, c_idx], 1), k)
    best_idx = np.where(np.isfinite(best_sim), best_idx, -1)
    if unsure.any() and twins is None:
        twins = identical_rows(refs)
    for row in np.flatnonzero(unsure):  # rare: exact duplicates around the k-th place
        best_idx[row], best_sim[row] = (a[0] for a in topk_cosine(queries[row:row + 1],
                                                                  refs, k, twins=twins))
    return best_idx + ref_offset * (best_idx >= 0), best_sim


def faiss_topk_grouped(X: np.ndarray, group_code: np.ndarray, k: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``topk_cosine(X, X, k, query_groups=g, ref_groups=g)`` with faiss's kernels: each
    group's rows are searched against the rows before and after the group (views, no
    copy), so same-group rows are never candidates; exact, same tie rule. Groups that are
    not contiguous (the pool's are: rows sorted by task) are searched by topk_cosine: after
    a reordering, the rows kept at a tie would follow the new row numbers, not the caller's."""
    group_code = np.asarray(group_code)
    runs = 1 + int(np.count_nonzero(group_code[1:] != group_code[:-1])) if len(group_code) else 0
    if runs != len(np.unique(group_code)):  # a group in several runs
        return topk_cosine(X, X, k, query_groups=group_code, ref_groups=group_code)
    n = len(X)
    k = max(1, min(k, n))
    idx = np.full((n, k), -1, dtype=np.int64)
    sim = np.full((n, k), -np.inf, dtype=np.float32)
    bounds = np.flatnonzero(np.diff(group_code)) + 1
    starts, stops = np.r_[0, bounds], np.r_[bounds, n]
    twin_mask = _mask_of(identical_rows(X), n)  # rows with a twin anywhere (as topk_cosine)
    for a, b in zip(starts, stops):
        parts = [(0, X[:a]), (b, X[b:])]
        for offset, refs in parts:
            if len(refs) == 0:
                continue
            p_idx, p_sim = faiss_topk(X[a:b], refs, k, ref_offset=offset,
                                      twin_mask=twin_mask[offset:offset + len(refs)])
            merged_sim, merged_idx = _select_top(np.concatenate([sim[a:b], p_sim], 1),
                                                 np.concatenate([idx[a:b], p_idx], 1), k)
            sim[a:b], idx[a:b] = merged_sim, merged_idx
    idx = np.where(np.isfinite(sim), idx, -1)
    return idx, sim


class NeighborIndex:
    """A search over a fixed reference pool: ``search(Q, k) -> (idx, sim)``, each (n_q, k),
    with the contract of :func:`topk_cosine` (sorted, ties to the lower row, -1/-inf pad).

    Attributes: ``kind`` ("exact", "faiss-flat", "faiss-ivf"), ``exact`` (bool), ``n_ref``.
    """

    kind = "exact"
    exact = True

    def __init__(self, refs: np.ndarray):
        self.refs = refs
        self.n_ref = len(refs)

    @cached_property
    def twins(self) -> tuple[np.ndarray, np.ndarray]:
        """:func:`identical_rows` of the pool, found at the first exact search."""
        return identical_rows(self.refs)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return topk_cosine(queries, self.refs, k, twins=self.twins)

    def describe(self) -> dict:
        return {"kind": self.kind, "n_ref": int(self.n_ref)}


class FaissFlatIndex(NeighborIndex):
    """Exact search with faiss's kernels over the pool array itself (nothing built)."""

    kind = "faiss-flat"

    def __init__(self, refs: np.ndarray):
        import_faiss(self.kind)
        super().__init__(refs)

    def search(self, queries, k):
        return faiss_topk(queries, self.refs, k, twin_mask=_mask_of(self.twins, self.n_ref))


class FaissIVFIndex(NeighborIndex):
    """Approximate search: faiss ``IndexIVFFlat`` (inner product), trained once.

    Args:
        refs: (n, dim) unit-norm pool (float16/memmap read in chunks when adding).
        nlist: inverted lists (default :func:`ivf_nlist`).
        nprobe: lists scanned per query (default :func:`ivf_nprobe`); can be changed later.
        index: an already built faiss index (from :meth:`load`) instead of training.

    Memory: the index holds its own float32 copy of the pool (n x dim x 4 bytes) plus
    8-byte ids. Results are re-sorted by (-similarity, row); fewer than k hits in the
    probed lists leave -1/-inf at the tail.
    """

    kind = "faiss-ivf"
    exact = False
    max_train_per_list = 64  # training sample: 64 x nlist rows (faiss asks for >= 39)

    def __init__(self, refs: np.ndarray, nlist: int | None = None, nprobe: int | None = None,
                 *, index=None):
        faiss = import_faiss(self.kind)
        super().__init__(refs)
        if index is None:
            index = self._build(faiss, refs, nlist or ivf_nlist(len(refs)))
        self.index = index
        self.nlist = int(index.nlist)
        self.set_nprobe(nprobe)

    def set_nprobe(self, nprobe: int | None) -> None:
        self.nprobe = int(nprobe) if nprobe else ivf_nprobe(self.nlist)
        self.index.nprobe = min(self.nprobe, self.nlist)

    @classmethod
    def _build(cls, faiss, refs: np.ndarray, nlist: int):
        n, dim = refs.shape
        nlist = max(1, min(int(nlist), n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist,
                                   faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = IVF_SEED
        rng = np.random.default_rng(IVF_SEED)
        n_train = min(n, cls.max_train_per_list * nlist)
        sample = np.sort(rng.choice(n, n_train, replace=False))
        index.train(np.ascontiguousarray(refs[sample], dtype=np.float32))
        for r0 in range(0, n, FAISS_REF_BLOCK):  # float16 / memmap pools: chunk by chunk
            index.add(np.ascontiguousarray(refs[r0:r0 + FAISS_REF_BLOCK], dtype=np.float32))
        return index

    def search(self, queries, k):
        k = max(1, min(k, self.n_ref))
        sim, idx = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        best_idx, best_sim, _ = _tie_fix(sim, idx, k, complete=True)
        return best_idx, best_sim

    def describe(self) -> dict:
        return {**super().describe(), "nlist": self.nlist, "nprobe": self.nprobe}

    def save(self, path: Path) -> None:
        faiss = import_faiss(self.kind)
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path, refs: np.ndarray, nprobe: int | None = None) -> FaissIVFIndex:
        faiss = import_faiss(cls.kind)
        index = faiss.read_index(str(path))
        if index.ntotal != len(refs):
            raise LMRouterError(f"{path}: the saved IVF index holds {index.ntotal} rows, the "
                                f"router {len(refs)} (delete the router folder to refit)")
        return cls(refs, nprobe=nprobe, index=index)


def build_index(refs: np.ndarray, kind: str = "auto", *,
                threshold: int = AUTO_FAISS_MIN_REFS, nlist: int | None = None,
                nprobe: int | None = None) -> NeighborIndex:
    """The neighbour index of ``kind`` over ``refs`` (n, dim) unit-norm rows; ``auto``
    resolves by the number of rows (:func:`resolve_index_kind`)."""
    kind = resolve_index_kind(kind, len(refs), threshold)
    if kind == "faiss-flat":
        return FaissFlatIndex(refs)
    if kind == "faiss-ivf":
        return FaissIVFIndex(refs, nlist, nprobe)
    return NeighborIndex(refs)
