"""The event contract: what clients post to ingest and what lies on the events topic.

The wire format is specified, versioned, in `docs/specs/events.md` (schema version 1). This
module is its executable form: `Event` validates one event, `validate_events` validates a
posted list element by element (so one bad event never hides the others), and
`freshrec.stream.messages` turns accepted events into Kafka messages and back, raising
`PoisonMessage` for anything a consumer must not train on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any, Final, TypedDict, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from freshrec.errors import InvalidInput

__all__ = [
    "CONTEXT_KEY_MAX_CHARS",
    "CONTEXT_MAX_ENTRIES",
    "CONTEXT_VALUE_MAX_CHARS",
    "DEFAULT_FUTURE_TOLERANCE_S",
    "DEFAULT_MAX_BATCH_EVENTS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "EARLIEST_TIMESTAMP_S",
    "ID_MAX_CHARS",
    "INT64_MIN",
    "POISON_REASONS",
    "SCHEMA_VERSION",
    "UINT64_MAX",
    "WHOLE_FLOAT_ID_MAX",
    "AcceptedEvent",
    "Event",
    "EventBatch",
    "EventErrorDetail",
    "EventType",
    "IndexedEvent",
    "InvalidEvents",
    "PoisonMessage",
    "event_batch_json_schema",
    "error_details",
    "validate_events",
]

SCHEMA_VERSION: Final = 1
"""Value of `v` in every message this module encodes; `decode_event` accepts only this."""
ID_MAX_CHARS: Final = 128
UINT64_MAX: Final = 2**64 - 1
WHOLE_FLOAT_ID_MAX: Final = 2**53
"""Largest integer id that may be written as a float (`42.0`): beyond, floats skip integers."""
CONTEXT_MAX_ENTRIES: Final = 32
CONTEXT_KEY_MAX_CHARS: Final = 64
CONTEXT_VALUE_MAX_CHARS: Final = 256
EARLIEST_TIMESTAMP_S: Final = 631_152_000.0
"""1990-01-01T00:00:00Z: anything older is a unit mistake (milliseconds read as seconds are
far in the future, but seconds-since-something-else and zeros land here)."""
DEFAULT_FUTURE_TOLERANCE_S: Final = 300.0
DEFAULT_MAX_BATCH_EVENTS: Final = 1000
DEFAULT_MAX_MESSAGE_BYTES: Final = 128 * 1024
"""Largest message value `decode_event` accepts. A valid event encodes to at most ~45 KiB
(32 context entries of 64 + 256 characters, 4 UTF-8 bytes each, plus escaping), so this
bound only ever trips on corrupt or foreign messages."""

POISON_REASONS: Final = frozenset({"oversized", "not_json", "unsupported_version", "schema"})
"""Every `PoisonMessage.reason` `decode_event` raises."""

INT64_MIN: Final = -(2**63)
_WHOLE_EVENT: Final = "<event>"


class EventType(StrEnum):
    """What the user did. `impression` is the item being shown; the others are actions."""

    IMPRESSION = "impression"
    CLICK = "click"
    LIKE = "like"
    RATING = "rating"
    PURCHASE = "purchase"
    VIEW = "view"
    SKIP = "skip"


def _validate_id(value: object) -> str | int:
    # bool is an int subclass; a JSON `true` as an id is a client bug, not the id 1
    if isinstance(value, bool):
        raise PydanticCustomError("id_type", "must be a string or an unsigned 64-bit integer")
    # JSON, and the JSON Schema of the OpenAPI document, do not tell `2.0` from `2`; a float
    # spells an integer exactly only up to 2**53, so larger ones would be ids silently changed
    if isinstance(value, float) and value.is_integer() and 0 <= value <= WHOLE_FLOAT_ID_MAX:
        value = int(value)
    if isinstance(value, str):
        if not 1 <= len(value) <= ID_MAX_CHARS:
            raise PydanticCustomError(
                "id_length", "string id must have 1 to {max} characters", {"max": ID_MAX_CHARS}
            )
        return value
    if isinstance(value, int):
        if not 0 <= value <= UINT64_MAX:
            raise PydanticCustomError("id_range", "integer id must be in [0, 2**64 - 1]")
        return value
    raise PydanticCustomError("id_type", "must be a string or an unsigned 64-bit integer")


def _validate_context_value(value: object) -> str | int | float:
    if isinstance(value, bool):
        raise PydanticCustomError("context_value_type", "must be a string or a number")
    if isinstance(value, str):
        if len(value) > CONTEXT_VALUE_MAX_CHARS:
            raise PydanticCustomError(
                "context_value_length",
                "string value must have at most {max} characters",
                {"max": CONTEXT_VALUE_MAX_CHARS},
            )
        return value
    if isinstance(value, int):
        # the encoder (orjson) writes 64-bit integers only
        if not INT64_MIN <= value <= UINT64_MAX:
            raise PydanticCustomError("context_value_range", "integer must fit in 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PydanticCustomError("finite_number", "must be a finite number")
        return value
    raise PydanticCustomError("context_value_type", "must be a string or a number")


_ID_SCHEMA: Final[dict[str, Any]] = {
    "anyOf": [
        {"type": "string", "minLength": 1, "maxLength": ID_MAX_CHARS},
        {"type": "integer", "minimum": 0, "maximum": UINT64_MAX},
    ]
}

Id = Annotated[str | int, PlainValidator(_validate_id), WithJsonSchema(_ID_SCHEMA)]
"""A user or item id: a string of 1..128 characters or an integer in [0, 2**64 - 1] (written
as a float, like `42.0`, only up to 2**53)."""

ContextKey = Annotated[str, StringConstraints(min_length=1, max_length=CONTEXT_KEY_MAX_CHARS)]
ContextValue = Annotated[
    str | int | float,
    PlainValidator(_validate_context_value),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "maxLength": CONTEXT_VALUE_MAX_CHARS},
                {"type": "integer"},
                {"type": "number"},
            ]
        }
    ),
]


_RATING_HAS_VALUE: Final[dict[str, Any]] = {
    "if": {"properties": {"type": {"const": "rating"}}, "required": ["type"]},
    "then": {"properties": {"value": {"type": "number"}}, "required": ["value"]},
}
"""`Event._rating_has_value` in JSON Schema: a rating carries a number."""


class Event(BaseModel):
    """One user-item interaction, schema version 1 (see `docs/specs/events.md`).

    Validation is strict: no type coercion (`"5"` is not a number, `true` is not an id) and
    no unknown fields. A whole float is the integer it spells, as in JSON Schema (`42.0` is
    the id 42, exact up to 2**53). The timestamp check compares with the validation
    context's `now` and `future_tolerance_s` when given (`Event.model_validate(obj,
    context={...})`), otherwise with the wall clock and `DEFAULT_FUTURE_TOLERANCE_S`.
    """

    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra=_RATING_HAS_VALUE)

    event_id: Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX_CHARS)] = Field(
        description="Unique id chosen by the client; consumers deduplicate on it. Unique "
        "within a batch, too."
    )
    # lax on this one field only: in strict mode an enum accepts only enum instances, and
    # the input is JSON text; lax enum validation still accepts nothing but the listed values
    type: EventType = Field(strict=False, description="What the user did.")
    user_id: Id = Field(description="Who; also the Kafka message key.")
    item_id: Id = Field(description="Which item.")
    request_id: Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX_CHARS)] | None = (
        Field(
            default=None,
            description="Id of the recommendation request that showed the item; links an action "
            "to its impression.",
        )
    )
    timestamp: float = Field(
        allow_inf_nan=False,
        # the lower bound is fixed; the upper one moves with the server's clock, so only the
        # batch schema of a running server states it (`event_batch_json_schema`)
        json_schema_extra={"minimum": EARLIEST_TIMESTAMP_S},
        description="Event time, unix seconds (fractions allowed). Not before 1990, not more "
        "than the configured tolerance (default 300 s) in the future.",
    )
    value: float | None = Field(
        default=None,
        allow_inf_nan=False,
        validate_default=True,
        description="Numeric payload, e.g. the rating; required for `rating` events.",
    )
    context: (
        Annotated[dict[ContextKey, ContextValue], Field(max_length=CONTEXT_MAX_ENTRIES)] | None
    ) = Field(
        default=None,
        description="Context features: at most 32 entries, keys of 1..64 characters, string "
        "values of at most 256 characters.",
    )

    @field_validator("timestamp")
    @classmethod
    def _timestamp_in_range(cls, value: float, info: ValidationInfo) -> float:
        context = info.context if isinstance(info.context, Mapping) else {}
        now = float(context.get("now", time.time()))
        tolerance = float(context.get("future_tolerance_s", DEFAULT_FUTURE_TOLERANCE_S))
        if value < EARLIEST_TIMESTAMP_S:
            raise PydanticCustomError(
                "timestamp_too_old",
                "timestamp is before 1990-01-01 (is it in unix seconds?)",
            )
        if value > now + tolerance:
            raise PydanticCustomError(
                "timestamp_in_future",
                "timestamp is more than {tolerance} s in the future (is it in unix seconds?)",
                {"tolerance": f"{tolerance:g}"},
            )
        return value

    @field_validator("value")
    @classmethod
    def _rating_has_value(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is None and info.data.get("type") is EventType.RATING:
            raise PydanticCustomError("value_required", "a rating event needs a value")
        return value


class AcceptedEvent(Event):
    """An event as read back from the events topic: the event plus when ingest accepted it."""

    accepted_at: float = Field(
        allow_inf_nan=False, description="Ingest wall time when the event was accepted."
    )


class EventBatch(BaseModel):
    """The body of `POST /v1/events`.

    The upper bound on the number of events is a server setting (default 1000); it is checked
    against the validation context's `max_batch_events` when given.
    """

    model_config = ConfigDict(strict=True, extra="forbid")

    events: list[Event] = Field(min_length=1, description="1 to max_batch_events events.")

    @field_validator("events")
    @classmethod
    def _not_over_bound(cls, value: list[Event], info: ValidationInfo) -> list[Event]:
        context = info.context if isinstance(info.context, Mapping) else {}
        bound = int(context.get("max_batch_events", DEFAULT_MAX_BATCH_EVENTS))
        if len(value) > bound:
            raise PydanticCustomError(
                "too_many_events", "at most {max} events per batch", {"max": bound}
            )
        return value


class EventErrorDetail(TypedDict):
    """Why one event (or the body, when `index` is None) was rejected."""

    index: int | None
    field: str
    reason: str
    type: str


IndexedEvent = tuple[int, Event]
"""A valid event with its position in the posted list."""


class InvalidEvents(InvalidInput):
    """A posted batch with invalid events; `details` names every bad event's index and field."""

    def __init__(self, message: str, details: Sequence[EventErrorDetail]) -> None:
        super().__init__(message)
        self.details = list(details)


class PoisonMessage(InvalidInput):
    """A message on the events topic that no consumer can use.

    Attributes:
        reason: a short code from a fixed set (`oversized`, `not_json`, `unsupported_version`,
            `schema`), fit for a metric label and the dead-letter header.
        detail: human-readable explanation.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _field_name(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p != "[key]"]
    return ".".join(parts) if parts else _WHOLE_EVENT


def error_details(index: int | None, exc: ValidationError) -> list[EventErrorDetail]:
    return [
        EventErrorDetail(
            index=index, field=_field_name(err["loc"]), reason=err["msg"], type=err["type"]
        )
        for err in exc.errors(include_url=False, include_input=False)
    ]


def _inline_refs(node: Any, defs: Mapping[str, Any]) -> Any:
    """`node` with every `#/$defs/...` reference replaced by its definition."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
            rest = {k: _inline_refs(v, defs) for k, v in node.items() if k != "$ref"}
            return {**target, **rest}
        return {k: _inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def event_batch_json_schema(
    *,
    max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS,
    now: float | None = None,
    future_tolerance_s: float = DEFAULT_FUTURE_TOLERANCE_S,
) -> dict[str, Any]:
    """The JSON Schema of an `EventBatch` as a server with these bounds checks it at `now`.

    Self-contained (no `$ref`). The bounds the model checks against its validation context
    are written in: at most `max_batch_events` events, timestamps at most
    `now + future_tolerance_s`. That upper bound moves with the clock, so the schema is true
    at `now` and only then: a timestamp just above it becomes acceptable as time passes.
    One rule is beyond JSON Schema and stays in the descriptions: event ids are unique
    within a batch.

    Args:
        max_batch_events: most events in one batch.
        now: the server's wall time the timestamp bound is measured from; the current time
            if None.
        future_tolerance_s: how far in the future an event time may lie.
    """
    schema = EventBatch.model_json_schema()
    defs = schema.pop("$defs", {})
    inlined = cast(dict[str, Any], _inline_refs(schema, defs))
    events = inlined["properties"]["events"]
    events["maxItems"] = max_batch_events
    latest = (time.time() if now is None else now) + future_tolerance_s
    events["items"]["properties"]["timestamp"]["maximum"] = latest
    return inlined


def validate_events(
    items: object,
    *,
    now: float | None = None,
    future_tolerance_s: float = DEFAULT_FUTURE_TOLERANCE_S,
) -> tuple[list[IndexedEvent], list[EventErrorDetail]]:
    """Validate a parsed JSON list of events element by element.

    Every element is validated, so the errors list names every bad event, not just the first.
    Event ids repeated inside the list are errors at each later index.

    Args:
        items: the parsed `events` array (anything else yields one error with index None).
        now: the wall time the timestamp bound is measured from; the current time if None.
        future_tolerance_s: how far in the future an event time may lie.

    Returns:
        `(valid, errors)`: the valid events with their indexes, in order, and one
        `{"index", "field", "reason", "type"}` entry per problem found.
    """
    if not isinstance(items, list):
        return [], [
            EventErrorDetail(
                index=None, field="events", reason="must be an array of events", type="list_type"
            )
        ]
    context = {
        "now": time.time() if now is None else now,
        "future_tolerance_s": future_tolerance_s,
    }
    valid: list[IndexedEvent] = []
    errors: list[EventErrorDetail] = []
    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        try:
            event = Event.model_validate(item, context=context)
        except ValidationError as exc:
            errors.extend(error_details(index, exc))
            continue
        earlier = first_seen.setdefault(event.event_id, index)
        if earlier != index:
            errors.append(
                EventErrorDetail(
                    index=index,
                    field="event_id",
                    reason=f"duplicate of the event_id at index {earlier}",
                    type="duplicate_event_id",
                )
            )
            continue
        valid.append((index, event))
    return valid, errors
