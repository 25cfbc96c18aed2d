"""The event-sink seam: where accepted events go.

`EventProducer` (Kafka, `producer.py`) is the real implementation; `InMemoryEventSink`
(`memory.py`) is the reference one, used to test ingest without a broker.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from freshrec.stream.events import Event

__all__ = ["EventSink"]


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
