"""`split`: the items of largest norm in an exact flat part (the head), the rest in IVF.

A trained item row's norm carries its popularity: an item rated once or twice stays near
its small random initial row, an often-rated one grows along its users' tastes, and the
inner products a query ranks highest are those of the large rows (on the trained
million-item catalog, 99.8 % of every query's exact top-100 lie in the 1 % of items of
largest norm). So the head, the `head_fraction` of items above a norm threshold fixed at
each (re)build, is searched exactly (`FlatIndex`); the tail, whose inner products with a
query are bounded by `threshold * |q|`, is searched by IVF with a small `nprobe`; the two
answers are merged by score.

Upserts go to the head or the tail by the new vector's norm against the build's threshold
(an item whose norm crossed it moves); removals remove from both. The retriever rebuilds
in the background (a new threshold, new centroids) when the catalog has grown or shrunk by
`retrain_growth` or the head by `max_head_growth` since the build.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import faiss
import numpy as np

from freshrec.errors import SnapshotError
from freshrec.retrieval.config import IvfConfig, SplitConfig
from freshrec.retrieval.faiss.flat import FlatIndex
from freshrec.retrieval.faiss.ivf import IvfIndex
from freshrec.retrieval.faiss.structure import IndexStructure, Labels
from freshrec.table.base import FloatArray

__all__ = ["SplitIndex", "norm_threshold", "split_rebuild_reason"]


def norm_threshold(vectors: FloatArray, head_fraction: float) -> float:
    """The norm above which the `head_fraction` of largest `(N, D)` vectors lie."""
    if vectors.shape[0] == 0:
        return 0.0
    norms = np.linalg.norm(vectors, axis=1)
    return float(np.quantile(norms, 1.0 - head_fraction))


class SplitIndex(IndexStructure):
    """An exact head of the largest-norm items and an IVF tail (see the module docstring).

    Args:
        head: the exact part.
        tail: the IVF part.
        threshold: vectors of norm at or above it go to the head.
        nprobe: IVF lists of the tail scanned per query.
    """

    kind = "split"

    def __init__(self, head: FlatIndex, tail: IvfIndex, threshold: float, nprobe: int) -> None:
        super().__init__(tail.index, tail.dim)
        self.head, self.tail = head, tail
        self.threshold = threshold
        self.nprobe = nprobe
        self.built_size = head.size() + tail.size()
        self.built_head = head.size()

    @classmethod
    def train(
        cls, labels: Labels, vectors: FloatArray, dim: int, config: SplitConfig
    ) -> SplitIndex:
        """Pick the threshold, train the tail's centroids on the tail and fill both parts.

        Args:
            labels: `(N,)` labels.
            vectors: `(N, D)` vectors.
            dim: `D`.
            config: the head's share and the tail's IVF parameters.

        Returns:
            The filled index.
        """
        threshold = norm_threshold(vectors, config.head_fraction)
        in_head = np.linalg.norm(vectors, axis=1) >= threshold
        head = FlatIndex.empty(dim)
        if in_head.any():
            head.add_new(labels[in_head], np.ascontiguousarray(vectors[in_head]))
        tail_config = IvfConfig(
            nlist=config.nlist,
            nprobe=config.nprobe,
            train_iterations=config.train_iterations,
            train_points_per_list=config.train_points_per_list,
        )
        tail = IvfIndex.train(
            labels[~in_head], np.ascontiguousarray(vectors[~in_head]), dim, tail_config
        )
        return cls(head, tail, threshold, config.nprobe)

    def size(self) -> int:
        return self.head.size() + self.tail.size()

    def upsert(self, labels: Labels, vectors: FloatArray) -> None:
        self.head.remove(labels)
        self.tail.remove(labels)
        self.add_new(labels, vectors)

    def add_new(self, labels: Labels, vectors: FloatArray) -> None:
        in_head = np.linalg.norm(vectors, axis=1) >= self.threshold
        if in_head.any():
            self.head.add_new(labels[in_head], np.ascontiguousarray(vectors[in_head]))
        if not in_head.all():
            self.tail.add_new(labels[~in_head], np.ascontiguousarray(vectors[~in_head]))

    def remove(self, labels: Labels) -> int:
        return self.head.remove(labels) + self.tail.remove(labels)

    def search(self, queries: FloatArray, k: int) -> tuple[Labels, FloatArray]:
        parts: list[tuple[Labels, FloatArray]] = []
        if self.head.size():
            parts.append(self.head.search(queries, min(k, self.head.size())))
        if self.tail.size():
            labels, scores = self.tail.search(queries, min(k, self.tail.size()), self.nprobe)
            parts.append((labels, np.where(labels == -1, -np.inf, scores).astype(np.float32)))
        labels = np.concatenate([p[0] for p in parts], axis=1)
        scores = np.concatenate([p[1] for p in parts], axis=1)
        if labels.shape[1] > k:
            keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            labels = np.take_along_axis(labels, keep, axis=1)
            scores = np.take_along_axis(scores, keep, axis=1)
        # best first; equal scores by label, so the order does not depend on which part
        order = np.lexsort((labels, -scores), axis=1)
        labels = np.take_along_axis(labels, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        return np.where(np.isfinite(scores), labels, -1), scores

    def labels(self) -> Labels:
        return np.concatenate([self.head.labels(), self.tail.labels()])

    def contents(self) -> tuple[Labels, FloatArray]:
        head_labels, head_vectors = self.head.contents()
        tail_labels, tail_vectors = self.tail.contents()
        return (
            np.concatenate([head_labels, tail_labels]),
            np.concatenate([head_vectors, tail_vectors]),
        )

    def write(self, path: Path) -> None:
        """Both parts and the threshold in one file (an npz of the two FAISS indexes)."""
        with path.open("wb") as out:
            np.savez(
                out,
                head=faiss.serialize_index(self.head.index),
                tail=faiss.serialize_index(self.tail.index),
                threshold=np.float64(self.threshold),
                built=np.array([self.built_size, self.built_head], dtype=np.int64),
            )

    @staticmethod
    def is_file(path: Path) -> bool:
        """Whether `path` holds what `write` writes (a zip archive), not a FAISS index."""
        with path.open("rb") as source:
            return source.read(4) == b"PK\x03\x04"

    @classmethod
    def read(cls, path: Path, dim: int, nprobe: int) -> SplitIndex:
        """The index `write` wrote to `path`.

        Raises:
            SnapshotError: not such a file, or its parts are not a flat and an IVF index of
                `dim` dimensions.
        """
        try:
            with path.open("rb") as source, np.load(source) as parts:
                head = faiss.deserialize_index(parts["head"])
                tail = faiss.deserialize_index(parts["tail"])
                threshold = float(parts["threshold"])
                built_size, built_head = (int(v) for v in parts["built"])
        except (OSError, KeyError, ValueError, RuntimeError, zipfile.BadZipFile) as exc:
            raise SnapshotError(f"cannot read a split index from {path}: {exc}") from exc
        if not (isinstance(head, faiss.IndexIDMap2) and isinstance(tail, faiss.IndexIVFFlat)):
            raise SnapshotError(f"{path} does not hold a flat head and an IVF-flat tail")
        if int(head.d) != dim or int(tail.d) != dim:
            raise SnapshotError(f"{path} holds {tail.d}-dimensional vectors, expected {dim}")
        structure = cls(FlatIndex(head, dim), IvfIndex(tail, dim, nprobe), threshold, nprobe)
        structure.built_size, structure.built_head = built_size, built_head
        return structure


def split_rebuild_reason(config: SplitConfig, structure: IndexStructure) -> str | None:
    """Why a `split` retriever's serving `structure` should be rebuilt now, or None: the
    flat phase has reached `min_train_size`, or the catalog or the head has grown or shrunk
    past its bound since the build."""
    n = structure.size()
    if isinstance(structure, FlatIndex):
        return "train" if n >= config.min_train_size else None
    if not isinstance(structure, SplitIndex):
        return None
    built = max(structure.built_size, 1)
    if n >= config.retrain_growth * built:
        return "grown"
    if n * config.retrain_growth <= built:
        return "shrunk"
    head, built_head = structure.head.size(), max(structure.built_head, 1)
    if head >= config.max_head_growth * built_head or head * config.max_head_growth <= built_head:
        return "head"
    return None
