"""`read_event` (the trainer's fast reader) accepts and rejects exactly what `decode_event` does."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest

from freshrec.stream.events import (
    CONTEXT_KEY_MAX_CHARS,
    CONTEXT_MAX_ENTRIES,
    CONTEXT_VALUE_MAX_CHARS,
    EARLIEST_TIMESTAMP_S,
    ID_MAX_CHARS,
    UINT64_MAX,
    Event,
    PoisonMessage,
)
from freshrec.stream.messages import (
    ConsumedEvent,
    _plainly_valid,
    decode_event,
    encode_event,
    read_event,
)
from tests.unit.stream.samples import NOW, sample_event


def _body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"v": 1, **sample_event(), "accepted_at": NOW}
    body.update(overrides)
    return body


def _dumps(body: dict[str, Any]) -> bytes:
    # the standard library writes integers beyond 64 bits too
    return json.dumps(body, allow_nan=False).encode()


def _outcome(read: Any, raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", read(raw)
    except PoisonMessage as exc:
        return "poison", exc.reason


def _same_as_decode(raw: bytes) -> tuple[str, Any]:
    expected = _outcome(decode_event, raw)
    got = _outcome(read_event, raw)
    if expected[0] == "ok":
        assert got == ("ok", ConsumedEvent.of(expected[1]))
    else:
        assert got == expected
    return got


def test_what_encode_event_writes_takes_the_fast_path() -> None:
    events = [
        Event.model_validate(
            {k: v for k, v in _body().items() if k not in {"v", "accepted_at"}},
            context={"now": NOW},
        ),
        Event(event_id="r", type="rating", user_id=7, item_id="i", timestamp=NOW, value=4.0),
        Event(event_id="i", type="impression", user_id=UINT64_MAX, item_id=0, timestamp=NOW),
    ]
    for event in events:
        raw = encode_event(event, NOW)
        assert _plainly_valid(orjson.loads(raw)) is not None
        kind, consumed = _same_as_decode(raw)
        assert kind == "ok"
        assert consumed.type == event.type.value
        assert consumed.user_id == event.user_id


@pytest.mark.parametrize(
    "changes",
    [
        {"timestamp": int(NOW)},  # an integer time: valid, left to the full validation
        {"value": 5, "type": "rating"},
        {"accepted_at": int(NOW)},
        {"context": None},
        {"context": {}},
        {"request_id": None},
        {"timestamp": EARLIEST_TIMESTAMP_S},
        {"timestamp": NOW + 300.0},
        {"user_id": 0},
        {"item_id": "x" * ID_MAX_CHARS},
        {"context": {f"k{i}": i for i in range(CONTEXT_MAX_ENTRIES)}},
        {"context": {"k" * CONTEXT_KEY_MAX_CHARS: "v" * CONTEXT_VALUE_MAX_CHARS}},
        {"context": {"n": -(2**63)}},
    ],
)
def test_valid_messages_read_the_same(changes: dict[str, Any]) -> None:
    kind, _ = _same_as_decode(_dumps(_body(**changes)))
    assert kind == "ok"


@pytest.mark.parametrize(
    "changes",
    [
        {"user_id": True},
        {"user_id": -1},
        {"user_id": ""},
        {"user_id": "x" * (ID_MAX_CHARS + 1)},
        {"item_id": 2**64},
        {"item_id": 1.5},
        {"event_id": ""},
        {"event_id": 5},
        {"type": "bought"},
        {"type": None},
        {"request_id": ""},
        {"timestamp": EARLIEST_TIMESTAMP_S - 1},
        {"timestamp": NOW + 301.0},
        {"timestamp": "now"},
        {"timestamp": True},
        {"value": None, "type": "rating"},
        {"value": "5"},
        {"value": False},
        {"accepted_at": "now"},
        {"context": []},
        {"context": {"": "v"}},
        {"context": {"k" * (CONTEXT_KEY_MAX_CHARS + 1): "v"}},
        {"context": {"k": "v" * (CONTEXT_VALUE_MAX_CHARS + 1)}},
        {"context": {"k": True}},
        {"context": {"k": None}},
        {"context": {"k": [1]}},
        {"context": {"k": {"nested": 1}}},
        {"context": {f"k{i}": i for i in range(CONTEXT_MAX_ENTRIES + 1)}},
        {"extra": 1},
        {"v": 2},
    ],
)
def test_invalid_messages_are_the_same_poison(changes: dict[str, Any]) -> None:
    kind, _ = _same_as_decode(_dumps(_body(**changes)))
    assert kind == "poison"


def test_missing_fields_are_the_same_poison() -> None:
    for field in ("event_id", "type", "user_id", "item_id", "timestamp", "accepted_at"):
        body = _body()
        del body[field]
        kind, _ = _same_as_decode(_dumps(body))
        assert kind == "poison", field


def test_random_mutations_never_split_the_two_readers() -> None:
    """Fields swapped for values drawn from every JSON type and bound edge."""
    rng = random.Random(7)
    pool: list[Any] = [
        None, True, False, 0, -1, 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 0.5, -0.5,
        NOW, NOW + 300.0, NOW + 300.5, EARLIEST_TIMESTAMP_S, EARLIEST_TIMESTAMP_S - 0.1,
        "", "a", "click", "rating", "impression", "x" * 128, "x" * 129, "x" * 257,
        [], [1], {}, {"k": 1}, {"k": "v" * 256}, {"k": None}, {"": 1},
    ]  # fmt: skip
    fields = list(_body())
    accepted = 0
    for _ in range(3000):
        body = _body()
        for field in rng.sample(fields, rng.randint(1, 3)):
            if rng.random() < 0.1:
                body.pop(field, None)
            else:
                body[field] = rng.choice(pool)
        kind, _ = _same_as_decode(_dumps(body))
        accepted += kind == "ok"
    assert accepted > 0  # the mutations reach both outcomes
