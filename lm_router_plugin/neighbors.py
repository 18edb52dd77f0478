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


def merge_topk(idx_a: np.ndarray, sim_a: np.ndarray, idx_b: np.ndarray, sim_b: np.ndarray,
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge two neighbour lists of the same queries (e.g. reference pool + in-task labels)."""
    sim, idx = _select_top(np.concatenate([sim_a, sim_b], 1),
                           np.concatenate([idx_a, idx_b], 1), k)
    return idx, sim
