"""What a push writes, computed once for every store (so stores differ only in storage).

`plan_update` applies the admission filter and the optimizer to pulled rows and returns the
rows to write, the pending counts to keep and the number of ids filtered out. Stores persist
the plan; they never re-derive it, which keeps the in-memory and Redis stores bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from freshrec.errors import InvalidInput
from freshrec.table.admission import decide_admission, keeps_counts
from freshrec.table.config import TableConfig
from freshrec.table.initializers import initial_vectors
from freshrec.table.optimizers import Optimizer
from freshrec.table.records import FloatArray, IdArray, Pulled

__all__ = ["COUNT_MAX", "UpdatePlan", "check_ids", "fresh_rows", "plan_update"]

# Occurrence counts are stored as uint32 and saturate there.
COUNT_MAX = 2**32 - 1


@dataclass(frozen=True)
class UpdatePlan:
    """Rows and counters one push stages.

    Attributes:
        ids: `(W,)` uint64 ids whose rows are written.
        vectors: `(W, D)` float32 new vectors.
        state: `(W, S)` float32 new optimizer slots.
        event_time: `(W,)` float64; the later of the row's previous and this batch's time.
        wall_time: `(W,)` float64 time of this write.
        count: `(W,)` int64 occurrences including this batch.
        created: `(W,)` bool; the row is new.
        previous_event_time: `(W,)` float64 the row's event time before (0 where created).
        pending_ids: `(P,)` uint64 ids refused by a counting filter, whose counts are kept.
        pending_counts: `(P,)` int64 their counts.
        filtered: how many ids were refused.
    """

    ids: IdArray
    vectors: FloatArray
    state: FloatArray
    event_time: npt.NDArray[np.float64]
    wall_time: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]
    created: npt.NDArray[np.bool_]
    previous_event_time: npt.NDArray[np.float64]
    pending_ids: IdArray
    pending_counts: npt.NDArray[np.int64]
    filtered: int


def check_ids(ids: object, *, unique: bool = False) -> IdArray:
    """`ids` as a `(B,)` uint64 array.

    Raises:
        InvalidInput: not a 1-d uint64 array, or duplicates where `unique` is asked.
    """
    arr = np.asarray(ids)
    if arr.ndim != 1 or arr.dtype != np.uint64:
        raise InvalidInput(f"ids must be a (B,) uint64 array, got {arr.dtype} {arr.shape}")
    if unique and np.unique(arr).shape[0] != arr.shape[0]:
        raise InvalidInput("ids must be unique here (sum gradients per id first)")
    return arr


def fresh_rows(
    config: TableConfig, optimizer: Optimizer, ids: IdArray
) -> tuple[FloatArray, FloatArray]:
    """Initial vectors `(U, D)` and optimizer slots `(U, S)` of rows that do not exist yet."""
    vectors = initial_vectors(config.initializer, ids, config.dim)
    return vectors, optimizer.initial_state(vectors)


def plan_update(
    config: TableConfig,
    optimizer: Optimizer,
    pulled: Pulled,
    *,
    grads: FloatArray,
    occurrences: npt.NDArray[np.int64],
    event_time: npt.NDArray[np.float64],
    now: float,
) -> UpdatePlan:
    """Apply the admission filter and optimizer to one batch of pulled rows.

    Args:
        config: the table.
        optimizer: its optimizer.
        pulled: `U` rows as `pull` returned them.
        grads: `(U, D)` float32 summed gradients.
        occurrences: `(U,)` occurrences per id in the batch.
        event_time: `(U,)` latest event time per id in the batch.
        now: wall-clock time of the write (unix seconds).

    Returns:
        The plan to persist.

    Raises:
        InvalidInput: shapes that do not match the pulled ids or the table's dimension.
    """
    n = int(pulled.ids.shape[0])
    grads = np.asarray(grads, dtype=np.float32)
    occurrences = np.asarray(occurrences, dtype=np.int64).reshape(-1)
    event_time = np.asarray(event_time, dtype=np.float64).reshape(-1)
    if grads.shape != (n, config.dim):
        raise InvalidInput(f"grads must be ({n}, {config.dim}), got {grads.shape}")
    if occurrences.shape != (n,) or event_time.shape != (n,):
        raise InvalidInput(f"occurrences and event_time must be ({n},)")
    if pulled.vectors.shape != (n, config.dim):
        raise InvalidInput(f"pulled vectors must be ({n}, {config.dim})")
    decision = decide_admission(
        config.admission,
        pulled.ids,
        exists=pulled.exists,
        prior_counts=pulled.count,
        occurrences=occurrences,
        event_time=event_time,
    )
    admitted = decision.admitted
    vectors = np.array(pulled.vectors[admitted], dtype=np.float32)
    state = np.array(pulled.state[admitted], dtype=np.float32)
    optimizer.step(vectors, state, grads[admitted])
    exists = pulled.exists[admitted]
    previous = np.where(exists, pulled.event_time[admitted], 0.0)
    new_time = np.where(exists, np.maximum(previous, event_time[admitted]), event_time[admitted])
    refused = ~admitted
    pending = refused if keeps_counts(config.admission) else np.zeros(n, dtype=np.bool_)
    return UpdatePlan(
        ids=pulled.ids[admitted],
        vectors=vectors,
        state=state,
        event_time=new_time.astype(np.float64),
        wall_time=np.full(int(admitted.sum()), now, dtype=np.float64),
        count=np.minimum(decision.counts[admitted], COUNT_MAX),
        created=~exists,
        previous_event_time=previous.astype(np.float64),
        pending_ids=pulled.ids[pending],
        pending_counts=np.minimum(decision.counts[pending], COUNT_MAX),
        filtered=int(refused.sum()),
    )
