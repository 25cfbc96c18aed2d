"""Waiting on a condition with a deadline: the one way tests wait for something to happen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

__all__ = ["wait_until"]

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    timeout_s: float,
    what: str,
    *,
    interval_s: float = 0.05,
    detail: Callable[[], object] | None = None,
) -> T:
    """Poll `condition` until it returns something truthy, and return that.

    Args:
        condition: checked at once, then every `interval_s`.
        timeout_s: the test fails when the condition is still false after this long.
        what: what is awaited, for the failure message.
        interval_s: pause between checks.
        detail: adds what it returns to the failure message (e.g. the last value seen).
    """
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            extra = "" if detail is None else f"; {detail()}"
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}{extra}", pytrace=False)
        time.sleep(interval_s)
    return value
