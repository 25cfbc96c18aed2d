"""A small MovieLens-shaped rating stream, generated in-process (no download)."""

from __future__ import annotations

from typing import Any

import numpy as np

T0 = 880_000_000.0  # late 1997, like MovieLens-100K
OCCUPATIONS = ("engineer", "student", "artist", "writer")


def synthetic_ratings(
    n: int = 900,
    *,
    users: int = 30,
    items: int = 60,
    days: float = 40.0,
    session_events: int = 12,
    seed: int = 3,
) -> list[dict[str, Any]]:
    """Rating events in time order: users rate in sessions, liking items of their own group.

    Users and items fall into three taste groups; a user rates an item of their own group 4-5
    most of the time and others 1-3, so a model can learn something. Sessions of a few
    minutes, spread over `days`, give the stream MovieLens' bursty timing.
    """
    rng = np.random.default_rng(seed)
    sessions = -(-n // session_events)
    starts = np.sort(rng.uniform(0.0, days * 86400.0, sessions))
    events: list[dict[str, Any]] = []
    for start in starts:
        user = int(rng.integers(users))
        offsets = np.sort(rng.uniform(0.0, 600.0, session_events))
        for offset in offsets:
            if len(events) == n:
                break
            # popular items first: a Zipf-like pick keeps counts uneven
            item = min(items - 1, int(rng.zipf(1.6)) - 1 + int(rng.integers(3)) * (items // 3))
            liked = (item % 3) == (user % 3)
            rating = (
                int(rng.integers(4, 6))
                if liked ^ (rng.random() < 0.15)
                else int(rng.integers(1, 4))
            )
            events.append(
                {
                    "event_id": f"syn-{len(events)}",
                    "type": "rating",
                    "user_id": str(user),
                    "item_id": str(item),
                    "request_id": None,
                    "timestamp": float(round(T0 + start + offset, 3)),
                    "value": float(rating),
                    "context": {
                        "gender": "MF"[user % 2],
                        "occupation": OCCUPATIONS[user % len(OCCUPATIONS)],
                        "age": 20 + user % 30,
                    },
                }
            )
    events.sort(key=lambda e: e["timestamp"])
    return events
