"""Exact cosine top-k search over L2-normalised embeddings, chunked to bound memory.

    >>> idx, sim = topk_cosine(queries, refs, k=19)          # (n_q, 19) each, best first
    >>> idx, sim = topk_cosine(X, X, k=19, query_groups=task_of_x, ref_groups=task_of_x)
    ...     # leave-one-task-out: neighbours of each input among the *other* tasks' inputs

One search serves every model (neighbours do not depend on the model) and every score.
"""

from __future__ import annotations

import numpy as np

# A (query_block x ref_block) float32 similarity block is 512 * 32768 * 4 B = 64 MiB.
QUERY_BLOCK = 512
REF_BLOCK = 32768


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero); float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def topk_cosine(queries: np.ndarray, refs: np.ndarray, k: int, *,
                query_groups: np.ndarray | None = None, ref_groups: np.ndarray | None = None,
                ) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar reference rows of each query row.

    Args:
        queries: (n_q, dim) unit-norm embeddings.
        refs: (n_r, dim) unit-norm embeddings (float32 or float16; may be a memmap).
        k: neighbours per query (capped at the number of eligible references).
        query_groups, ref_groups: (n_q,), (n_r,) integer group ids; a reference of the same
            group as the query is never a neighbour (leave-one-group-out).

    Returns:
        (indices, similarities), each (n_q, k): reference row numbers and cosine similarities,
        sorted by decreasing similarity (ties: lower row number first). Where fewer than k
        references are eligible the tail holds index -1 and similarity -inf.
    """
    queries = np.asarray(queries, dtype=np.float32)
    n_q, n_r = len(queries), len(refs)
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
    ``per_group=False`` keeps only the leave-own-group lists (what fitting needs).
    """

    def __init__(self, X: np.ndarray, groups: np.ndarray, K: int, *, per_group: bool = True):
        X = np.asarray(X, dtype=np.float32)
        self.groups = np.asarray(groups)
        self.codes, self.group_code = np.unique(self.groups, return_inverse=True)
        self.K = K = max(1, min(K, len(X)))
        self.per_group_idx = self.per_group_sim = None
        if not per_group:
            self.idx, self.sim = topk_cosine(X, X, K, query_groups=self.group_code,
                                             ref_groups=self.group_code)
            return
        G = len(self.codes)
        members = [np.flatnonzero(self.group_code == g) for g in range(G)]
        idx = np.full((len(X), G, K), -1, dtype=np.int64)
        sim = np.full((len(X), G, K), -np.inf, dtype=np.float32)
        for q0 in range(0, len(X), QUERY_BLOCK):
            block = X[q0:q0 + QUERY_BLOCK] @ X.T  # (qb, n)
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
        return np.isin(self.codes, np.asarray(list(exclude), dtype=self.codes.dtype))

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
