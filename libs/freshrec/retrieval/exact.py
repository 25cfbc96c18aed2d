"""`ExactRetriever`: brute-force numpy search, the reference every index is checked against.

Items live in two dense arrays (ids and vectors) plus an id → row dictionary; removal moves
the last row into the hole, so the arrays stay dense and a search is one matrix product.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from freshrec.errors import InvalidInput, SnapshotError
from freshrec.retrieval.base import (
    Retriever,
    SearchResult,
    check_ids,
    check_queries,
    check_upsert,
    exclusion_width,
    filter_excluded,
)
from freshrec.table.base import FloatArray, IdArray

__all__ = ["ExactRetriever"]

logger = logging.getLogger(__name__)

_FORMAT = "freshrec-exact-v1"


class ExactRetriever(Retriever):
    """Exact maximum-inner-product search with numpy; every call is serialised by one lock.

    Args:
        dim: vector dimension `D`.
    """

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise InvalidInput(f"dim must be >= 1, got {dim}")
        self._dim = dim
        self._lock = threading.Lock()
        self._ids = np.zeros(0, dtype=np.uint64)
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._size = 0
        self._row: dict[int, int] = {}
        self._version = 0

    @property
    def dim(self) -> int:
        """Vector dimension `D`."""
        return self._dim

    @property
    def kind(self) -> str:
        """Always "exact"."""
        return "exact"

    @property
    def version(self) -> int:
        """Bumps with every content change (see `Retriever.version`)."""
        return self._version

    def __len__(self) -> int:
        return self._size

    def ids(self) -> IdArray:
        """Every id held, `(N,)` uint64."""
        with self._lock:
            return self._ids[: self._size].copy()

    def _grow(self, need: int) -> None:
        capacity = self._ids.shape[0]
        if need <= capacity:
            return
        capacity = max(need, 2 * capacity, 1024)
        ids = np.zeros(capacity, dtype=np.uint64)
        vectors = np.zeros((capacity, self._dim), dtype=np.float32)
        ids[: self._size] = self._ids[: self._size]
        vectors[: self._size] = self._vectors[: self._size]
        self._ids, self._vectors = ids, vectors

    def upsert(self, ids: IdArray, vectors: FloatArray) -> None:
        """Insert or replace `(N,)` ids with `(N, D)` vectors (see `Retriever.upsert`)."""
        id_arr, vec = check_upsert(ids, vectors, self._dim)
        if id_arr.shape[0] == 0:
            return
        with self._lock:
            self._grow(self._size + id_arr.shape[0])
            for item, vector in zip(id_arr.tolist(), vec, strict=True):
                row = self._row.get(item)
                if row is None:
                    row = self._size
                    self._row[item] = row
                    self._ids[row] = item
                    self._size += 1
                self._vectors[row] = vector
            self._version += 1

    def remove(self, ids: IdArray) -> int:
        """Remove `(N,)` ids; returns how many were held."""
        id_arr = check_ids(ids)
        if id_arr.shape[0] == 0:
            return 0
        removed = 0
        with self._lock:
            for item in id_arr.tolist():
                row = self._row.pop(item, None)
                if row is None:
                    continue
                last = self._size - 1
                if row != last:
                    moved = int(self._ids[last])
                    self._ids[row] = moved
                    self._vectors[row] = self._vectors[last]
                    self._row[moved] = row
                self._size = last
                removed += 1
            self._version += 1
        return removed

    def replace(self, ids: IdArray, vectors: FloatArray) -> None:
        """Swap the whole contents for `(N,)` ids and `(N, D)` vectors."""
        id_arr, vec = check_upsert(ids, vectors, self._dim)
        row = {item: i for i, item in enumerate(id_arr.tolist())}
        with self._lock:
            self._ids, self._vectors = id_arr.copy(), vec.copy()
            self._size = id_arr.shape[0]
            self._row = row
            self._version += 1

    def search(
        self, queries: FloatArray, k: int, exclude: list[IdArray] | None = None
    ) -> SearchResult:
        """Exact top-k by inner product; `(Q, k)` ids and scores (see `Retriever.search`)."""
        q, excl = check_queries(queries, k, exclude, self._dim)
        with self._lock:
            size = self._size
            fetch = min(k + exclusion_width(excl), size)
            if fetch == 0 or q.shape[0] == 0:
                return filter_excluded(
                    np.zeros((q.shape[0], 0), dtype=np.uint64),
                    np.zeros((q.shape[0], 0), dtype=np.float32),
                    np.zeros((q.shape[0], 0), dtype=np.bool_),
                    k,
                    excl,
                )
            scores = q @ self._vectors[:size].T
            ids = self._ids[:size]
            if fetch < size:
                top = np.argpartition(-scores, fetch - 1, axis=1)[:, :fetch]
            else:
                top = np.broadcast_to(np.arange(size), (q.shape[0], size))
            top_scores = np.take_along_axis(scores, top, axis=1)
            # Ties are broken by id so that results are deterministic.
            order = np.lexsort((ids[top], -top_scores), axis=1)
            top = np.take_along_axis(top, order, axis=1)
            cand_ids = ids[top]
            cand_scores = np.take_along_axis(scores, top, axis=1).astype(np.float32)
        valid = np.ones(cand_ids.shape, dtype=np.bool_)
        return filter_excluded(cand_ids, cand_scores, valid, k, excl)

    def save(self, path: Path) -> None:
        """Write ids and vectors to `path` as an uncompressed `.npz` archive."""
        with self._lock:
            ids = self._ids[: self._size].copy()
            vectors = self._vectors[: self._size].copy()
        with path.open("wb") as fh:
            np.savez(fh, format=np.array(_FORMAT), ids=ids, vectors=vectors)

    def load(self, path: Path) -> None:
        """Replace the contents with what `save` wrote to `path`."""
        try:
            with np.load(path, allow_pickle=False) as data:
                fmt = str(data["format"])
                ids = np.asarray(data["ids"])
                vectors = np.asarray(data["vectors"])
        except (OSError, ValueError, KeyError) as exc:
            raise SnapshotError(f"cannot read exact-index snapshot {path}: {exc}") from exc
        if fmt != _FORMAT or ids.dtype != np.uint64 or vectors.dtype != np.float32:
            raise SnapshotError(f"{path} is not an exact-index snapshot")
        if vectors.ndim != 2 or vectors.shape != (ids.shape[0], self._dim):
            raise SnapshotError(
                f"{path} holds vectors of shape {vectors.shape}, expected (N, {self._dim})"
            )
        try:
            self.replace(ids, vectors)
        except InvalidInput as exc:
            raise SnapshotError(f"{path} holds invalid items: {exc}") from exc
        logger.info("loaded %d items from %s", ids.shape[0], path)
