"""Exact top-k inner products by brute force, for k in the hundreds.

FAISS's flat search keeps one heap of size `k` per query while it scans; with the `k` of a
candidate generator (hundreds) the heap updates cost several times the dot products
themselves. Here the dot products are one matrix product (BLAS), and selection is pruned:

1. every `stride`-th score of a query is a uniform sample of its scores; the sample's
   `j`-th largest value, `j ≈ 1.5·k / stride`, is a threshold that about `1.5·k` of all the
   scores pass;
2. only scores at or above the threshold are ranked (a few hundred instead of the whole
   catalog);
3. if fewer than `k` passed (the sample was unlucky, or the stored order correlates with
   the scores), that query is ranked over all its scores.

The result is exact either way: every score below the threshold is below at least `k` that
passed. Ties are broken by the caller's tie key, so results do not depend on storage order.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from freshrec.table.base import FloatArray

__all__ = ["MAX_SCORES", "SAMPLE_PER_RESULT", "rank_whole_rows", "top_inner_products"]

Positions = npt.NDArray[np.int64]

# Largest `(queries, items)` score matrix computed at once (float32 entries): 64 MiB.
MAX_SCORES = 16 * 1024 * 1024
# Prune only when the catalog is this many times `k`; below that, ranking all is as cheap.
_MIN_PRUNE_RATIO = 16
# Sample about this many scores per wanted result, pass about 1.5x the wanted count.
SAMPLE_PER_RESULT = 8
_PASS_MARGIN = 1.5


def top_inner_products(
    queries: FloatArray,
    vectors: FloatArray,
    k: int,
    tie_keys: npt.NDArray[np.uint64] | None = None,
) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Exact top-`k` rows of `vectors` by inner product with each query, best first.

    Args:
        queries: `(Q, D)` float32.
        vectors: `(N, D)` float32 (may be a view of an index's storage).
        k: results per query, `1 <= k <= N`.
        tie_keys: `(N,)` keys ordering equal scores (ascending); row position when None.

    Returns:
        `(Q, k)` row positions into `vectors` and their `(Q, k)` float32 scores, each row in
        descending score order.
    """
    n = vectors.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    keys = np.arange(n, dtype=np.uint64) if tie_keys is None else tie_keys
    positions = np.empty((queries.shape[0], k), dtype=np.int64)
    scores = np.empty((queries.shape[0], k), dtype=np.float32)
    chunk = max(1, MAX_SCORES // n)
    for start in range(0, queries.shape[0], chunk):
        block = queries[start : start + chunk] @ vectors.T  # (q, N)
        stop = start + block.shape[0]
        positions[start:stop], scores[start:stop] = _top(block, k, keys)
    return positions, scores


def _top(block: FloatArray, k: int, keys: npt.NDArray[np.uint64]) -> tuple[Positions, FloatArray]:
    """Each row's `k` largest entries of `(R, N)` `block`, best first: `(R, k)` column
    positions and values."""
    n_rows, n = block.shape
    if n < _MIN_PRUNE_RATIO * k:
        return rank_whole_rows(block, np.arange(n_rows), k, keys)
    stride = max(1, n // (SAMPLE_PER_RESULT * k))
    sample = block[:, ::stride]
    rank = min(sample.shape[1], math.ceil(_PASS_MARGIN * k / stride) + 8)
    thresholds = np.partition(sample, sample.shape[1] - rank, axis=1)[:, -rank]
    passed = np.flatnonzero(block >= thresholds[:, None])  # ascending flat positions
    rows = passed // n
    short = np.bincount(rows, minlength=n_rows) < k
    positions = np.empty((n_rows, k), dtype=np.int64)
    values = np.empty((n_rows, k), dtype=block.dtype)
    if short.any():
        misled = np.flatnonzero(short)
        positions[misled], values[misled] = rank_whole_rows(block, misled, k, keys)
        kept = ~short[rows]
        passed, rows = passed[kept], rows[kept]
    pruned = np.flatnonzero(~short)
    if pruned.shape[0]:
        # the passing entries of the other rows as one (rows, widest) matrix, -inf padded
        compact = (np.cumsum(~short) - 1)[rows]
        counts = np.bincount(compact, minlength=pruned.shape[0])
        slot = np.arange(passed.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts)
        width = int(counts.max())
        columns = np.zeros((pruned.shape[0], width), dtype=np.int64)
        padded = np.full((pruned.shape[0], width), -np.inf, dtype=block.dtype)
        columns[compact, slot] = passed - rows * n
        padded[compact, slot] = block.ravel()[passed]
        positions[pruned], values[pruned] = _rank(padded, columns, k, keys)
    return positions, values


def rank_whole_rows(
    block: FloatArray, rows: Positions, k: int, keys: npt.NDArray[np.uint64]
) -> tuple[Positions, FloatArray]:
    """The `k` best of each of `rows` of `block`, over all its scores.

    Used for small catalogs, and for rows whose sample misled (fewer than k passed its
    threshold), ranked apart from the pruned rows so that one such row does not widen every
    row's matrix to the whole catalog.

    Args:
        block: `(Q, N)` scores.
        rows: `(R,)` rows of `block` to rank.
        k: results per row, `k <= N`.
        keys: `(N,)` tie keys, the smaller first among equal scores.

    Returns:
        `(R, k)` column positions and their scores, best first.
    """
    n = block.shape[1]
    return _rank(block[rows], np.broadcast_to(np.arange(n), (rows.shape[0], n)), k, keys)


def _rank(
    values: FloatArray, columns: Positions, k: int, keys: npt.NDArray[np.uint64]
) -> tuple[Positions, FloatArray]:
    """The `k` best of each row of `(R, M)` `values` (at `columns`), best first; equal values
    ordered by their keys, also across the k-th place."""
    width = values.shape[1]
    if k < width:
        part = np.argpartition(values, width - k, axis=1)[:, width - k :]
    else:
        part = np.broadcast_to(np.arange(width), values.shape)
    top = np.take_along_axis(values, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    part = np.take_along_axis(part, order, axis=1)
    top = np.take_along_axis(top, order, axis=1)
    kth = top[:, -1:]
    # rows where a tie decides membership or order: re-rank them by (value, key)
    tied = np.flatnonzero(
        (top[:, 1:] == top[:, :-1]).any(axis=1)
        | ((values == kth).sum(axis=1) > (top == kth).sum(axis=1))
    )
    positions = np.take_along_axis(columns, part, axis=1)
    for row in tied:
        finite = np.isfinite(values[row])
        cols, vals = columns[row][finite], values[row][finite]
        best = np.lexsort((keys[cols], -vals))[:k]
        positions[row], top[row] = cols[best], vals[best]
    return positions, top
