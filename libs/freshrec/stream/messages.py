"""The events topic's messages: an accepted event as a Kafka key and value, and back.

`encode_event` turns an accepted event into the message value of `docs/specs/events.md`
(schema version 1) and `decode_event` turns it back, raising `PoisonMessage` for anything a
consumer must not train on. `read_event` is the consumer's hot path: the same acceptance
rules, returning a light `ConsumedEvent`.
"""

from __future__ import annotations

import math
from typing import Any, Final, NamedTuple

import orjson
from pydantic import ValidationError

from freshrec.stream.events import (
    CONTEXT_KEY_MAX_CHARS,
    CONTEXT_MAX_ENTRIES,
    CONTEXT_VALUE_MAX_CHARS,
    DEFAULT_FUTURE_TOLERANCE_S,
    DEFAULT_MAX_MESSAGE_BYTES,
    EARLIEST_TIMESTAMP_S,
    ID_MAX_CHARS,
    INT64_MIN,
    SCHEMA_VERSION,
    UINT64_MAX,
    AcceptedEvent,
    Event,
    EventType,
    PoisonMessage,
    error_details,
)

__all__ = ["ConsumedEvent", "decode_event", "encode_event", "event_key", "read_event"]


def event_key(event: Event) -> bytes:
    """The Kafka message key of `event`: its user id as a UTF-8 string.

    All of one user's events share a key, hence a partition, hence an order.
    """
    return str(event.user_id).encode()


def encode_event(event: Event, accepted_at: float) -> bytes:
    """The Kafka message value of `event` (schema version 1).

    Args:
        event: a validated event.
        accepted_at: ingest wall time in unix seconds.

    Returns:
        orjson bytes of `{"v": 1, ...event fields..., "accepted_at": accepted_at}`.
    """
    # spelled out rather than model_dump(): ten times faster, and the order is the spec's
    return orjson.dumps(
        {
            "v": SCHEMA_VERSION,
            "event_id": event.event_id,
            "type": event.type.value,
            "user_id": event.user_id,
            "item_id": event.item_id,
            "request_id": event.request_id,
            "timestamp": event.timestamp,
            "value": event.value,
            "context": event.context,
            "accepted_at": accepted_at,
        }
    )


def _parse_message(raw: bytes, max_bytes: int) -> dict[str, Any]:
    if len(raw) > max_bytes:
        raise PoisonMessage("oversized", f"{len(raw)} bytes, more than {max_bytes}")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage("not_json", str(exc)) from exc
    if not isinstance(body, dict):
        raise PoisonMessage("schema", f"expected a JSON object, got {type(body).__name__}")
    version = body.get("v")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise PoisonMessage(
            "unsupported_version", f"schema version {version!r}; this reader knows {SCHEMA_VERSION}"
        )
    return body


def _validate_message(body: dict[str, Any]) -> AcceptedEvent:
    fields = {k: v for k, v in body.items() if k != "v"}
    accepted_at = fields.get("accepted_at")
    context: dict[str, float] = {}
    if isinstance(accepted_at, int | float) and not isinstance(accepted_at, bool):
        context["now"] = float(accepted_at)
    try:
        return AcceptedEvent.model_validate(fields, context=context)
    except ValidationError as exc:
        problems = "; ".join(f"{d['field']}: {d['reason']}" for d in error_details(None, exc))
        raise PoisonMessage("schema", problems) from exc


