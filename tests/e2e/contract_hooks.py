"""Schemathesis hooks for the contract test: the two rules of `POST /v1/events` that no JSON
Schema can state, applied to the generated cases (loaded by `schemathesis run` through
`SCHEMATHESIS_HOOKS`; see `test_contract.py`).

- **The timestamp bound moves with the clock.** The document says `maximum: now + tolerance`
  as of the moment it was served, and the server keeps measuring from its clock, so a
  timestamp a little above the document's maximum becomes valid while the run lasts.
  Cases with a timestamp within `FRESHREC_CONTRACT_CLOCK_WINDOW_S` above the maximum are
  not sent: their right answer depends on when they arrive. Everything below the maximum must
  be accepted and everything beyond the window rejected, and both are checked.
- **Event ids are unique within a batch.** A batch repeating one is refused (422,
  `duplicate_event_id`); JSON Schema's `uniqueItems` compares whole items, not one field,
  so positive cases that repeat an id are not sent as positive ones.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

_WINDOW_S = float(os.environ.get("FRESHREC_CONTRACT_CLOCK_WINDOW_S", "0"))


def _events(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        return []
    return [event for event in body["events"] if isinstance(event, dict)]


def _latest_timestamp(case: schemathesis.Case) -> float:
    """The timestamp bound of the document this run loaded."""
    body = case.operation.definition.raw["requestBody"]["content"]["application/json"]
    event = body["schema"]["properties"]["events"]["items"]
    return float(event["properties"]["timestamp"]["maximum"])


def _clock_dependent(case: schemathesis.Case, events: list[dict[str, Any]]) -> bool:
    latest = _latest_timestamp(case)
    for event in events:
        stamp = event.get("timestamp")
        number = isinstance(stamp, int | float) and not isinstance(stamp, bool)
        if number and latest < stamp <= latest + _WINDOW_S:
            return True
    return False


def _repeats_an_event_id(events: list[dict[str, Any]]) -> bool:
    ids = [event.get("event_id") for event in events if isinstance(event.get("event_id"), str)]
    return len(ids) != len(set(ids))


@schemathesis.hook("filter_case").apply_to(method="POST", path="/v1/events")
def _only_clock_independent_cases(_: schemathesis.HookContext, case: schemathesis.Case) -> bool:
    events = _events(case.body)
    if _clock_dependent(case, events):
        return False
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    return not (positive and _repeats_an_event_id(events))
