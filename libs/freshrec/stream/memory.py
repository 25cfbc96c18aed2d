"""The reference stream implementations, for tests without a broker.

- `InMemoryEventSink`: the reference `EventSink`, keeping encoded messages in a list.
- `InMemoryEventSource`: the reference `EventSource`: partitions are lists, and a test
  triggers rebalances (`assign`, `revoke`) that take effect inside the next `poll`, as
  Kafka's do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence

from freshrec.errors import BrokerUnavailable
from freshrec.stream.base import (
    EventSink,
    EventSource,
    Message,
    Partition,
    PartitionOwner,
    SourceLag,
)
from freshrec.stream.events import Event
from freshrec.stream.messages import encode_event, event_key

__all__ = ["InMemoryEventSink", "InMemoryEventSource", "PartitionLog"]

PartitionLog = list[list[Message]]
"""The records of a topic: one list per partition, offsets equal to list positions."""


class InMemoryEventSink(EventSink):
    """Keeps `(key, value)` messages exactly as `EventProducer` would produce them.

    Attributes:
        available: when False, `send_batch` raises `BrokerUnavailable` and `ready` is False,
            as the Kafka producer does with its broker down.
    """

    def __init__(self) -> None:
        self.available = True
        self._messages: list[tuple[bytes, bytes]] = []
        self._lock = threading.Lock()
        self._closed = False

    @property
    def messages(self) -> list[tuple[bytes, bytes]]:
        """A copy of the `(key, value)` pairs received so far, in order."""
        with self._lock:
            return list(self._messages)

    def send_batch(self, events: Sequence[Event], accepted_at: float | None = None) -> None:
        """Store every event's message, or none when unavailable or closed."""
        if self._closed:
            raise BrokerUnavailable("event sink is closed")
        if not self.available:
            raise BrokerUnavailable("event sink is unavailable")
        stamp = time.time() if accepted_at is None else accepted_at
        batch = [(event_key(e), encode_event(e, stamp)) for e in events]
        with self._lock:
            self._messages.extend(batch)

    def ready(self) -> bool:
        """True while available and open."""
        return self.available and not self._closed

    def close(self, timeout_s: float = 5.0) -> None:
        """Refuse further batches; the stored messages stay readable."""
        self._closed = True


