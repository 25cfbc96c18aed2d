"""The model's inputs from raw features: row ids of users, items and contexts, and pooling.

One definition shared by the trainer (`training/trainer.py`), the evaluation's scoring
(`evaluation/scoring.py`, `evaluation/stream.py`) and the ranker (`ranking/recommender.py`),
so that serving reads exactly the rows training wrote and pools them the same way.

- A user or item id becomes the row id `hash_feature("user", id)` / `hash_feature("item",
  id)` of its table (`entity_row_ids`).
- A request's context (``{"device": "ios", "hour": 13}``) becomes one row id per
  ``slot:value`` (`freshrec.table.ids.context_ids`); `context_row_ids` flattens the contexts
  of a batch into `(C,)` ids plus the `(C,)` batch position each belongs to.
- The model's context input is the mean of those rows per batch position, zeros where there
  is none (`mean_pool`): `(C, D)` rows → `(B, D)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from freshrec.table.ids import context_ids, hash_features

__all__ = ["EntityTable", "context_row_ids", "entity_row_ids", "mean_pool"]

IdArray = npt.NDArray[np.uint64]
Positions = npt.NDArray[np.int64]
EntityTable = Literal["user", "item"]


def entity_row_ids(table: EntityTable, raw_ids: Iterable[str | int]) -> IdArray:
    """Row ids in the `user` or `item` table of raw user or item ids.

    Args:
        table: which table; the same raw id is another row in the other one.
        raw_ids: `B` raw ids.

    Returns:
        `(B,)` uint64 row ids, in the order given.
    """
    return hash_features(table, raw_ids)


def context_row_ids(
    contexts: Sequence[Mapping[str, str | int | float]],
) -> tuple[IdArray, Positions]:
    """The `context` table rows of a batch of contexts, flattened.

    Args:
        contexts: `B` contexts (feature name → value); empty ones add no row.

    Returns:
        `(C,)` uint64 row ids, batch position by batch position (slots sorted within one),
        and the `(C,)` batch position in `[0, B)` of each.
    """
    per_position = [context_ids(context) for context in contexts]
    ids = np.array([i for ids in per_position for i in ids], dtype=np.uint64)
    positions = np.repeat(np.arange(len(contexts)), [len(ids) for ids in per_position])
    return ids, positions.astype(np.int64, copy=False)


def mean_pool(vectors: torch.Tensor, positions: Positions, n: int, dim: int) -> torch.Tensor:
    """The mean of the rows at each batch position; differentiable in `vectors`.

    Args:
        vectors: `(C, D)` rows, `D == dim` (not read when `C == 0`).
        positions: `(C,)` batch position in `[0, n)` of each row.
        n: batch size `B`.
        dim: row width `D`.

    Returns:
        `(B, D)` float32: each position's mean row, zeros where it has none.
    """
    pooled = torch.zeros((n, dim))
    if positions.shape[0] == 0:
        return pooled
    counts = np.bincount(positions, minlength=n).astype(np.float32)
    pooled = pooled.index_add(0, torch.from_numpy(positions), vectors)
    return pooled / torch.from_numpy(np.maximum(counts, 1.0)).unsqueeze(1)
