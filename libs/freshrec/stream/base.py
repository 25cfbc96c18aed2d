"""The stream seams: where accepted events go, and where the trainer reads them from.

- `EventSink` (producing side): `EventProducer` (Kafka, `producer.py`) is the real
  implementation; `InMemoryEventSink` (`memory.py`) the reference one, used to test ingest
  without a broker.
- `EventSource` (consuming side): what one consumer-group member hands its owner (the
  training loop). `KafkaEventSource` (`consumer.py`) is the real implementation;
  `InMemoryEventSource` (`memory.py`) the reference one, whose rebalances a test triggers.

Positions belong to the owner, never to the source: on every assignment the source asks its
`PartitionOwner` where each partition resumes (the offsets committed with the rows) and
reads from exactly there. A member of a many-trainer deployment (partitions moving between
trainers, a commit record per partition) sits behind the same two hooks.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

from freshrec.stream.events import Event

__all__ = ["EventSink", "EventSource", "Message", "Partition", "PartitionOwner", "SourceLag"]

Partition = tuple[str, int]
"""A `(topic, partition)` pair."""


class Message(NamedTuple):
    """One consumed record."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


class SourceLag(NamedTuple):
    """How far a source's owner is behind the stream it owns.

    Attributes:
        messages: records of owned partitions not yet handed to the owner (fetched ones
            waiting in a buffer count too).
        seconds: age of the last record handed out while more are waiting; 0 when caught up.
    """

    messages: int
    seconds: float


class EventSink(abc.ABC):
    """Takes batches of validated events and makes them durable, all or nothing per call.

    Implementations are blocking and thread-safe: the ingest service calls them from worker
    threads, several batches at a time.
    """

    @abc.abstractmethod
    def send_batch(self, events: Sequence[Event], accepted_at: float | None = None) -> None:
        """Make every event in `events` durable; return only when all of them are.

        Args:
            events: validated events, in the order they were posted.
            accepted_at: ingest wall time stamped on every message; now if None.

        Raises:
            BrokerUnavailable: not every event was acknowledged in time. Some may have been;
                retrying the batch with the same event ids is safe for consumers that
                deduplicate on `event_id`.
        """

    @abc.abstractmethod
    def ready(self) -> bool:
        """Whether the sink's backend answers right now (a bounded, short probe)."""

    @abc.abstractmethod
    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is pending (waiting at most `timeout_s`) and release connections."""


class PartitionOwner(Protocol):
    """What a source calls back, always from inside `EventSource.poll`."""

    def partitions_assigned(self, partitions: Sequence[Partition]) -> Mapping[Partition, int]:
        """The member now owns `partitions` (all of them, not only the new ones).

        The owner restores its checkpoint and drops whatever it had collected but not yet
        committed: the source reads every partition again from the returned position.

        Args:
            partitions: every partition the member owns from now on.

        Returns:
            The next offset to read per partition, as committed with the owner's results. A
            partition missing from the map starts where the source's configuration says
            (the beginning, or the end).
        """

    def partitions_revoked(self, partitions: Sequence[Partition]) -> None:
        """The member no longer owns `partitions`; drop their uncommitted messages."""


class EventSource(abc.ABC):
    """One consumer-group member's view of the events topic.

    Not thread-safe except `ready` and `lag`: one thread polls, and the owner's callbacks run
    inside its `poll`.
    """

    @abc.abstractmethod
    def attach(self, owner: PartitionOwner) -> None:
        """Name the owner whose callbacks decide positions; call it before the first poll."""

    @abc.abstractmethod
    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        """Up to `max_records` messages of owned partitions, each partition in offset order.

        Rebalance callbacks run inside this call, before any message of the new assignment
        is returned. When the owner's callback fails (its store is down), the partitions are
        left unread and the callback is tried again at every later poll; the failure is
        raised from the poll.

        Args:
            max_records: most messages returned (>= 1).
            timeout_s: how long to wait when nothing is ready.

        Returns:
            The messages; empty when none arrived within `timeout_s`.

        Raises:
            BrokerUnavailable: the backend does not answer.
            DependencyUnavailable: the owner's assignment callback failed (tried again at the
                next poll).
        """

    @abc.abstractmethod
    def reposition(self) -> None:
        """At the next poll, ask the owner again where every owned partition resumes.

        For an owner that lost work it had not committed (a dependency failed mid-batch):
        nothing read since its last commit is handed out again from memory; every owned
        partition is read again from the offset the owner returns.
        """

    @abc.abstractmethod
    def assignment(self) -> list[Partition]:
        """The partitions owned right now."""

    @abc.abstractmethod
    def commit_async(self, offsets: Mapping[Partition, int]) -> None:
        """Report committed positions to the backend, for lag tools only (best effort).

        Args:
            offsets: next offset per partition; partitions not owned are ignored.
        """

    @abc.abstractmethod
    def lag(self) -> SourceLag:
        """How far behind the owned partitions the owner is."""

    @abc.abstractmethod
    def ready(self) -> bool:
        """Whether the member owns at least one partition."""

    @abc.abstractmethod
    def close(self) -> None:
        """Leave the group (the revocation still calls the owner) and release resources."""
