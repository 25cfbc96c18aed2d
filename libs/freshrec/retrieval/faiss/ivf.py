"""`ivf`: `IndexIVFFlat` with the item ids stored natively in the inverted lists.

A hash-table direct map makes `remove_ids` O(removed), so an upsert is remove + add. The
retriever serves a `flat` index until the catalog reaches `min_train_size` items, then trains
centroids with `IvfIndex.train` (again whenever the catalog has grown or shrunk by
`retrain_growth`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from freshrec.retrieval.config import IvfConfig
from freshrec.retrieval.faiss.structure import IndexStructure, Labels
from freshrec.table.base import FloatArray

__all__ = ["IvfIndex", "ivf_nlist"]

# Fixed so that two trainings on the same contents give the same centroids.
_TRAIN_SEED = 1234


def ivf_nlist(items: int) -> int:
    """The lists an `IvfConfig` with `nlist` None trains for `items` items: about 4·sqrt(N)."""
    return round(4 * math.sqrt(items))


class IvfIndex(IndexStructure):
    kind = "ivf"

    def __init__(self, index: Any, dim: int, nprobe: int) -> None:
        super().__init__(index, dim)
        self.nprobe = nprobe
        self.trained_size = int(index.ntotal)
        # Baseline of the drift check; an index loaded from disk measures its own.
        self.trained_imbalance = self.imbalance()
        hashtable = faiss.DirectMap.Hashtable  # type: ignore[attr-defined]  # not in faiss stubs
        if index.direct_map.type != hashtable:
            # The hash-table direct map is what makes remove_ids O(removed).
            index.set_direct_map_type(hashtable)

    @classmethod
    def train(cls, labels: Labels, vectors: FloatArray, dim: int, config: IvfConfig) -> IvfIndex:
        n = vectors.shape[0]
        wanted = config.nlist if config.nlist is not None else ivf_nlist(n)
        # FAISS wants >= 39 training points per centroid and warns (on stderr) otherwise.
        nlist = max(1, min(wanted, n // 39))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = config.train_iterations
        index.cp.seed = _TRAIN_SEED
        index.cp.max_points_per_centroid = config.train_points_per_list
        sample_size = min(n, nlist * config.train_points_per_list)
        if sample_size < n:
            rng = np.random.default_rng(_TRAIN_SEED)
            sample = vectors[np.sort(rng.choice(n, size=sample_size, replace=False))]
        else:
            sample = vectors
        index.train(np.ascontiguousarray(sample))
        structure = cls(index, dim, config.nprobe)
        structure.add_new(labels, vectors)
        structure.trained_size = n
        structure.trained_imbalance = structure.imbalance()
        return structure

    def imbalance(self) -> float:
        """FAISS's imbalance factor of the list sizes: 1 when all are equal, larger when
        items crowd into few lists (the expected scan cost relative to even lists)."""
        if self.size() == 0:
            return 1.0
        return float(self.index.invlists.imbalance_factor())

    def size(self) -> int:
        return int(self.index.ntotal)

    def _remove(self, labels: Labels) -> int:
        labels = np.ascontiguousarray(labels)
        # With a hash-table direct map FAISS only accepts an IDSelectorArray.
        selector = faiss.IDSelectorArray(labels.shape[0], faiss.swig_ptr(labels))
        return int(self.index.remove_ids(selector))

    def upsert(self, labels: Labels, vectors: FloatArray) -> None:
        self._remove(labels)
        self.index.add_with_ids(vectors, labels)

    def add_new(self, labels: Labels, vectors: FloatArray) -> None:
        self.index.add_with_ids(vectors, labels)

    def remove(self, labels: Labels) -> int:
        return self._remove(labels)

    def search(
        self, queries: FloatArray, k: int, nprobe: int | None = None
    ) -> tuple[Labels, FloatArray]:
        params = faiss.SearchParametersIVF()
        params.nprobe = min(nprobe or self.nprobe, int(self.index.nlist))
        scores, labels = self.index.search(queries, k, params=params)
        return labels, scores

    def _lists(self) -> Iterator[tuple[int, int]]:
        invlists = self.index.invlists
        for list_no in range(int(self.index.nlist)):
            size = int(invlists.list_size(list_no))
            if size:
                yield list_no, size

    def labels(self) -> Labels:
        invlists = self.index.invlists
        parts = [
            faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy()
            for list_no, size in self._lists()
        ]
        if not parts:
            return np.zeros(0, dtype=np.int64)
        return np.asarray(np.concatenate(parts), dtype=np.int64)

    def contents(self) -> tuple[Labels, FloatArray]:
        invlists = self.index.invlists
        code_size = int(invlists.code_size)
        ids: list[Labels] = []
        codes: list[npt.NDArray[np.uint8]] = []
        for list_no, size in self._lists():
            ids.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy())
            codes.append(faiss.rev_swig_ptr(invlists.get_codes(list_no), size * code_size).copy())
        if not ids:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        # IVF-flat codes are the raw float32 vectors.
        vectors = np.concatenate(codes).view(np.float32).reshape(-1, self.dim)
        return np.asarray(np.concatenate(ids), dtype=np.int64), vectors
