"""Producer retries trained once: a window of recent event ids per partition.

Ingest answers 202 only after Kafka acknowledged a batch, so a producer that got a 503 or no
answer retries the batch, and the topic may then hold two copies of some events. Events of one
user share a partition (the message key is the user id), so both copies of an event land in the
same partition, usually a few messages apart.

Per partition the trainer keeps the 64-bit hash of the event id of each of the last `size`
messages, in a ring indexed by `offset % size`; a message whose event id is already in its
partition's window is a duplicate: its offset is consumed, but it is neither trained nor
dead-lettered. The ring lives in Redis as one string of `8 * size` bytes per partition, and each
batch writes its new slots in the same transaction as its rows and offsets; on (re)assignment the
trainer reads the ring back and rebuilds the window of offsets `[next - size, next)`. So a crash
at any point can make a retry neither count twice nor be lost. See docs/specs/trainer-state.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from freshrec.table.ids import hash_feature

__all__ = ["EMPTY_SLOT", "DedupWindow", "RingWrite", "event_hash", "slot_runs"]

EMPTY_SLOT = 0
"""Ring value of a slot that holds no event id (a dead letter, a duplicate, never written)."""

_SLOT_BYTES = 8


def slot_runs(slots: Iterable[int]) -> Iterator[tuple[int, int]]:
    """The maximal runs of consecutive slots in `slots`, as `(start, stop)` (stop exclusive),
    in slot order.

    A state blob's changed slots are written as one SETRANGE per run, not one per slot.
    """
    ordered = np.unique(np.fromiter(slots, dtype=np.int64))
    if not ordered.shape[0]:
        return
    breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
    starts = ordered[np.concatenate([[0], breaks])]
    stops = ordered[np.concatenate([breaks - 1, [-1]])] + 1
    yield from zip(starts.tolist(), stops.tolist(), strict=True)


@dataclass(frozen=True)
class RingWrite:
    """Bytes to write into a partition's ring: `data` at byte `start` of the string `key`."""

    key: str
    start: int
    data: bytes


@dataclass
class _Partition:
    ring: npt.NDArray[np.uint64]
    members: set[int]
    next_offset: int | None = None
    dirty: list[int] = field(default_factory=list)  # ring slots changed since the last drain


def event_hash(event_id: str) -> int:
    """The 64-bit hash an event id is remembered by (never `EMPTY_SLOT`)."""
    return hash_feature("event_id", event_id) or 1


class DedupWindow:
    """The last `size` event ids of every partition this trainer consumed.

    Args:
        size: messages remembered per partition: a copy arriving more than `size` messages of
            its partition after the first is no longer recognised.
        key_prefix: namespace-relative prefix of the ring keys (the trainer's group).
    """

    def __init__(self, size: int, key_prefix: str) -> None:
        if size < 1:
            raise ValueError("the dedup window holds at least one message")
        self.size = size
        self.key_prefix = key_prefix
        self._partitions: dict[tuple[str, int], _Partition] = {}

    def ring_key(self, topic: str, partition: int) -> str:
        """The metadata key holding one partition's ring."""
        return f"{self.key_prefix}:{topic}:{partition}"

    def load(self, topic: str, partition: int, ring: bytes | None, next_offset: int) -> None:
        """Rebuild one partition's window from its stored ring.

        Args:
            topic: the partition's topic.
            partition: the partition.
            ring: the stored ring (None or shorter than `8 * size` where never fully written).
            next_offset: the committed next offset: the window is `[next_offset - size,
                next_offset)`, and every slot of it was written with its batch.
        """
        values = np.zeros(self.size, dtype=np.uint64)
        if ring:
            stored = np.frombuffer(ring[: self.size * _SLOT_BYTES], dtype="<u8")
            values[: stored.shape[0]] = stored
        # offsets before 0 were never consumed: their slots hold nothing
        for offset in range(next_offset - self.size, min(0, next_offset)):
            values[offset % self.size] = EMPTY_SLOT
        members = {int(v) for v in values if v != EMPTY_SLOT}
        self._partitions[(topic, partition)] = _Partition(values, members, next_offset)

    def forget(self, topic: str, partition: int) -> None:
        """Drop a partition's window (it is no longer owned; a later load rebuilds it)."""
        self._partitions.pop((topic, partition), None)

    def _partition(self, topic: str, partition: int) -> _Partition:
        state = self._partitions.get((topic, partition))
        if state is None:
            state = _Partition(np.zeros(self.size, dtype=np.uint64), set())
            self._partitions[(topic, partition)] = state
        return state

    def admit(self, topic: str, partition: int, offset: int, event_id: str | None) -> bool:
        """Record the message at `offset` and say whether it is the first copy of its event.

        Args:
            topic: the message's topic.
            partition: its partition.
            offset: its offset (offsets of a partition are given in increasing order).
            event_id: its event id; None for a message that is not an event (dead letter).

        Returns:
            False when `event_id` is already in the partition's window (a duplicate).
        """
        state = self._partition(topic, partition)
        if state.next_offset is not None and offset > state.next_offset:
            # offsets the topic skipped (compaction, aborted transactions) hold nothing
            for gap in range(max(state.next_offset, offset - self.size), offset):
                self._put(state, gap, EMPTY_SLOT)
        state.next_offset = offset + 1
        if event_id is None:
            self._put(state, offset, EMPTY_SLOT)
            return True
        value = event_hash(event_id)
        if value in state.members:
            self._put(state, offset, EMPTY_SLOT)
            return False
        self._put(state, offset, value)
        return True

    def _put(self, state: _Partition, offset: int, value: int) -> None:
        slot = offset % self.size
        old = int(state.ring[slot])
        if old != EMPTY_SLOT:
            state.members.discard(old)
        state.ring[slot] = value
        if value != EMPTY_SLOT:
            state.members.add(value)
        state.dirty.append(slot)

    def drain_writes(self) -> Iterator[RingWrite]:
        """The ring writes recorded since the last drain, as contiguous byte ranges.

        Stage every one of them in the transaction that commits the batch's offsets.
        """
        for (topic, partition), state in self._partitions.items():
            if not state.dirty:
                continue
            slots = list(state.dirty)
            state.dirty.clear()
            key = self.ring_key(topic, partition)
            for start, stop in slot_runs(slots):
                data = state.ring[start:stop].astype("<u8").tobytes()
                yield RingWrite(key, start * _SLOT_BYTES, data)
