"""The retrieval seam: top-k inner-product search over item vectors that change live.

A `Retriever` holds `(id, vector)` pairs keyed by full 64-bit item ids and answers
maximum-inner-product queries. It is mutated in place (`upsert`, `remove`) by the index
follower while the ranker searches it from other threads, so every implementation is safe
to search and mutate concurrently.

Conventions shared by every implementation:

- Similarity is the inner product `<query, item>`; larger is better.
- `search` returns exactly `k` columns per query. When fewer than `k` items qualify, the
  remaining columns are padding: id `0` and score `-inf`. Id 0 is a legal item id, so tell
  padding apart by the score (`np.isfinite(scores)`), never by the id.
- Exclusion (items the user has already seen) is applied after the search: the index is
  asked for `k + max_q len(exclude[q])` candidates and the excluded ids are filtered out, so
  each query still gets `k` results whenever the catalog has `k` items it does not exclude.
  With an approximate index the over-fetched tail has the same recall as the head.
- The id `2**64 - 1` is reserved (FAISS reports "no result" as the label -1, which is that
  id's bit pattern) and is refused by `upsert`.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from freshrec.errors import InvalidInput
from freshrec.table.base import FloatArray, IdArray

__all__ = [
    "RESERVED_ID",
    "Retriever",
    "SearchResult",
    "check_ids",
    "check_queries",
    "check_upsert",
    "exclusion_width",
    "filter_excluded",
]

RESERVED_ID = np.uint64(2**64 - 1)
"""The one id `upsert` refuses: its int64 bit pattern is FAISS's "no result" label."""


class SearchResult(NamedTuple):
    """Top-k answers for a batch of queries (unpacks as `ids, scores`).

    Attributes:
        ids: `(Q, k)` uint64 item ids, best first; 0 in padding columns.
        scores: `(Q, k)` float32 inner products, descending; `-inf` in padding columns.
    """

    ids: IdArray
    scores: FloatArray


class Retriever(abc.ABC):
    """Maximum-inner-product search over a mutable set of `(id, vector)` pairs.

    Every method is safe to call from several threads at once.
    """

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Vector dimension `D`."""

    @property
    @abc.abstractmethod
    def kind(self) -> str:
        """Implementation and structure, e.g. "exact" or "faiss-ivf" (snapshots record it)."""

    @property
    @abc.abstractmethod
    def version(self) -> int:
        """A counter that increases with every change of the contents.

        Each `upsert`/`remove` call that is given at least one id, and each `replace` or
        `load`, bumps it. Internal restructuring that keeps the contents (an index rebuild)
        does not.
        """

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of items held."""

    @abc.abstractmethod
    def ids(self) -> IdArray:
        """Every id held, `(N,)` uint64, in no particular order."""

    @abc.abstractmethod
    def upsert(self, ids: IdArray, vectors: FloatArray) -> None:
        """Insert items or replace their vectors.

        Args:
            ids: `(N,)` uint64; when an id repeats, its last vector wins.
            vectors: `(N, D)` float32, finite.

        Raises:
            InvalidInput: wrong shapes, non-finite values, or the reserved id `2**64 - 1`.
        """

    @abc.abstractmethod
    def remove(self, ids: IdArray) -> int:
        """Remove items; ids not held are ignored.

        Args:
            ids: `(N,)` uint64.

        Returns:
            How many items were removed.
        """

    @abc.abstractmethod
    def replace(self, ids: IdArray, vectors: FloatArray) -> None:
        """Swap the whole contents for `(ids, vectors)` in one step.

        Searches running meanwhile see either the old contents or the new, never a mix.

        Args:
            ids: `(N,)` uint64.
            vectors: `(N, D)` float32.
        """

    @abc.abstractmethod
    def search(
        self, queries: FloatArray, k: int, exclude: list[IdArray] | None = None
    ) -> SearchResult:
        """The `k` items with the largest inner product for each query.

        Args:
            queries: `(Q, D)` float32.
            k: results per query, >= 1.
            exclude: None, or one `(E_q,)` uint64 array per query of ids that must not be
                returned for that query.

        Returns:
            `(Q, k)` ids and scores, best first, padded with id 0 / score `-inf`.

        Raises:
            InvalidInput: wrong shapes, `k < 1`, or `len(exclude) != Q`.
        """

    @abc.abstractmethod
    def save(self, path: Path) -> None:
        """Write the contents to `path` (overwriting it); `load` reads it back."""

    @abc.abstractmethod
    def load(self, path: Path) -> None:
        """Replace the contents with what `save` wrote to `path`.

        Raises:
            SnapshotError: the file is unreadable, corrupt, or of another dimension or kind.
        """


