"""One table's rows of a micro-batch as a leaf tensor: pulled once, gathered, graded back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from freshrec.table.base import EmbeddingStore, IdArray, Pulled

__all__ = ["Leaf"]


@dataclass
class Leaf:
    """Unique rows of one table as a leaf tensor, plus the map back to the batch."""

    pulled: Pulled
    inverse: npt.NDArray[np.int64]
    occurrences: npt.NDArray[np.int64]
    tensor: torch.Tensor

    @classmethod
    def pull(cls, store: EmbeddingStore, ids: IdArray, counted: int | None = None) -> Leaf:
        """Pull the unique rows of `(B,)` ids; only the first `counted` ids (all when None)
        count as occurrences."""
        unique, inverse = np.unique(ids, return_inverse=True)
        inverse = inverse.reshape(-1).astype(np.int64)
        head = inverse if counted is None else inverse[:counted]
        counts = np.bincount(head, minlength=unique.shape[0])
        pulled = store.pull(unique.astype(np.uint64))
        tensor = torch.from_numpy(np.array(pulled.vectors, dtype=np.float32, copy=True))
        tensor.requires_grad_(True)
        return cls(pulled, inverse, counts.astype(np.int64), tensor)

    def gathered(self) -> torch.Tensor:
        return self.tensor[torch.from_numpy(self.inverse)]

    def grad(self) -> npt.NDArray[np.float32]:
        if self.tensor.grad is None:
            return np.zeros(self.pulled.vectors.shape, dtype=np.float32)
        return self.tensor.grad.numpy().astype(np.float32, copy=False)

    def latest(self, times: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        out = np.zeros(self.pulled.ids.shape[0], dtype=np.float64)
        np.maximum.at(out, self.inverse, times)
        return out
