"""`hnsw`: `IndexIDMap2(IndexHNSWFlat)` with tombstones.

FAISS cannot delete graph nodes, so a removal (or the old copy of an upserted item) becomes a
tombstone: its id-map entry is set to -1 and an `IDSelectorBitmap` of live nodes filters it out
of every search. The retriever compacts the graph with a background rebuild once
`max_dead_fraction` of the nodes are tombstones.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from freshrec.retrieval.config import HnswConfig
from freshrec.retrieval.faiss.structure import IndexStructure, Labels
from freshrec.table.base import FloatArray

__all__ = ["HnswIndex"]


class HnswIndex(IndexStructure):
    kind = "hnsw"

    def __init__(self, index: Any, dim: int, ef_search: int) -> None:
        super().__init__(index, dim)
        self.ef_search = ef_search
        id_map = self._id_map()
        self.alive = id_map != -1
        positions = np.flatnonzero(self.alive)
        self.position: dict[int, int] = dict(
            zip(id_map[positions].tolist(), positions.tolist(), strict=True)
        )
        self.dead = int(id_map.shape[0] - positions.shape[0])
        self._bitmap: npt.NDArray[np.uint8] | None = None

    @classmethod
    def empty(cls, dim: int, config: HnswConfig) -> HnswIndex:
        graph = faiss.IndexHNSWFlat(dim, config.m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = config.ef_construction
        return cls(faiss.IndexIDMap2(graph), dim, config.ef_search)

    def _id_map(self) -> Labels:
        """A live view of the position → label array (valid until the next add)."""
        size = int(self.index.id_map.size())
        if size == 0:
            return np.zeros(0, dtype=np.int64)
        view: Labels = faiss.rev_swig_ptr(self.index.id_map.data(), size)
        return view

    def size(self) -> int:
        return len(self.position)

    def _kill(self, labels: Labels) -> int:
        id_map = self._id_map()
        killed = 0
        for label in labels.tolist():
            pos = self.position.pop(label, None)
            if pos is None:
                continue
            self.alive[pos] = False
            # -1 in the id map marks the tombstone in a saved index too.
            id_map[pos] = -1
            killed += 1
        if killed:
            self.dead += killed
            self._bitmap = None
        return killed

    def upsert(self, labels: Labels, vectors: FloatArray) -> None:
        self._kill(labels)
        start = int(self.index.ntotal)
        self.index.add_with_ids(vectors, labels)
        n = labels.shape[0]
        self.alive = np.concatenate([self.alive, np.ones(n, dtype=np.bool_)])
        self.position.update(zip(labels.tolist(), range(start, start + n), strict=True))
        self._bitmap = None

    def remove(self, labels: Labels) -> int:
        return self._kill(labels)

    def search(self, queries: FloatArray, k: int) -> tuple[Labels, FloatArray]:
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # not in faiss stubs
        params.efSearch = max(self.ef_search, k)
        if self.dead:
            if self._bitmap is None:
                self._bitmap = np.packbits(self.alive, bitorder="little")
            # Keep the selector referenced until the search returns.
            selector = faiss.IDSelectorBitmap(self._bitmap.shape[0], faiss.swig_ptr(self._bitmap))
            params.sel = selector
        scores, positions = self.index.index.search(queries, k, params=params)
        id_map = self._id_map()
        labels = np.where(positions >= 0, id_map[np.maximum(positions, 0)], -1)
        return labels.astype(np.int64), scores

    def labels(self) -> Labels:
        live: Labels = self._id_map()[self.alive].copy()
        return live

    def contents(self) -> tuple[Labels, FloatArray]:
        n = int(self.index.ntotal)
        if n == 0 or not self.position:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.asarray(self.index.index.reconstruct_n(0, n), dtype=np.float32)
        return self.labels(), vectors[self.alive]
