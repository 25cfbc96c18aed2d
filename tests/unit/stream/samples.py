"""A valid event body to vary in stream tests."""

from __future__ import annotations

from typing import Any

NOW = 1_750_000_000.0
DROP = object()
"""An override value that removes the field."""


def sample_event(**overrides: Any) -> dict[str, Any]:
    """A valid event (as a producer sends it), with `overrides` applied."""
    base: dict[str, Any] = {
        "event_id": "e-1",
        "type": "click",
        "user_id": "u-1",
        "item_id": 42,
        "request_id": "r-1",
        "timestamp": NOW - 10,
        "value": None,
        "context": {"device": "ios", "hour": 13, "price": 9.5},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not DROP}
