"""Fixtures of the evaluation tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .synthetic import synthetic_ratings


@pytest.fixture
def ratings() -> Callable[..., list[dict[str, Any]]]:
    """The `synthetic_ratings` generator."""
    return synthetic_ratings
