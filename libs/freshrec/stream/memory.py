"""`InMemoryEventSink`: the reference `EventSink`, keeping encoded messages in a list."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from freshrec.errors import BrokerUnavailable
from freshrec.stream.base import EventSink
from freshrec.stream.events import Event, encode_event, event_key

__all__ = ["InMemoryEventSink"]


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
