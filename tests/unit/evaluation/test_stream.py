"""Preparing the replayed stream: examples, ranking queries, batch cuts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from freshrec.errors import InvalidInput
from freshrec.offline.evaluation import plan_batches, prepare_stream
from freshrec.table import hash_features
from freshrec.training import ExampleConfig

T0 = 880_000_000.0


def _rating(i: int, user: str, item: str, value: float, t: float) -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "type": "rating",
        "user_id": user,
        "item_id": item,
        "request_id": None,
        "timestamp": t,
        "value": value,
        "context": None,
    }


def test_queries_rank_against_items_seen_so_far_minus_the_users_history() -> None:
    events = [
        _rating(0, "u1", "a", 5.0, T0),
        _rating(1, "u1", "b", 5.0, T0 + 1),
        _rating(2, "u2", "a", 5.0, T0 + 2),
        _rating(3, "u1", "c", 2.0, T0 + 3),  # negative: no query
        _rating(4, "u1", "d", 4.0, T0 + 4),
    ]
    stream = prepare_stream(events, examples=ExampleConfig(), windows=2, rank_sample=1.0, seed=0)
    assert stream.ex_label.tolist() == [1.0, 1.0, 1.0, 0.0, 1.0]
    assert stream.catalog.tolist() == hash_features("item", ["a", "b", "c", "d"]).tolist()
    q = stream.queries
    assert q.example.tolist() == [0, 1, 2, 4]
    # the new item itself is the target even before it is "seen"
    assert q.available.tolist() == [0, 1, 2, 3]
    assert q.target.tolist() == [0, 1, 0, 3]
    assert [h.tolist() for h in q.history] == [[], [0], [], [0, 1, 2]]
    assert stream.window_edges.tolist() == [0, 2, 5]
    assert stream.ex_window.tolist() == [0, 0, 1, 1, 1]


def test_query_sample_is_a_fixed_share_picked_by_hash(ratings: Any) -> None:
    events = ratings(600)
    first = prepare_stream(events, examples=ExampleConfig(), windows=3, rank_sample=0.3, seed=1)
    again = prepare_stream(events, examples=ExampleConfig(), windows=3, rank_sample=0.3, seed=1)
    other = prepare_stream(events, examples=ExampleConfig(), windows=3, rank_sample=0.3, seed=2)
    positives = int(first.ex_label.sum())
    assert first.queries.example.tolist() == again.queries.example.tolist()
    assert first.queries.example.tolist() != other.queries.example.tolist()
    assert 0.2 * positives < len(first.queries) < 0.4 * positives
    assert np.all(first.ex_label[first.queries.example] == 1.0)


def test_unordered_or_empty_streams_are_refused() -> None:
    with pytest.raises(InvalidInput, match="event-time order"):
        prepare_stream(
            [_rating(0, "u", "a", 5.0, T0 + 10), _rating(1, "u", "b", 5.0, T0)],
            examples=ExampleConfig(),
            windows=1,
            rank_sample=0.0,
            seed=0,
        )
    with pytest.raises(InvalidInput, match="empty"):
        prepare_stream([], examples=ExampleConfig(), windows=1, rank_sample=0.0, seed=0)
    with pytest.raises(InvalidInput, match="event 0"):
        bad = _rating(0, "u", "a", 5.0, T0)
        bad["value"] = "5"
        prepare_stream([bad], examples=ExampleConfig(), windows=1, rank_sample=0.0, seed=0)


def test_batches_close_on_size_span_and_cuts() -> None:
    times = np.array([0.0, 1, 2, 3, 4, 100, 101, 102, 300, 301], dtype=np.float64)
    assert plan_batches(times, 3, None) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert plan_batches(times, 100, 50.0) == [(0, 5), (5, 8), (8, 10)]
    # a cut at 101 puts the event at 101 into a new batch; one at 0 cuts nothing
    assert plan_batches(times, 100, None, cuts=[101.0, 0.0]) == [(0, 6), (6, 10)]
    assert plan_batches(times, 4, 50.0, cuts=[3.0]) == [(0, 3), (3, 5), (5, 8), (8, 10)]
