"""`flat`: `IndexIDMap2(IndexFlatIP)`, exact.

`remove_ids` compacts the flat array (O(N) per call), an upsert is remove + add. Searches rank
FAISS's stored vectors with `freshrec.retrieval.scan` (one matrix product, pruned selection)
instead of FAISS's scan.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from freshrec.retrieval.faiss.structure import IndexStructure, Labels, to_ids
from freshrec.retrieval.scan import top_inner_products
from freshrec.table.base import FloatArray

__all__ = ["FlatIndex"]


class FlatIndex(IndexStructure):
    """Exact. FAISS holds the vectors and ids; a search reads them in place and ranks them
    with `top_inner_products`, several times faster than FAISS's own heap-based scan at the
    `k` (hundreds) a candidate generator asks for."""

    kind = "flat"

    def __init__(self, index: Any, dim: int) -> None:
        super().__init__(index, dim)
        self._storage: Any = faiss.downcast_index(index.index)  # IndexFlatIP: get_xb

    @classmethod
    def empty(cls, dim: int) -> FlatIndex:
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), dim)

    def size(self) -> int:
        return int(self.index.ntotal)

    def upsert(self, labels: Labels, vectors: FloatArray) -> None:
        if self.index.ntotal:
            self.index.remove_ids(labels)
        self.index.add_with_ids(vectors, labels)

    def add_new(self, labels: Labels, vectors: FloatArray) -> None:
        self.index.add_with_ids(vectors, labels)

    def remove(self, labels: Labels) -> int:
        n = self.size()
        if not n:
            return 0
        # IndexIDMap2 rebuilds its reverse map on every removal, even of absent labels (0.8 ms
        # at 20,000 rows): a split index's head is asked to remove every upserted label
        held = faiss.rev_swig_ptr(self.index.id_map.data(), n)
        present = labels[np.isin(labels, held)]
        if not present.shape[0]:
            return 0
        return int(self.index.remove_ids(present))

    def search(self, queries: FloatArray, k: int) -> tuple[Labels, FloatArray]:
        n = self.size()
        # views of FAISS's own arrays: valid while the caller holds the read lock
        vectors = faiss.rev_swig_ptr(self._storage.get_xb(), n * self.dim).reshape(n, self.dim)
        labels = faiss.rev_swig_ptr(self.index.id_map.data(), n)
        positions, scores = top_inner_products(queries, vectors, k, tie_keys=to_ids(labels))
        return labels[positions], scores

    def labels(self) -> Labels:
        return np.asarray(faiss.vector_to_array(self.index.id_map), dtype=np.int64)

    def contents(self) -> tuple[Labels, FloatArray]:
        n = self.size()
        if n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.asarray(self.index.index.reconstruct_n(0, n), dtype=np.float32)
        return self.labels(), vectors
