"""The values the table seam passes around: id and float arrays, rows, pulls, results, feed.

They live apart from the interfaces in `base` so helpers the interfaces use (`update`) can
import them without a cycle; `base` re-exports every name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

__all__ = [
    "Change",
    "ChangeOp",
    "FeedLag",
    "FloatArray",
    "IdArray",
    "LookupResult",
    "Pulled",
    "Rows",
    "TableStats",
    "UpdateResult",
]

IdArray = npt.NDArray[np.uint64]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class LookupResult:
    """Vectors for a batch of ids, in the order asked.

    Attributes:
        vectors: `(B, D)` float32; the table's default vector where `exists` is False.
        exists: `(B,)` bool; True where a row exists (admitted and not expired).
    """

    vectors: FloatArray
    exists: npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Rows:
    """Full rows: what a snapshot, an export or an operator sees.

    Attributes:
        ids: `(N,)` uint64.
        vectors: `(N, D)` float32.
        state: `(N, S)` float32 optimizer slots (`S = optimizer.state_width(D)`; 0 for SGD).
        event_time: `(N,)` float64, event time (unix seconds) of the last update.
        wall_time: `(N,)` float64, wall-clock time (unix seconds) of the last write.
        count: `(N,)` int64, occurrences seen (including those before admission).
    """

    ids: IdArray
    vectors: FloatArray
    state: FloatArray
    event_time: npt.NDArray[np.float64]
    wall_time: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def take(self, keep: npt.NDArray[np.bool_] | npt.NDArray[np.intp] | slice) -> Rows:
        """The rows `keep` selects: a `(N,)` mask, an index array or a slice, in its order."""
        return Rows(
            ids=self.ids[keep],
            vectors=self.vectors[keep],
            state=self.state[keep],
            event_time=self.event_time[keep],
            wall_time=self.wall_time[keep],
            count=self.count[keep],
        )

    @classmethod
    def concat(cls, parts: Sequence[Rows], dim: int, state_width: int = 0) -> Rows:
        """`parts` one after the other (no rows of width `dim` / `state_width` when empty)."""
        if not parts:
            return cls(
                ids=np.zeros(0, dtype=np.uint64),
                vectors=np.zeros((0, dim), dtype=np.float32),
                state=np.zeros((0, state_width), dtype=np.float32),
                event_time=np.zeros(0, dtype=np.float64),
                wall_time=np.zeros(0, dtype=np.float64),
                count=np.zeros(0, dtype=np.int64),
            )
        return cls(
            ids=np.concatenate([p.ids for p in parts]),
            vectors=np.concatenate([p.vectors for p in parts]),
            state=np.concatenate([p.state for p in parts]),
            event_time=np.concatenate([p.event_time for p in parts]),
            wall_time=np.concatenate([p.wall_time for p in parts]),
            count=np.concatenate([p.count for p in parts]),
        )


@dataclass(frozen=True)
class Pulled:
    """Rows read for one training step, for `U` unique ids.

    Attributes:
        ids: `(U,)` uint64, unique.
        vectors: `(U, D)` float32; the deterministic initial vector where no row exists.
        state: `(U, S)` float32 optimizer slots (zeros / initial values where no row exists).
        exists: `(U,)` bool; a row exists now.
        count: `(U,)` int64 occurrences counted so far (counting filter), 0 when unknown.
        event_time: `(U,)` float64 event time of the last update (0 where no row).
    """

    ids: IdArray
    vectors: FloatArray
    state: FloatArray
    exists: npt.NDArray[np.bool_]
    count: npt.NDArray[np.int64]
    event_time: npt.NDArray[np.float64]

    def take(self, index: npt.NDArray[np.intp], ids: IdArray) -> Pulled:
        """The pulled rows at `index` (`(M,)` positions, repeats allowed), renamed to `ids`."""
        return Pulled(
            ids=ids,
            vectors=self.vectors[index],
            state=self.state[index],
            exists=self.exists[index],
            count=self.count[index],
            event_time=self.event_time[index],
        )


@dataclass(frozen=True)
class UpdateResult:
    """What a `push` staged.

    Attributes:
        written: `(W,)` uint64 ids whose rows were written (created or updated).
        created: how many of `written` are new rows.
        filtered: ids whose update was dropped because the admission filter refused them.
    """

    written: IdArray
    created: int
    filtered: int


@dataclass(frozen=True)
class TableStats:
    """Counters and sizes of one table (counters since the table was created)."""

    rows: int
    bytes: int
    created_total: int
    filtered_total: int
    expired_total: int


class ChangeOp(StrEnum):
    """What a change-feed entry says about its ids."""

    UPSERT = "upsert"
    DELETE = "delete"


@dataclass(frozen=True)
class Change:
    """One change-feed entry: `ids` were upserted or deleted; `cursor` resumes after it.

    Attributes:
        written_at: unix seconds the entry was written, when the backend knows it and the
            cursor does not say it itself (a sharded feed's composite cursor).
    """

    cursor: str
    op: ChangeOp
    ids: IdArray
    written_at: float | None = None


class FeedLag:
    """How far a reader of a change feed trails its end: 0 while its polls reach the end,
    else the seconds since the last poll that did."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._caught_up_at = clock()
        self._behind = False

    def polled(self, reached_end: bool) -> None:
        """Record one poll of the feed and whether it reached the end."""
        if reached_end:
            self._caught_up_at = self._clock()
        self._behind = not reached_end

    def seconds(self) -> float:
        """0 while polls reach the end of the feed, else seconds since the last that did."""
        return self._clock() - self._caught_up_at if self._behind else 0.0
