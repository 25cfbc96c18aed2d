"""Ingest → Kafka → trainer → Redis → ranker, as real processes on real servers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.e2e.conftest import Stack, post_events
from tests.waiting import wait_until

T0 = 1_750_000_000.0
DAY = 86_400.0


def _post(stack: Stack, events: list[dict[str, Any]]) -> None:
    assert post_events(stack, events).json()["accepted"] == len(events)


def _rating(n: int, user: str, item: str, value: float, ts: float) -> dict[str, Any]:
    event = {"event_id": f"{user}-{item}-{n}", "type": "rating", "timestamp": ts}
    return {**event, "user_id": user, "item_id": item, "value": value}


def _row(stack: Stack, table: str, row_id: str) -> dict[str, Any] | None:
    response = httpx.get(
        f"{stack.ranker}/v1/tables/{table}/rows/{row_id}",
        headers={"Authorization": f"Bearer {stack.api_key}"},
        timeout=10,
    )
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _recommend(stack: Stack, user: str, k: int) -> dict[str, Any]:
    response = httpx.post(
        f"{stack.ranker}/v1/recommend", json={"user_id": user, "k": k}, timeout=10
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _wait(what: str, condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    wait_until(condition, timeout_s, what)


def _status(stack: Stack) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{stack.trainer}/v1/status", timeout=5).json()
    return body


def test_events_become_rows_models_and_recommendations(running_stack: Stack) -> None:
    stack = running_stack
    group_a = [f"a{j}" for j in range(6)]
    group_b = [f"b{j}" for j in range(6)]
    # a community that likes group A and dislikes group B
    events = []
    for n in range(40):
        for item in group_a:
            events.append(_rating(n, f"fan{n}", item, 5.0, T0 + n))
        for item in group_b:
            events.append(_rating(n, f"fan{n}", item, 1.0, T0 + n))
    events.append(_rating(0, "target", group_b[0], 3.0, T0 + 50))
    _post(stack, events)

    # 1. events become rows for that user and item, and the dense version advances
    _wait("target's user row", lambda: _row(stack, "user", "target") is not None)
    item_row = _row(stack, "item", "a0")
    assert item_row is not None and item_row["count"] >= 40
    _wait("a published dense model", lambda: _status(stack)["published_version"] >= 1)
    first_version = _status(stack)["published_version"]

    def rank_of_a() -> float:
        items = [i["item_id"] for i in _recommend(stack, "target", 12)["items"]]
        positions = [items.index(a) for a in group_a if a in items]
        return sum(positions) / max(len(positions), 1) if positions else 99.0

    _wait(
        "the index to hold all 12 items",
        lambda: len(_recommend(stack, "target", 12)["items"]) == 12,
    )
    before_vector = _row(stack, "user", "target")
    assert before_vector is not None
    rank_before = rank_of_a()

    # 2. online learning: target clicks through group A → A ranks higher for target
    _post(
        stack, [_rating(k, "target", item, 5.0, T0 + 60 + k) for k, item in enumerate(group_a[:3])]
    )
    # all three trained (under load they may span micro-batches), then a model published after
    _wait(
        "target's three new events in its row",
        lambda: (_row(stack, "user", "target") or {}).get("count", 0) >= before_vector["count"] + 3,
    )
    after_row = _row(stack, "user", "target")
    assert after_row is not None and after_row["vector"] != before_vector["vector"]
    # any publish from now on carries them; one more event (a fan, as the community rates)
    # makes sure one comes
    trained_version = _status(stack)["published_version"]
    _post(stack, [_rating(0, "fan40", group_a[0], 5.0, T0 + 70)])
    _wait(
        "a dense model published after them",
        lambda: _status(stack)["published_version"] > max(first_version, trained_version),
    )
    rank_after = rank_of_a()
    assert rank_after < rank_before or rank_after == 1.0, (rank_before, rank_after)

    # 3. a brand-new item that receives events becomes recommendable within 5 s
    sent = time.monotonic()
    _post(stack, [_rating(k, f"fan{k}", "brand-new", 5.0, T0 + 100 + k) for k in range(5)])

    def new_item_served() -> bool:
        return any(i["item_id"] == "brand-new" for i in _recommend(stack, "fan1", 13)["items"])

    _wait("the new item to be recommended", new_item_served, timeout_s=15)
    assert time.monotonic() - sent < 5.0

    # 4. unknown users get popular/fresh items with fallback: true
    unknown = _recommend(stack, "nobody-ever", 5)
    assert unknown["fallback"] is True and unknown["items"]
    assert _recommend(stack, "target", 5)["fallback"] is False


def test_expired_item_is_never_recommended_again(running_stack: Stack) -> None:
    stack = running_stack
    _post(stack, [_rating(n, f"u{n}", "old-item", 5.0, T0 + n) for n in range(5)])
    _post(stack, [_rating(n, f"u{n}", "kept-item", 5.0, T0 + n) for n in range(5)])

    def served(item: str) -> bool:
        return any(i["item_id"] == item for i in _recommend(stack, "u1", 10)["items"])

    _wait("old-item in results", lambda: served("old-item"))
    # 100 days later only kept-item is updated; the trainer's event-time expiry removes old-item
    later = T0 + 100 * DAY
    for batch in range(3):
        _post(
            stack,
            [_rating(batch * 100 + n, f"u{n}", "kept-item", 4.0, later + n) for n in range(100)],
        )
    _wait("old-item to expire", lambda: _row(stack, "item", "old-item") is None, timeout_s=60)
    _wait("old-item to leave the index", lambda: not served("old-item"), timeout_s=10)
    for _ in range(20):
        assert not served("old-item")


def test_ranker_rejects_bad_requests_with_the_field(running_stack: Stack) -> None:
    stack = running_stack
    cases = [
        ({"user_id": "x", "k": 0}, "k"),
        ({"user_id": "x", "k": 100_000}, "k"),
        ({"k": 5}, "user_id"),
        ({"user_id": "x", "k": 5, "exclude_item_ids": "nope"}, "exclude_item_ids"),
    ]
    for body, field in cases:
        response = httpx.post(f"{stack.ranker}/v1/recommend", json=body, timeout=10)
        assert response.status_code == 422, (body, response.text)
        fields = [d["field"] for d in response.json()["details"]]
        assert any(f.startswith(field) for f in fields), (body, fields)
    no_key = httpx.get(f"{stack.ranker}/v1/tables/user/rows/x", timeout=10)
    assert no_key.status_code == 401
    unknown_table = httpx.get(
        f"{stack.ranker}/v1/tables/nope/rows/x",
        headers={"Authorization": f"Bearer {stack.api_key}"},
        timeout=10,
    )
    assert unknown_table.status_code == 404
