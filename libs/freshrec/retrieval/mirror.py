"""An in-process copy of the item rows the index holds, kept by the same feed follower.

A recommendation scores hundreds of candidates; reading their rows from Redis costs a few
microseconds per row on the server alone, which caps a ranker at a few hundred requests per
second whatever it does. The `IndexFollower` already reads every changed item row to
update the index; with a mirror attached it writes the same rows here under the same lock,
so the mirror holds exactly the items the index can return, as fresh as the index (the
follower's apply delay, `freshrec_index_apply_delay_seconds`, typically milliseconds).

Memory: `N * (4 * D + 24)` bytes plus a dict entry per item (about 15 MB for 100,000 items
of dimension 32).
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

from freshrec.table.base import FloatArray, IdArray, Rows

__all__ = ["RowMirror"]


class RowMirror:
    """Item rows by id: vector, event and wall update times and occurrence count.

    Thread-safe: the follower writes while request threads read. Reads are vectorised: ids
    are found by binary search in a sorted copy of the held ids (rebuilt when enough new ids
    have arrived), plus a small dict of ids added since; each slot remembers its owner, so a
    slot reused after a removal never answers for the removed id.
    """

    def __init__(self, dim: int, initial_capacity: int = 1024) -> None:
        self.dim = dim
        self._lock = threading.Lock()
        self._slot: dict[int, int] = {}
        self._free: list[int] = []
        self._recent: dict[int, int] = {}  # added since the sorted index was built
        self._sorted_ids = np.zeros(0, dtype=np.uint64)
        self._sorted_slots = np.zeros(0, dtype=np.int64)
        self._owner = np.zeros(initial_capacity, dtype=np.uint64)
        self._alive = np.zeros(initial_capacity, dtype=np.bool_)
        self._vectors = np.zeros((initial_capacity, dim), dtype=np.float32)
        self._event_time = np.zeros(initial_capacity, dtype=np.float64)
        self._wall_time = np.zeros(initial_capacity, dtype=np.float64)
        self._count = np.zeros(initial_capacity, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._slot)

    def _grow(self, needed: int) -> None:
        capacity = self._vectors.shape[0]
        if needed <= capacity:
            return
        extra = max(needed, capacity * 2) - capacity
        self._owner = np.concatenate([self._owner, np.zeros(extra, dtype=np.uint64)])
        self._alive = np.concatenate([self._alive, np.zeros(extra, dtype=np.bool_)])
        self._vectors = np.concatenate(
            [self._vectors, np.zeros((extra, self.dim), dtype=np.float32)]
        )
        self._event_time = np.concatenate([self._event_time, np.zeros(extra)])
        self._wall_time = np.concatenate([self._wall_time, np.zeros(extra)])
        self._count = np.concatenate([self._count, np.zeros(extra, dtype=np.int64)])

    def _reindex(self) -> None:
        ids = np.fromiter(self._slot.keys(), dtype=np.uint64, count=len(self._slot))
        slots = np.fromiter(self._slot.values(), dtype=np.int64, count=len(self._slot))
        order = np.argsort(ids)
        self._sorted_ids, self._sorted_slots = ids[order], slots[order]
        self._recent.clear()

    def put(self, rows: Rows) -> None:
        """Insert or overwrite `rows` (ids unique)."""
        with self._lock:
            self._put(rows)
            if len(self._recent) > max(1024, len(self._slot) // 64):
                self._reindex()

    def _put(self, rows: Rows) -> None:
        slots = np.empty(len(rows), dtype=np.int64)
        top = len(self._slot) + len(self._free)
        for n, key in enumerate(rows.ids.tolist()):
            slot = self._slot.get(key)
            if slot is None:
                if self._free:
                    slot = self._free.pop()
                else:
                    slot, top = top, top + 1
                self._slot[key] = slot
                self._recent[key] = slot
            slots[n] = slot
        self._grow(top)
        self._owner[slots] = rows.ids
        self._alive[slots] = True
        self._vectors[slots] = rows.vectors
        self._event_time[slots] = rows.event_time
        self._wall_time[slots] = rows.wall_time
        self._count[slots] = rows.count

    def remove(self, ids: IdArray) -> int:
        """Forget `ids`; returns how many were held."""
        removed = 0
        with self._lock:
            for key in ids.tolist():
                slot = self._slot.pop(key, None)
                if slot is not None:
                    self._recent.pop(key, None)
                    self._alive[slot] = False
                    self._free.append(slot)
                    removed += 1
        return removed

    def replace(self, rows: Rows) -> None:
        """Hold exactly `rows`."""
        with self._lock:
            self._slot.clear()
            self._free.clear()
            self._recent.clear()
            self._alive[:] = False
            self._put(rows)
            self._reindex()

    def _find(self, ids: IdArray) -> npt.NDArray[np.int64]:
        slots = np.full(ids.shape[0], -1, dtype=np.int64)
        if self._sorted_ids.shape[0]:
            pos = np.minimum(np.searchsorted(self._sorted_ids, ids), self._sorted_ids.shape[0] - 1)
            hit = self._sorted_ids[pos] == ids
            slots[hit] = self._sorted_slots[pos[hit]]
        held = slots >= 0
        # the index's slot of an id removed since it was built holds nothing, or another id
        held[held] = self._alive[slots[held]] & (self._owner[slots[held]] == ids[held])
        slots[~held] = -1
        if self._recent:  # added since the index was built (perhaps again, in a new slot)
            for n in np.flatnonzero(~held).tolist():
                slots[n] = self._recent.get(int(ids[n]), -1)
        return slots

    def read_rows(self, ids: IdArray) -> Rows:
        """The held rows of `ids`, in the order asked, ids not held skipped (as
        `EmbeddingStore.read_rows`); optimizer state is not mirrored (width 0)."""
        with self._lock:
            slots = self._find(ids)
            held = slots >= 0
            slots = slots[held]
            vectors: FloatArray = self._vectors[slots]
            event_time: npt.NDArray[np.float64] = self._event_time[slots]
            wall_time: npt.NDArray[np.float64] = self._wall_time[slots]
            count: npt.NDArray[np.int64] = self._count[slots]
        return Rows(
            ids=ids[held],
            vectors=vectors,
            state=np.zeros((slots.shape[0], 0), dtype=np.float32),
            event_time=event_time,
            wall_time=wall_time,
            count=count,
        )
