"""`EventIngestor`: the core of the ingest service, from a posted body to acknowledged events.

Policy for a posted batch (see `docs/specs/events.md`):

- all or nothing: if any event is invalid, nothing is produced and the error lists every
  bad event's index, field and reason;
- more events than `max_batch_events` is `PayloadTooLarge` (413), like an oversized body;
- the call returns only after the sink (Kafka) acknowledged every event;
- at most `max_in_flight_batches` batches are validated or awaiting acknowledgement at a
  time; one more is refused at once with `Overloaded` (429), never queued.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio
import anyio.to_thread
import orjson

from freshrec.errors import BrokerUnavailable, Overloaded, PayloadTooLarge
from freshrec.stream.base import EventSink
from freshrec.stream.events import (
    DEFAULT_FUTURE_TOLERANCE_S,
    DEFAULT_MAX_BATCH_EVENTS,
    Event,
    EventErrorDetail,
    InvalidEvents,
    validate_events,
)
from freshrec.stream.metrics import (
    BATCH_SIZE,
    BATCHES_IN_FLIGHT,
    BATCHES_REJECTED,
    EVENTS_ACCEPTED,
    EVENTS_REJECTED,
)

__all__ = ["EventIngestor"]

logger = logging.getLogger(__name__)

_BATCH_KEYS = frozenset({"events"})


def _field_label(field: str) -> str:
    top = field.split(".", 1)[0]
    if top in Event.model_fields or top == "<event>":
        return top
    return "extra"  # an unknown field's name is client text: never a label value


def _body_error(field: str, reason: str, kind: str) -> InvalidEvents:
    BATCHES_REJECTED.labels("invalid_body").inc()
    detail = EventErrorDetail(index=None, field=field, reason=reason, type=kind)
    return InvalidEvents(f"invalid request body: {reason}", [detail])


class EventIngestor:
    """Validates posted batches and hands them to an `EventSink`, bounded in concurrency.

    Args:
        sink: where accepted events go (`EventProducer` in production).
        max_batch_events: most events in one batch.
        future_tolerance_s: how far in the future an event time may lie.
        max_in_flight_batches: most batches being processed at once.
        clock: wall clock for the timestamp bound and `accepted_at`.
    """

    def __init__(
        self,
        sink: EventSink,
        *,
        max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS,
        future_tolerance_s: float = DEFAULT_FUTURE_TOLERANCE_S,
        max_in_flight_batches: int = 16,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_batch_events < 1 or max_in_flight_batches < 1:
            raise ValueError("max_batch_events and max_in_flight_batches must be >= 1")
        self.sink = sink
        self.max_batch_events = max_batch_events
        self.future_tolerance_s = future_tolerance_s
        self.max_in_flight_batches = max_in_flight_batches
        self._clock = clock
        self._in_flight = 0
        # own worker threads: a Kafka outage must not use up the threads other routes share
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def in_flight(self) -> int:
        """Batches being processed now."""
        return self._in_flight

    async def ingest(self, body: bytes) -> int:
        """Validate a posted body and produce its events; see the module docstring.

        Args:
            body: the raw request body, `{"events": [...]}` as JSON.

        Returns:
            The number of events the broker acknowledged (all of them).

        Raises:
            Overloaded: `max_in_flight_batches` batches are already in progress.
            PayloadTooLarge: more than `max_batch_events` events.
            InvalidEvents: the body or any event is invalid; `details` names each problem.
            BrokerUnavailable: the broker did not acknowledge every event.
        """
        if self._in_flight >= self.max_in_flight_batches:
            BATCHES_REJECTED.labels("overloaded").inc()
            raise Overloaded(f"{self._in_flight} batches are already in progress; retry shortly")
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.max_in_flight_batches)
        self._in_flight += 1
        BATCHES_IN_FLIGHT.inc()
        try:
            return await anyio.to_thread.run_sync(self.ingest_sync, body, limiter=self._limiter)
        finally:
            self._in_flight -= 1
            BATCHES_IN_FLIGHT.dec()

    def ingest_sync(self, body: bytes) -> int:
        """`ingest` without the concurrency bound, blocking; for worker threads and tools."""
        events = self.parse(body)
        try:
            self.sink.send_batch(events, accepted_at=self._clock())
        except BrokerUnavailable:
            BATCHES_REJECTED.labels("broker_unavailable").inc()
            raise
        EVENTS_ACCEPTED.inc(len(events))
        return len(events)

    def parse(self, body: bytes) -> list[Event]:
        """Parse and validate a posted body into its events, all or nothing.

        Raises:
            PayloadTooLarge: more than `max_batch_events` events.
            InvalidEvents: the body or any event is invalid.
        """
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _body_error("body", f"not valid JSON: {exc}", "json_invalid") from exc
        if not isinstance(payload, dict):
            raise _body_error("body", 'must be a JSON object {"events": [...]}', "model_type")
        unknown = sorted(set(payload) - _BATCH_KEYS)
        if unknown:
            raise _body_error(unknown[0][:64], "unknown field", "extra_forbidden")
        if "events" not in payload:
            raise _body_error("events", "field required", "missing")
        items = payload["events"]
        if not isinstance(items, list):
            raise _body_error("events", "must be an array of events", "list_type")
        if len(items) > self.max_batch_events:
            BATCHES_REJECTED.labels("too_many_events").inc()
            raise PayloadTooLarge(
                f"{len(items)} events in one batch; at most {self.max_batch_events} allowed"
            )
        if not items:
            raise _body_error("events", "must hold at least one event", "too_short")
        valid, errors = validate_events(
            items, now=self._clock(), future_tolerance_s=self.future_tolerance_s
        )
        if errors:
            BATCHES_REJECTED.labels("invalid_events").inc()
            for error in errors:
                EVENTS_REJECTED.labels(error["type"], _field_label(error["field"])).inc()
            if valid:
                EVENTS_REJECTED.labels("rejected_with_batch", "<event>").inc(len(valid))
            bad = len({e["index"] for e in errors})
            raise InvalidEvents(
                f"{bad} of {len(items)} events are invalid; none was accepted", errors
            )
        BATCH_SIZE.observe(len(valid))
        return [event for _, event in valid]

    async def ready(self) -> bool:
        """Whether the sink's backend answers (probed in a worker thread)."""
        return await anyio.to_thread.run_sync(self.sink.ready)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Close the sink, delivering what is pending within `timeout_s`."""
        await anyio.to_thread.run_sync(self.sink.close, timeout_s)
