"""What every FAISS index structure offers the retriever, and the id ↔ label mapping.

FAISS labels are int64; item ids are uint64 and are reinterpreted bit for bit
(`ids.view(np.int64)` and back), so ids >= 2**63 round-trip exactly. The label -1 means
"no result" to FAISS, hence the reserved id `2**64 - 1`.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import numpy.typing as npt

from freshrec.table.base import FloatArray, IdArray

__all__ = ["IndexStructure", "Labels", "to_ids", "to_labels"]

Labels = npt.NDArray[np.int64]


def to_labels(ids: IdArray) -> Labels:
    """uint64 ids → FAISS int64 labels, same bits.

    Args:
        ids: `(N,)` item ids.

    Returns:
        `(N,)` int64 labels.
    """
    return np.ascontiguousarray(ids, dtype=np.uint64).view(np.int64)


def to_ids(labels: Labels) -> IdArray:
    """FAISS int64 labels → uint64 ids, same bits.

    Args:
        labels: labels of any shape, e.g. `(Q, k)`.

    Returns:
        uint64 ids of the same shape.
    """
    return np.ascontiguousarray(labels, dtype=np.int64).view(np.uint64)


class IndexStructure(abc.ABC):
    """One concrete FAISS index and the bookkeeping it needs. Not thread-safe on its own."""

    kind: str

    def __init__(self, index: Any, dim: int) -> None:
        self.index = index
        self.dim = dim

    @abc.abstractmethod
    def size(self) -> int:
        """Live items."""

    @abc.abstractmethod
    def upsert(self, labels: Labels, vectors: FloatArray) -> None:
        """Insert or replace unique `(N,)` labels with `(N, D)` vectors."""

    @abc.abstractmethod
    def remove(self, labels: Labels) -> int:
        """Remove `(N,)` labels; returns how many were held."""

    @abc.abstractmethod
    def search(self, queries: FloatArray, k: int) -> tuple[Labels, FloatArray]:
        """`(Q, k)` labels (-1 where unfilled) and scores."""

    @abc.abstractmethod
    def labels(self) -> Labels:
        """`(N,)` labels of the live items."""

    @abc.abstractmethod
    def contents(self) -> tuple[Labels, FloatArray]:
        """`(N,)` labels and `(N, D)` vectors of the live items (copies)."""

    def add_new(self, labels: Labels, vectors: FloatArray) -> None:
        """Add labels known to be absent (a fresh build)."""
        self.upsert(labels, vectors)
