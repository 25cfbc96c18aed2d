"""Replay of recent interactions: each batch's retrieval softmax also sees a few earlier ones.

A single pass over a stream gives every interaction one gradient step, which leaves the
item rows of a two-tower model far from converged (offline matrix factorisation takes many
epochs). The trainer therefore keeps the last `capacity` interactions as (user row, item row)
pairs in a ring and adds `samples` of them, drawn uniformly by a hash of the batch's first
offset, as extra positives of the retrieval softmax (experience replay, as in continual
learning for recommenders). The ranking head does not replay: its labels are not kept.

Exactly-once: the ring lives in Redis as one string of `16 * capacity` bytes (user row id,
item row id as u64 LE pairs; slot `n % capacity` holds the `n`-th interaction), each batch
writes the slots it filled in the same transaction as its rows and offsets, and the count of
interactions recorded rides in the trainer checkpoint. Draws depend only on that state and
the batch's offset, so a restored trainer draws what an uninterrupted one draws. See
`docs/specs/trainer-state.md`.

A replayed pair updates both rows again, but only where they still exist, and without
moving their event time: replay neither recreates an expired row nor keeps one from
expiring on the event clock (a wall-clock TTL is refreshed by any update, replay included).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from freshrec.training.dedup import RingWrite, slot_runs

__all__ = ["InteractionReplay"]

_SLOT_BYTES = 16
IdArray = npt.NDArray[np.uint64]


def _draws(salt: str, count: int, size: int) -> npt.NDArray[np.int64]:
    out = np.empty(count, dtype=np.int64)
    for j in range(count):
        digest = hashlib.blake2b(f"replay:{salt}:{j}".encode(), digest_size=8).digest()
        out[j] = int.from_bytes(digest, "little") % size
    return out


class InteractionReplay:
    """A ring of the last `capacity` (user row, item row) interactions.

    Args:
        capacity: interactions kept.
        key: metadata key of the stored ring.
    """

    def __init__(self, capacity: int, key: str) -> None:
        if capacity < 1:
            raise ValueError("the replay ring holds at least one interaction")
        self.capacity = capacity
        self.key = key
        self.count = 0
        self.users = np.zeros(capacity, dtype=np.uint64)
        self.items = np.zeros(capacity, dtype=np.uint64)
        self._dirty: set[int] = set()

    def add(self, users: IdArray, items: IdArray) -> None:
        """Record interactions in stream order.

        Args:
            users: `(P,)` user row ids.
            items: `(P,)` item row ids.
        """
        for user, item in zip(users.tolist(), items.tolist(), strict=True):
            slot = self.count % self.capacity
            self.users[slot] = user
            self.items[slot] = item
            self._dirty.add(slot)
            self.count += 1

    def sample(self, count: int, salt: str) -> tuple[IdArray, IdArray]:
        """`count` interactions drawn uniformly (with replacement) from the ring.

        Args:
            count: how many.
            salt: the batch's identity (its first message's position): the same batch
                draws the same slots.

        Returns:
            `(user row ids, item row ids)`, each `(count,)`; empty while the ring is.
        """
        filled = min(self.count, self.capacity)
        if filled == 0 or count == 0:
            empty = np.zeros(0, dtype=np.uint64)
            return empty, empty
        slots = _draws(salt, count, filled)
        return self.users[slots], self.items[slots]

    def load(self, blob: bytes | None, count: int) -> None:
        """Restore the stored ring and the checkpoint's interaction count."""
        pairs = np.zeros((self.capacity, 2), dtype=np.uint64)
        if blob:
            stored = np.frombuffer(blob[: self.capacity * _SLOT_BYTES], dtype="<u8")
            pairs.reshape(-1)[: stored.shape[0]] = stored
        self.users = pairs[:, 0].copy()
        self.items = pairs[:, 1].copy()
        self.count = count
        self._dirty.clear()

    def drain_writes(self) -> Iterator[RingWrite]:
        """The slots filled since the last drain, as contiguous byte ranges."""
        slots = list(self._dirty)
        self._dirty.clear()
        for start, stop in slot_runs(slots):
            pairs = np.stack([self.users[start:stop], self.items[start:stop]], axis=1)
            yield RingWrite(self.key, start * _SLOT_BYTES, pairs.astype("<u8").tobytes())
