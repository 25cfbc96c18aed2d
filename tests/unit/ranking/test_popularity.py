"""Popularity from the change feed: decayed counts, feed order, fresh items, bounds."""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import pytest

from freshrec.ranking import PopularityTracker
from freshrec.table import hash_features
from freshrec.table.base import EmbeddingStore
from freshrec.table.records import Change, ChangeOp
from tests.unit.ranking.catalog import seeded_tables


class _Feed:
    """A change feed handed out in order, `count` entries per call."""

    def __init__(self) -> None:
        self.entries: list[Change] = []

    def add(self, op: ChangeOp, *ids: int) -> None:
        cursor = str(len(self.entries) + 1)
        self.entries.append(Change(cursor, op, np.array(ids, dtype=np.uint64)))

    def changes(self, cursor: str, count: int = 100, block_ms: int | None = None) -> list[Change]:
        return self.entries[int(cursor) : int(cursor) + count]


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _tracker(**kwargs: float) -> tuple[PopularityTracker, _Feed, _Clock]:
    feed, clock = _Feed(), _Clock()
    tracker = PopularityTracker(cast(EmbeddingStore, feed), clock=clock, **kwargs)  # type: ignore[arg-type]
    return tracker, feed, clock


def _counts(tracker: PopularityTracker, *ids: int) -> list[float]:
    return tracker.decayed_counts(np.array(ids, dtype=np.uint64)).tolist()


def test_counts_decay_with_the_half_life_and_rank_the_candidates() -> None:
    tracker, feed, clock = _tracker(half_life_s=60.0)
    feed.add(ChangeOp.UPSERT, 1, 2)
    feed.add(ChangeOp.UPSERT, 1)
    assert tracker.poll_once() == 2
    clock.now += 60.0
    feed.add(ChangeOp.UPSERT, 2, 3, 2)
    tracker.poll_once()
    # item 1: 2 occurrences one half-life ago; item 2: 1 then, 2 now; item 3: 1 now
    assert _counts(tracker, 1, 2, 3, 99) == pytest.approx([1.0, 2.5, 1.0, 0.0])
    clock.now += 120.0
    assert _counts(tracker, 1, 2, 3) == pytest.approx([0.25, 0.625, 0.25])
    # fresh items first (newest first, n // 5 of them), then by count, ties by id
    assert tracker.candidates(10).tolist() == [3, 2, 1]
    assert tracker.candidates(5).tolist() == [3, 2, 1]
    assert tracker.poll_once() == 0


def test_entries_apply_in_feed_order_around_a_delete() -> None:
    tracker, feed, _ = _tracker()
    feed.add(ChangeOp.UPSERT, 7, 8)
    feed.add(ChangeOp.DELETE, 7)
    feed.add(ChangeOp.UPSERT, 8)
    feed.add(ChangeOp.DELETE, 8)
    feed.add(ChangeOp.UPSERT, 8)
    tracker.poll_once()
    assert _counts(tracker, 7, 8) == pytest.approx([0.0, 1.0])
    assert tracker.candidates(10).tolist() == [8]  # 7 is neither fresh nor popular any more
    assert tracker.tracked == 1


def test_fresh_items_are_the_newest_created_in_feed_order() -> None:
    tracker, feed, _ = _tracker(fresh_items=3)
    feed.add(ChangeOp.UPSERT, 50, 40)
    feed.add(ChangeOp.UPSERT, 30, 50, 20)
    tracker.poll_once()
    feed.add(ChangeOp.UPSERT, 10, 50)
    tracker.poll_once()
    # created in the order 50, 40, 30, 20, 10; the last three, newest first
    top = tracker.candidates(15)
    assert top[:3].tolist() == [10, 20, 30]
    assert top[3] == 50  # the only item seen three times
    assert sorted(top.tolist()) == [10, 20, 30, 40, 50]


def test_the_least_popular_are_forgotten_beyond_the_bound() -> None:
    tracker, feed, _ = _tracker(max_items=10, fresh_items=1)
    for item in range(1, 12):  # item k seen k times: 11 items, within the tenth of slack
        feed.add(ChangeOp.UPSERT, *([item] * item))
    tracker.poll_once()
    assert tracker.tracked == 11
    feed.add(ChangeOp.UPSERT, 100)
    feed.add(ChangeOp.UPSERT, 12, *([12] * 11))
    tracker.poll_once()
    # 13 tracked is past the slack: the ten most counted stay (12 down to 3)
    assert tracker.tracked == 10
    assert _counts(tracker, 1, 2, 100) == [0.0, 0.0, 0.0]
    assert tracker.candidates(50).tolist() == list(range(12, 2, -1))  # 12 is also the freshest


def test_weights_stay_finite_across_many_half_lives() -> None:
    tracker, feed, clock = _tracker(half_life_s=1.0)
    feed.add(ChangeOp.UPSERT, 5)
    tracker.poll_once()
    for _ in range(50):  # 10,000 half-lives in steps of 200: rebased every step
        clock.now += 200.0
        feed.add(ChangeOp.UPSERT, 6)
        tracker.poll_once()
    counts = _counts(tracker, 5, 6)
    assert all(math.isfinite(c) for c in counts)
    assert counts == pytest.approx([0.0, 1.0])
    assert tracker.candidates(5).tolist()[-2:] == [6, 5]


def test_it_follows_the_item_tables_own_feed() -> None:
    names = [f"i{j}" for j in range(30)]
    tables = seeded_tables(names, ["u0"], seed=3)
    tracker = PopularityTracker(tables.item)
    while tracker.poll_once(count=5):
        pass
    assert tracker.tracked == 30
    items = hash_features("item", names)
    assert sorted(tracker.candidates(100).tolist()) == sorted(items.tolist())


def test_a_backlog_is_drained_in_steps_and_its_lag_shown_until_the_end_is_reached() -> None:
    tracker, feed, clock = _tracker()
    for k in range(25):
        feed.add(ChangeOp.UPSERT, k + 1)
    assert tracker.feed_lag() == 0.0
    clock.now += 5.0
    # two full polls of 10, then the cap: still behind, lagging since it last reached the end
    assert tracker.drain(count=10, max_polls=2) == 20
    assert tracker.feed_lag() == pytest.approx(5.0)
    clock.now += 1.0
    assert tracker.feed_lag() == pytest.approx(6.0)
    # the rest, and a poll that comes back short: caught up
    assert tracker.drain(count=10, max_polls=2) == 5
    assert tracker.feed_lag() == 0.0
    assert tracker.tracked == 25
    assert tracker.drain(count=10) == 0
    assert tracker.feed_lag() == 0.0