class InMemoryEventSource(EventSource):
    """A consumer-group member over in-memory partitions, rebalanced by the test.

    The member owns every partition at its first poll. `assign` and `revoke` change the
    assignment at the next poll: the owner hears the revocation, then the new assignment, and
    every owned partition is read again from the offset the owner returns, exactly as
    `KafkaEventSource` does. A restart is a new source over the same `log`.

    Attributes:
        committed: the offsets last reported through `commit_async`.
    """

    def __init__(
        self,
        topic: str = "events",
        partitions: int = 1,
        *,
        log: PartitionLog | None = None,
        start_from_beginning: bool = True,
    ) -> None:
        """Create a source.

        Args:
            topic: the topic name messages carry.
            partitions: partition count of a new log (ignored when `log` is given).
            log: records shared with another source (a restarted member reads the same ones).
            start_from_beginning: where a partition without a stored offset starts.
        """
        self.topic = topic
        self.log: PartitionLog = log if log is not None else [[] for _ in range(partitions)]
        self.committed: dict[Partition, int] = {}
        self._start_from_beginning = start_from_beginning
        self._appended: dict[tuple[Partition, int], float] = {}  # record -> wall time
        self._owner: PartitionOwner | None = None
        self._owned: list[Partition] = []
        self._pending: list[Partition] | None = [(topic, p) for p in range(len(self.log))]
        self._position: dict[Partition, int] = {}
        self._last_handed = 0.0
        self._closed = False
        self._changed = threading.Condition()

    def append(self, partition: int, value: bytes | None, key: bytes | None = None) -> Message:
        """Add one record at the end of `partition` (thread-safe; wakes a waiting poll)."""
        with self._changed:
            records = self.log[partition]
            message = Message(self.topic, partition, len(records), value, key)
            records.append(message)
            self._appended[((self.topic, partition), message.offset)] = time.time()
            self._changed.notify_all()
        return message

    def assign(self, partitions: Sequence[int]) -> None:
        """Make `partitions` the member's whole assignment from the next poll on."""
        with self._changed:
            self._pending = [(self.topic, p) for p in sorted(set(partitions))]
            self._changed.notify_all()

    def revoke(self, partitions: Sequence[int]) -> None:
        """Take `partitions` away from the member at the next poll."""
        with self._changed:
            current = self._owned if self._pending is None else self._pending
            gone = {(self.topic, p) for p in partitions}
            self._pending = [key for key in current if key not in gone]
            self._changed.notify_all()

    def attach(self, owner: PartitionOwner) -> None:
        """Name the owner asked for positions on every assignment."""
        self._owner = owner

    def _rebalance(self, owner: PartitionOwner, owned: list[Partition]) -> None:
        if self._owned:  # an eager rebalance: everything is revoked, then the new set assigned
            revoked, self._owned = self._owned, []
            owner.partitions_revoked(revoked)
        stored = owner.partitions_assigned(owned)
        self._owned = owned
        self._position = {}
        for key in owned:
            start = 0 if self._start_from_beginning else len(self.log[key[1]])
            self._position[key] = stored.get(key, start)

    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        """Up to `max_records` records of owned partitions, waiting up to `timeout_s`."""
        if self._owner is None:
            raise RuntimeError("InMemoryEventSource polled before attach(owner)")
        if self._closed:
            raise BrokerUnavailable("event source is closed")
        with self._changed:
            pending, self._pending = self._pending, None
        if pending is not None:
            try:
                self._rebalance(self._owner, pending)  # outside the lock: the owner may append
            except Exception:
                with self._changed:  # tried again at the next poll
                    self._pending = pending if self._pending is None else self._pending
                raise
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not self._available() and self._pending is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._changed.wait(remaining)
            return self._take(max_records)

    def _available(self) -> bool:
        return any(self._position[key] < len(self.log[key[1]]) for key in self._owned)

    def _take(self, max_records: int) -> list[Message]:
        out: list[Message] = []
        for key in self._owned:
            start = self._position[key]
            records = self.log[key[1]][start : start + max_records - len(out)]
            if records:
                out.extend(records)
                self._position[key] = start + len(records)
                # records another source appended (before a restart) have no known age
                self._last_handed = self._appended.get((key, records[-1].offset), 0.0)
        return out

    def reposition(self) -> None:
        """At the next poll, revoke and assign the owned partitions again (see `EventSource`)."""
        with self._changed:
            if self._pending is None:
                self._pending = list(self._owned)
            self._changed.notify_all()

    def assignment(self) -> list[Partition]:
        """The partitions owned since the last poll that applied a rebalance."""
        return list(self._owned)

    def commit_async(self, offsets: Mapping[Partition, int]) -> None:
        """Record `offsets` of owned partitions in `committed`."""
        self.committed.update({k: v for k, v in offsets.items() if k in self._owned})

    def lag(self) -> SourceLag:
        """Records of owned partitions beyond the read position."""
        with self._changed:
            behind = sum(len(self.log[key[1]]) - self._position[key] for key in self._owned)
        age = max(0.0, time.time() - self._last_handed) if behind and self._last_handed else 0.0
        return SourceLag(behind, age)

    def ready(self) -> bool:
        """True while the member owns a partition."""
        return bool(self._owned) and not self._closed

    def close(self) -> None:
        """Revoke every partition (the owner hears it) and refuse further polls."""
        if self._owned and self._owner is not None:
            revoked, self._owned = self._owned, []
            self._owner.partitions_revoked(revoked)
        self._closed = True