def decode_event(raw: bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> AcceptedEvent:
    """Read one message value written by `encode_event`.

    The timestamp bound is checked against the message's own `accepted_at` (with the default
    tolerance), so a consumer replaying old messages, or running on a skewed clock, reads the
    same events ingest accepted.

    Args:
        raw: the message value.
        max_bytes: larger values are rejected without being parsed.

    Returns:
        The event with its `accepted_at`.

    Raises:
        PoisonMessage: the value is oversized, not JSON, of another schema version, or does
            not match the schema.
    """
    return _validate_message(_parse_message(raw, max_bytes))


class ConsumedEvent(NamedTuple):
    """An event read from the topic, as the trainer uses it: the fields of `AcceptedEvent`,
    with `type` as its plain string value."""

    event_id: str
    type: str
    user_id: str | int
    item_id: str | int
    request_id: str | None
    timestamp: float
    value: float | None
    context: dict[str, str | int | float] | None
    accepted_at: float

    @classmethod
    def of(cls, event: AcceptedEvent) -> ConsumedEvent:
        """The consumed form of a validated event."""
        return cls(
            event.event_id,
            event.type.value,
            event.user_id,
            event.item_id,
            event.request_id,
            event.timestamp,
            event.value,
            event.context,
            event.accepted_at,
        )


_MESSAGE_FIELDS: Final = frozenset(AcceptedEvent.model_fields) | {"v"}
_TYPE_VALUES: Final = frozenset(t.value for t in EventType)


def _plain_text(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= ID_MAX_CHARS


def _plain_id(value: object) -> bool:
    if type(value) is str:
        return 0 < len(value) <= ID_MAX_CHARS
    return type(value) is int and 0 <= value <= UINT64_MAX


def _plain_context(context: object) -> bool:
    if context is None:
        return True
    if type(context) is not dict or len(context) > CONTEXT_MAX_ENTRIES:
        return False
    for key, value in context.items():
        if type(key) is not str or not 0 < len(key) <= CONTEXT_KEY_MAX_CHARS:
            return False
        kind = type(value)
        if kind is str:
            if len(value) > CONTEXT_VALUE_MAX_CHARS:
                return False
        elif kind is float:
            if not math.isfinite(value):
                return False
        elif kind is not int or not INT64_MIN <= value <= UINT64_MAX:
            return False
    return True


def _plainly_valid(body: dict[str, Any]) -> ConsumedEvent | None:
    """The event when `body` is valid in the common, unambiguous way; None otherwise.

    Accepts a strict subset of what `AcceptedEvent` accepts (exact JSON types, finite
    float times and values, every bound checked); anything else, valid or not, is left to
    the full validation, which alone produces error reasons.
    """
    if not body.keys() <= _MESSAGE_FIELDS:
        return None
    event_id, kind = body.get("event_id"), body.get("type")
    user_id, item_id = body.get("user_id"), body.get("item_id")
    request_id, value = body.get("request_id"), body.get("value")
    timestamp, accepted_at = body.get("timestamp"), body.get("accepted_at")
    context = body.get("context")
    plain = (
        type(event_id) is str
        and 0 < len(event_id) <= ID_MAX_CHARS
        and type(kind) is str
        and kind in _TYPE_VALUES
        and _plain_id(user_id)
        and _plain_id(item_id)
        and (request_id is None or _plain_text(request_id))
        and type(accepted_at) is float
        and math.isfinite(accepted_at)
        and type(timestamp) is float
        and EARLIEST_TIMESTAMP_S <= timestamp <= accepted_at + DEFAULT_FUTURE_TOLERANCE_S
        and (
            (value is None and kind != EventType.RATING.value)
            or (type(value) is float and math.isfinite(value))
        )
        and _plain_context(context)
    )
    if not plain:
        return None
    return ConsumedEvent(
        body["event_id"],
        body["type"],
        body["user_id"],
        body["item_id"],
        request_id,
        body["timestamp"],
        value,
        context,
        body["accepted_at"],
    )


def read_event(raw: bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> ConsumedEvent:
    """`decode_event` for the consumer's hot path: same acceptance, same errors, faster.

    Messages in the form `encode_event` writes are checked field by field in plain Python;
    any other message goes through the full `AcceptedEvent` validation.

    Raises:
        PoisonMessage: exactly when `decode_event` would.
    """
    body = _parse_message(raw, max_bytes)
    event = _plainly_valid(body)
    return event if event is not None else ConsumedEvent.of(_validate_message(body))