def check_ids(ids: npt.ArrayLike, what: str = "ids") -> IdArray:
    """Validate and normalise an id batch.

    Args:
        ids: `(N,)` array of non-negative integers (uint64 preferred).
        what: the name used in error messages.

    Returns:
        `(N,)` C-contiguous uint64.

    Raises:
        InvalidInput: not one-dimensional, not integers, or negative.
    """
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise InvalidInput(f"{what} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype == np.uint64:
        return np.ascontiguousarray(arr)
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.dtype.kind not in "iu":
        raise InvalidInput(f"{what} must be unsigned 64-bit integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "i" and bool((arr < 0).any()):
        raise InvalidInput(f"{what} must be non-negative")
    return np.ascontiguousarray(arr.astype(np.uint64))


def check_upsert(
    ids: npt.ArrayLike, vectors: npt.ArrayLike, dim: int
) -> tuple[IdArray, FloatArray]:
    """Validate an upsert batch and keep the last vector of each repeated id.

    Args:
        ids: `(N,)` uint64.
        vectors: `(N, D)` float32.
        dim: the retriever's `D`.

    Returns:
        `(U,)` unique uint64 ids and their `(U, D)` C-contiguous float32 vectors.

    Raises:
        InvalidInput: shape mismatch, non-finite values, or the reserved id.
    """
    id_arr = check_ids(ids)
    vec = np.asarray(vectors)
    if vec.ndim != 2 or vec.shape[1] != dim or vec.shape[0] != id_arr.shape[0]:
        raise InvalidInput(
            f"vectors must have shape ({id_arr.shape[0]}, {dim}), got {tuple(vec.shape)}"
        )
    vec = np.ascontiguousarray(vec, dtype=np.float32)
    if not bool(np.isfinite(vec).all()):
        raise InvalidInput("vectors must be finite (no NaN or inf)")
    if bool((id_arr == RESERVED_ID).any()):
        raise InvalidInput("id 2**64-1 is reserved and cannot be indexed")
    if id_arr.shape[0] > 1:
        # np.unique keeps the first occurrence; reversing makes that the last one.
        _, first_in_reversed = np.unique(id_arr[::-1], return_index=True)
        if first_in_reversed.shape[0] != id_arr.shape[0]:
            keep = np.sort(id_arr.shape[0] - 1 - first_in_reversed)
            id_arr, vec = id_arr[keep], vec[keep]
    return id_arr, vec


def check_queries(
    queries: npt.ArrayLike, k: int, exclude: list[IdArray] | None, dim: int
) -> tuple[FloatArray, list[IdArray] | None]:
    """Validate a search call.

    Returns:
        `(Q, D)` C-contiguous float32 queries, and the exclusion lists as uint64 arrays.

    Raises:
        InvalidInput: wrong shapes, non-finite queries, `k < 1`, or `len(exclude) != Q`.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InvalidInput(f"k must be a positive integer, got {k!r}")
    q = np.asarray(queries)
    if q.ndim != 2 or q.shape[1] != dim:
        raise InvalidInput(f"queries must have shape (Q, {dim}), got {tuple(q.shape)}")
    q = np.ascontiguousarray(q, dtype=np.float32)
    if not bool(np.isfinite(q).all()):
        raise InvalidInput("queries must be finite (no NaN or inf)")
    if exclude is None:
        return q, None
    if len(exclude) != q.shape[0]:
        raise InvalidInput(
            f"exclude must hold one array per query ({q.shape[0]}), got {len(exclude)}"
        )
    return q, [check_ids(e, "exclude") for e in exclude]


def exclusion_width(exclude: list[IdArray] | None) -> int:
    """How many extra candidates to fetch so that `k` survive the exclusion filter."""
    if not exclude:
        return 0
    return max(int(e.shape[0]) for e in exclude)


def filter_excluded(
    ids: IdArray,
    scores: FloatArray,
    valid: npt.NDArray[np.bool_],
    k: int,
    exclude: list[IdArray] | None,
) -> SearchResult:
    """Drop invalid and excluded candidates, keep the best `k` per query, pad the rest.

    Args:
        ids: `(Q, K')` uint64 candidates, best first.
        scores: `(Q, K')` float32.
        valid: `(Q, K')` bool; False marks a column the index could not fill.
        k: columns wanted.
        exclude: None or one `(E_q,)` uint64 array per query.

    Returns:
        `(Q, k)` ids and scores, padded with 0 / `-inf`.
    """
    n_queries = ids.shape[0]
    out_ids = np.zeros((n_queries, k), dtype=np.uint64)
    out_scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    for row in range(n_queries):
        keep = valid[row]
        if exclude is not None and exclude[row].shape[0] > 0:
            keep = keep & ~np.isin(ids[row], exclude[row])
        row_ids = ids[row][keep][:k]
        out_ids[row, : row_ids.shape[0]] = row_ids
        out_scores[row, : row_ids.shape[0]] = scores[row][keep][:k]
    return SearchResult(out_ids, out_scores)
