"""`EventIngestor` over the reference sink: all-or-nothing batches, bounds, metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import anyio
import orjson
import pytest
from prometheus_client import REGISTRY

from freshrec.errors import BrokerUnavailable, Overloaded, PayloadTooLarge
from freshrec.stream import Event, EventIngestor, InMemoryEventSink, InvalidEvents, decode_event

NOW = 1_750_000_000.0


def _event(i: int, user: str = "u", **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"e-{i}",
        "type": "click",
        "user_id": user,
        "item_id": i,
        "timestamp": NOW - 1,
    }
    event.update(overrides)
    return event


def _body(events: list[Any]) -> bytes:
    return orjson.dumps({"events": events})


def _ingestor(sink: InMemoryEventSink, **kwargs: Any) -> EventIngestor:
    return EventIngestor(sink, clock=lambda: NOW, **kwargs)


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_accepted_batch_lands_in_order_keyed_by_user() -> None:
    sink = InMemoryEventSink()
    accepted_before = _sample("freshrec_ingest_events_accepted_total")
    n = _ingestor(sink).ingest_sync(_body([_event(i, user=f"u{i % 2}") for i in range(5)]))
    assert n == 5
    messages = sink.messages
    assert [key for key, _ in messages] == [b"u0", b"u1", b"u0", b"u1", b"u0"]
    decoded = [decode_event(value) for _, value in messages]
    assert [e.event_id for e in decoded] == [f"e-{i}" for i in range(5)]
    assert {e.accepted_at for e in decoded} == {NOW}
    assert _sample("freshrec_ingest_events_accepted_total") == accepted_before + 5


def test_invalid_event_rejects_the_whole_batch_and_names_each_problem() -> None:
    sink = InMemoryEventSink()
    rejected_before = _sample(
        "freshrec_ingest_events_rejected_total", {"reason": "missing", "field": "user_id"}
    )
    innocent_before = _sample(
        "freshrec_ingest_events_rejected_total",
        {"reason": "rejected_with_batch", "field": "<event>"},
    )
    body = _body([_event(0), {**_event(1), "user_id": None}, _event(2), _event(3, timestamp=1.0)])
    body = body.replace(b'"user_id":null,', b"")
    with pytest.raises(InvalidEvents) as info:
        _ingestor(sink).ingest_sync(body)
    assert sink.messages == []
    assert [(d["index"], d["field"], d["type"]) for d in info.value.details] == [
        (1, "user_id", "missing"),
        (3, "timestamp", "timestamp_too_old"),
    ]
    assert "2 of 4" in info.value.message
    assert (
        _sample("freshrec_ingest_events_rejected_total", {"reason": "missing", "field": "user_id"})
        == rejected_before + 1
    )
    assert (
        _sample(
            "freshrec_ingest_events_rejected_total",
            {"reason": "rejected_with_batch", "field": "<event>"},
        )
        == innocent_before + 2
    )


def test_unknown_event_field_counts_under_a_fixed_label() -> None:
    before = _sample(
        "freshrec_ingest_events_rejected_total", {"reason": "extra_forbidden", "field": "extra"}
    )
    with pytest.raises(InvalidEvents):
        _ingestor(InMemoryEventSink()).ingest_sync(_body([_event(0, secret_user_field=1)]))
    after = _sample(
        "freshrec_ingest_events_rejected_total", {"reason": "extra_forbidden", "field": "extra"}
    )
    assert after == before + 1


@pytest.mark.parametrize(
    ("body", "field", "error_type"),
    [
        (b"{not json", "body", "json_invalid"),
        (b"[]", "body", "model_type"),
        (b'{"evts": []}', "evts", "extra_forbidden"),
        (b"{}", "events", "missing"),
        (b'{"events": {"a": 1}}', "events", "list_type"),
        (b'{"events": []}', "events", "too_short"),
    ],
)
def test_body_errors_have_no_index(body: bytes, field: str, error_type: str) -> None:
    with pytest.raises(InvalidEvents) as info:
        _ingestor(InMemoryEventSink()).ingest_sync(body)
    assert [(d["index"], d["field"], d["type"]) for d in info.value.details] == [
        (None, field, error_type)
    ]


def test_an_integer_id_beyond_64_bits_is_an_error_at_its_index() -> None:
    body = _body([_event(0), _event(1)]).replace(b'"item_id":1', b'"item_id":18446744073709551616')
    with pytest.raises(InvalidEvents) as info:
        _ingestor(InMemoryEventSink()).ingest_sync(body)
    assert [(d["index"], d["field"]) for d in info.value.details] == [(1, "item_id")]


def test_too_many_events_is_payload_too_large() -> None:
    sink = InMemoryEventSink()
    ingestor = _ingestor(sink, max_batch_events=3)
    assert ingestor.ingest_sync(_body([_event(i) for i in range(3)])) == 3
    with pytest.raises(PayloadTooLarge, match="4 events"):
        ingestor.ingest_sync(_body([_event(i) for i in range(4)]))
    assert len(sink.messages) == 3


def test_future_tolerance_is_configurable() -> None:
    ingestor = _ingestor(InMemoryEventSink(), future_tolerance_s=10)
    assert ingestor.ingest_sync(_body([_event(0, timestamp=NOW + 9)])) == 1
    with pytest.raises(InvalidEvents):
        ingestor.ingest_sync(_body([_event(1, timestamp=NOW + 11)]))


def test_unavailable_sink_raises_broker_unavailable() -> None:
    sink = InMemoryEventSink()
    sink.available = False
    with pytest.raises(BrokerUnavailable):
        _ingestor(sink).ingest_sync(_body([_event(0)]))
    assert sink.messages == []


class _GatedSink(InMemoryEventSink):
    """Holds every batch until `gate` is set, to keep batches in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def send_batch(self, events: Sequence[Event], accepted_at: float | None = None) -> None:
        if not self.gate.wait(timeout=10):
            raise BrokerUnavailable("gate never opened")
        super().send_batch(events, accepted_at)


@pytest.mark.anyio
async def test_batches_over_the_in_flight_bound_are_refused_not_queued() -> None:
    sink = _GatedSink()
    ingestor = _ingestor(sink, max_in_flight_batches=2)
    results: list[int] = []

    async def post(i: int) -> None:
        results.append(await ingestor.ingest(_body([_event(i)])))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(post, 0)
        tasks.start_soon(post, 1)
        deadline = time.monotonic() + 5
        while ingestor.in_flight < 2:
            assert time.monotonic() < deadline, "batches never got in flight"
            await anyio.sleep(0.01)
        with pytest.raises(Overloaded):
            await ingestor.ingest(_body([_event(2)]))
        sink.gate.set()
    assert sorted(results) == [1, 1]
    assert ingestor.in_flight == 0
    assert sorted(orjson.loads(v)["event_id"] for _, v in sink.messages) == ["e-0", "e-1"]
    # the bound is free again
    assert await ingestor.ingest(_body([_event(3)])) == 1


@pytest.mark.anyio
async def test_ready_and_close_follow_the_sink() -> None:
    sink = InMemoryEventSink()
    ingestor = _ingestor(sink)
    assert await ingestor.ready()
    sink.available = False
    assert not await ingestor.ready()
    sink.available = True
    await ingestor.close()
    assert not await ingestor.ready()
    with pytest.raises(BrokerUnavailable):
        await ingestor.ingest(_body([_event(0)]))
