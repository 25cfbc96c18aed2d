"""The event contract: every validation rule, the message encoding, poison detection."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from freshrec.stream.events import (
    DEFAULT_FUTURE_TOLERANCE_S,
    DEFAULT_MAX_MESSAGE_BYTES,
    EARLIEST_TIMESTAMP_S,
    POISON_REASONS,
    UINT64_MAX,
    AcceptedEvent,
    Event,
    EventBatch,
    EventType,
    PoisonMessage,
    event_batch_json_schema,
    validate_events,
)
from freshrec.stream.messages import decode_event, encode_event, event_key
from tests.unit.stream.samples import DROP, NOW, sample_event


def _errors(item: object, **kwargs: Any) -> list[tuple[int | None, str, str]]:
    _, errors = validate_events([item], now=NOW, **kwargs)
    return [(e["index"], e["field"], e["type"]) for e in errors]


def test_a_full_event_and_a_minimal_event_are_valid() -> None:
    valid, errors = validate_events(
        [
            sample_event(),
            sample_event(event_id="e-2", request_id=DROP, value=DROP, context=DROP),
            sample_event(event_id="e-3", type="rating", value=4.5, user_id=UINT64_MAX, item_id="i"),
        ],
        now=NOW,
    )
    assert errors == []
    assert [i for i, _ in valid] == [0, 1, 2]
    minimal = valid[1][1]
    assert minimal.request_id is None and minimal.value is None and minimal.context is None
    assert valid[0][1].type is EventType.CLICK
    assert valid[2][1].user_id == UINT64_MAX


@pytest.mark.parametrize("event_type", [t.value for t in EventType])
def test_every_documented_type_is_accepted(event_type: str) -> None:
    value = 3.0 if event_type == "rating" else None
    assert _errors(sample_event(type=event_type, value=value)) == []


@pytest.mark.parametrize(
    ("field", "bad", "error_type"),
    [
        ("event_id", "", "string_too_short"),
        ("event_id", "x" * 129, "string_too_long"),
        ("event_id", 7, "string_type"),
        ("event_id", None, "string_type"),
        ("type", "purchased", "enum"),
        ("type", "CLICK", "enum"),
        ("type", 1, "enum"),
        ("user_id", True, "id_type"),
        ("user_id", 1.5, "id_type"),
        ("user_id", 2.0**53 + 2, "id_type"),
        ("user_id", -1.0, "id_type"),
        ("user_id", -1, "id_range"),
        ("user_id", UINT64_MAX + 1, "id_range"),
        ("user_id", "", "id_length"),
        ("user_id", "u" * 129, "id_length"),
        ("user_id", None, "id_type"),
        ("item_id", False, "id_type"),
        ("item_id", [1], "id_type"),
        ("item_id", -5, "id_range"),
        ("request_id", "", "string_too_short"),
        ("request_id", "r" * 129, "string_too_long"),
        ("request_id", 12, "string_type"),
        ("timestamp", "1750000000", "float_type"),
        ("timestamp", True, "float_type"),
        ("timestamp", None, "float_type"),
        ("timestamp", float("nan"), "finite_number"),
        ("timestamp", float("inf"), "finite_number"),
        ("timestamp", EARLIEST_TIMESTAMP_S - 1, "timestamp_too_old"),
        ("timestamp", 0, "timestamp_too_old"),
        ("timestamp", NOW + 301, "timestamp_in_future"),
        ("timestamp", NOW * 1000, "timestamp_in_future"),
        ("value", "4", "float_type"),
        ("value", True, "float_type"),
        ("value", float("inf"), "finite_number"),
        ("context", ["a"], "dict_type"),
        ("context", "device=ios", "dict_type"),
    ],
)
def test_each_field_rule_names_the_field(field: str, bad: object, error_type: str) -> None:
    assert _errors(sample_event(**{field: bad})) == [(0, field, error_type)]


def test_a_whole_float_id_is_the_integer_it_spells_up_to_2_53() -> None:
    # JSON Schema's `integer` admits 42.0, and so must the server that publishes the schema
    valid, errors = validate_events([sample_event(user_id=42.0, item_id=2.0**53)], now=NOW)
    assert errors == []
    event = valid[0][1]
    assert (event.user_id, event.item_id) == (42, 2**53)
    assert type(event.user_id) is int and event_key(event) == b"42"


@pytest.mark.parametrize("field", ["event_id", "type", "user_id", "item_id", "timestamp"])
def test_required_fields(field: str) -> None:
    assert _errors(sample_event(**{field: DROP})) == [(0, field, "missing")]


def test_timestamp_within_tolerance_and_custom_tolerance() -> None:
    assert _errors(sample_event(timestamp=NOW + 299)) == []
    assert _errors(sample_event(timestamp=NOW + 299), future_tolerance_s=60) == [
        (0, "timestamp", "timestamp_in_future")
    ]
    assert _errors(sample_event(timestamp=EARLIEST_TIMESTAMP_S)) == []
    assert _errors(sample_event(timestamp=int(NOW))) == []


def test_rating_needs_a_value_other_types_do_not() -> None:
    assert _errors(sample_event(type="rating", value=None)) == [(0, "value", "value_required")]
    assert _errors(sample_event(type="rating", value=DROP)) == [(0, "value", "value_required")]
    assert _errors(sample_event(type="click", value=DROP)) == []
    assert _errors(sample_event(type="rating", value=5)) == []


@pytest.mark.parametrize(
    ("context", "field", "error_type"),
    [
        ({f"k{i}": i for i in range(33)}, "context", "too_long"),
        ({"k" * 65: 1}, "context." + "k" * 65, "string_too_long"),
        ({"": 1}, "context.", "string_too_short"),
        ({"device": "x" * 257}, "context.device", "context_value_length"),
        ({"flag": True}, "context.flag", "context_value_type"),
        ({"nested": {"a": 1}}, "context.nested", "context_value_type"),
        ({"list": [1]}, "context.list", "context_value_type"),
        ({"none": None}, "context.none", "context_value_type"),
        ({"huge": 2**64}, "context.huge", "context_value_range"),
        ({"nan": float("nan")}, "context.nan", "finite_number"),
    ],
)
def test_context_rules(context: dict[str, Any], field: str, error_type: str) -> None:
    assert _errors(sample_event(context=context)) == [(0, field, error_type)]


def test_context_bounds_are_inclusive() -> None:
    context: dict[str, Any] = {f"k{i}": i for i in range(31)}
    context["k" * 64] = "v" * 256
    assert len(context) == 32
    assert _errors(sample_event(context=context)) == []
    assert _errors(sample_event(context={"neg": -(2**63), "big": UINT64_MAX})) == []


def test_unknown_field_and_non_object_element() -> None:
    assert _errors(sample_event(accepted_at=NOW)) == [(0, "accepted_at", "extra_forbidden")]
    assert _errors(sample_event(userId="x")) == [(0, "userId", "extra_forbidden")]
    assert _errors("not an event") == [(0, "<event>", "model_type")]
    assert _errors(None) == [(0, "<event>", "model_type")]


def test_one_bad_event_does_not_hide_the_others() -> None:
    items: list[object] = [
        sample_event(event_id="a"),
        sample_event(event_id="b", timestamp="yesterday", user_id=True),
        sample_event(event_id="c"),
        17,
        sample_event(event_id="a"),
        sample_event(event_id="d", context={"x" * 80: 1}),
    ]
    valid, errors = validate_events(items, now=NOW)
    assert [i for i, _ in valid] == [0, 2]
    assert [(e["index"], e["field"], e["type"]) for e in errors] == [
        (1, "user_id", "id_type"),
        (1, "timestamp", "float_type"),
        (3, "<event>", "model_type"),
        (4, "event_id", "duplicate_event_id"),
        (5, "context." + "x" * 80, "string_too_long"),
    ]
    assert "index 0" in errors[3]["reason"]
    assert all(e["reason"] for e in errors)


def test_a_non_list_is_one_body_error() -> None:
    valid, errors = validate_events({"events": []}, now=NOW)
    assert valid == []
    assert errors == [
        {
            "index": None,
            "field": "events",
            "reason": "must be an array of events",
            "type": "list_type",
        }
    ]


def test_event_validated_without_context_uses_the_wall_clock() -> None:
    now = time.time()
    Event.model_validate(sample_event(timestamp=now + 200))
    with pytest.raises(ValidationError, match="future"):
        Event.model_validate(sample_event(timestamp=now + 400))


def test_event_batch_bounds() -> None:
    batch = EventBatch.model_validate({"events": [sample_event(timestamp=time.time())]})
    assert len(batch.events) == 1
    with pytest.raises(ValidationError, match="too_short"):
        EventBatch.model_validate({"events": []})
    three = {"events": [sample_event(event_id=str(i), timestamp=time.time()) for i in range(3)]}
    with pytest.raises(ValidationError, match="at most 2 events"):
        EventBatch.model_validate(three, context={"max_batch_events": 2})


def test_the_batch_schema_states_the_bounds_validation_checks() -> None:
    schema = event_batch_json_schema(max_batch_events=7, now=NOW, future_tolerance_s=60)
    assert "$ref" not in orjson.dumps(schema).decode()
    events = schema["properties"]["events"]
    assert (events["minItems"], events["maxItems"]) == (1, 7)
    timestamp = events["items"]["properties"]["timestamp"]
    assert (timestamp["minimum"], timestamp["maximum"]) == (EARLIEST_TIMESTAMP_S, NOW + 60)
    at_bounds = [sample_event(timestamp=EARLIEST_TIMESTAMP_S), sample_event(timestamp=NOW + 60)]
    for event in at_bounds:
        assert _errors(event, future_tolerance_s=60) == []
    assert _errors(sample_event(timestamp=NOW + 60.001), future_tolerance_s=60) == [
        (0, "timestamp", "timestamp_in_future")
    ]
    assert _errors(sample_event(timestamp=EARLIEST_TIMESTAMP_S - 0.001)) == [
        (0, "timestamp", "timestamp_too_old")
    ]


def test_the_batch_schema_says_a_rating_carries_a_number() -> None:
    event = event_batch_json_schema(now=NOW)["properties"]["events"]["items"]
    assert event["if"] == {"properties": {"type": {"const": "rating"}}, "required": ["type"]}
    assert event["then"] == {"properties": {"value": {"type": "number"}}, "required": ["value"]}


def test_the_batch_schema_bound_follows_the_clock() -> None:
    before = time.time()
    schema = event_batch_json_schema()
    latest = schema["properties"]["events"]["items"]["properties"]["timestamp"]["maximum"]
    assert before + DEFAULT_FUTURE_TOLERANCE_S <= latest <= time.time() + DEFAULT_FUTURE_TOLERANCE_S


# ---------------------------------------------------------------- encoding


def test_encode_decode_round_trip_keeps_every_field() -> None:
    event = Event.model_validate(
        sample_event(type="rating", value=4.0, user_id=UINT64_MAX, item_id="i-9"),
        context={"now": NOW},
    )
    raw = encode_event(event, accepted_at=NOW + 0.5)
    body = orjson.loads(raw)
    assert list(body) == ["v", *Event.model_fields, "accepted_at"]
    assert body["v"] == 1
    assert body["accepted_at"] == NOW + 0.5
    assert body["type"] == "rating"
    assert body["user_id"] == UINT64_MAX

    decoded = decode_event(raw)
    assert isinstance(decoded, AcceptedEvent)
    assert decoded.accepted_at == NOW + 0.5
    assert Event.model_validate(decoded.model_dump(exclude={"accepted_at"})) == event
    assert decoded.model_dump(exclude={"accepted_at"}) == event.model_dump()


def test_optional_fields_are_written_as_null() -> None:
    event = Event.model_validate(
        sample_event(request_id=DROP, value=DROP, context=DROP), context={"now": NOW}
    )
    body = orjson.loads(encode_event(event, NOW))
    assert body["request_id"] is None and body["value"] is None and body["context"] is None
    assert decode_event(encode_event(event, NOW)).context is None


def test_key_is_the_user_id_as_utf8_text() -> None:
    assert event_key(Event.model_validate(sample_event(user_id="ü-1"), context={"now": NOW})) == (
        "ü-1".encode()
    )
    assert event_key(Event.model_validate(sample_event(user_id=42), context={"now": NOW})) == b"42"


def test_the_largest_valid_event_fits_the_default_message_bound() -> None:
    escaped = "\x01"  # every character written as \u0001: the longest JSON form
    context = {f"{i:02d}" + escaped * 62: escaped * 256 for i in range(32)}
    event = Event.model_validate(
        sample_event(
            event_id=escaped * 128,
            user_id=escaped * 128,
            item_id=escaped * 128,
            request_id=escaped * 128,
            context=context,
        ),
        context={"now": NOW},
    )
    raw = encode_event(event, NOW)
    assert 60_000 < len(raw) <= DEFAULT_MAX_MESSAGE_BYTES
    assert decode_event(raw).context == context


def test_decode_checks_the_future_bound_against_accepted_at() -> None:
    old = Event.model_validate(sample_event(timestamp=NOW), context={"now": NOW})
    # accepted long ago, read today: still valid
    assert decode_event(encode_event(old, NOW)).timestamp == NOW
    body = orjson.loads(encode_event(old, NOW))
    body["accepted_at"] = NOW - 3600  # event time an hour after it was accepted
    with pytest.raises(PoisonMessage) as info:
        decode_event(orjson.dumps(body))
    assert info.value.reason == "schema"
    assert "timestamp" in info.value.detail


# ---------------------------------------------------------------- poison


def _valid_raw() -> bytes:
    return encode_event(Event.model_validate(sample_event(), context={"now": NOW}), NOW)


def _with(**changes: object) -> bytes:
    body = orjson.loads(_valid_raw())
    for key, value in changes.items():
        if value is DROP:
            del body[key]
        else:
            body[key] = value
    return orjson.dumps(body)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not_json"),
        (b"not json", "not_json"),
        (b'{"v": 1, "event_id": ', "not_json"),
        (b"\xff\xfe", "not_json"),
        (b"[1, 2]", "schema"),
        (b'"text"', "schema"),
        (b"{}", "unsupported_version"),
        (_with(v=2), "unsupported_version"),
        (_with(v="1"), "unsupported_version"),
        (_with(v=True), "unsupported_version"),
        (_with(v=DROP), "unsupported_version"),
        (_with(accepted_at=DROP), "schema"),
        (_with(accepted_at="now"), "schema"),
        (_with(user_id=DROP), "schema"),
        (_with(type="bought"), "schema"),
        (_with(extra="x"), "schema"),
    ],
)
def test_poison_messages_are_named(raw: bytes, reason: str) -> None:
    with pytest.raises(PoisonMessage) as info:
        decode_event(raw)
    assert info.value.reason == reason
    assert info.value.reason in POISON_REASONS
    assert info.value.detail


def test_oversized_message_is_poison_before_parsing() -> None:
    raw = _valid_raw()
    assert decode_event(raw, max_bytes=len(raw)).event_id == "e-1"
    with pytest.raises(PoisonMessage) as info:
        decode_event(raw, max_bytes=len(raw) - 1)
    assert info.value.reason == "oversized"
    with pytest.raises(PoisonMessage) as info:
        decode_event(b"x" * (DEFAULT_MAX_MESSAGE_BYTES + 1))
    assert info.value.reason == "oversized"
