"""The evaluation's peers: item-to-item co-occurrence and periodically refitted ALS."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from freshrec.offline.evaluation.metrics import paired_difference
from freshrec.offline.evaluation.peers import (
    AlsConfig,
    Cooccurrence,
    PeriodicAls,
    als_unavailable,
)
from freshrec.offline.evaluation.stream import prepare_stream
from freshrec.training.examples import ExampleConfig

T0 = 880_000_000.0


def _rating(n: int, user: str, item: str, t: float, value: int = 5) -> dict[str, Any]:
    return {
        "event_id": f"e{n}",
        "type": "rating",
        "user_id": user,
        "item_id": item,
        "timestamp": T0 + t,
        "value": value,
    }


def _stream(events: list[dict[str, Any]]) -> Any:
    return prepare_stream(events, examples=ExampleConfig(), windows=1, rank_sample=1.0, seed=0)


def test_cooccurrence_is_the_cosine_of_user_sets() -> None:
    # u1: a b ; u2: a b c ; u3: a c -> co-counts ab=2, ac=2, bc=1; users: a 3, b 2, c 2
    pairs = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u2", "c")]
    pairs += [("u3", "a"), ("u3", "c"), ("u4", "b")]
    stream = _stream([_rating(n, u, i, float(n)) for n, (u, i) in enumerate(pairs)])
    peer = Cooccurrence(stream)
    peer.update(0, 7)  # every event but u4's
    a, b, c = 0, 1, 2  # catalog order of first appearance
    assert peer.counts[a, b] == peer.counts[b, a] == 2
    assert peer.counts[b, c] == 1 and peer.counts[a, a] == 0
    # a repeated interaction adds nothing
    before = peer.counts.copy()
    again = _stream([*[_rating(n, u, i, float(n)) for n, (u, i) in enumerate(pairs)]])
    twice = Cooccurrence(again)
    twice.update(0, 7)
    np.testing.assert_array_equal(twice.counts, before)
    # u4 has b: its score of a is cos(a, b) = 2 / sqrt(3 * 2), of c cos(b, c) = 1 / 2
    scores = peer.pair_scores(7, 8)  # u4's example on b itself: b with b never co-occurs
    assert scores[0] == 0.0
    peer.seen.history[3] = [b]
    user_scores = peer._user_scores(3, 3)
    assert user_scores[a] == pytest.approx(2 / np.sqrt(6))
    assert user_scores[c] == pytest.approx(0.5)


def test_cooccurrence_ranks_the_co_watched_item_first() -> None:
    # everyone who watched x then watched y; the query user watched x
    events: list[dict[str, Any]] = []
    for u in range(6):
        events.append(_rating(len(events), f"u{u}", "x", float(len(events))))
        events.append(_rating(len(events), f"u{u}", "y", float(len(events))))
    for filler in range(5):
        events.append(_rating(len(events), "other", f"f{filler}", float(len(events))))
    events.append(_rating(len(events), "q", "x", float(len(events))))
    events.append(_rating(len(events), "q", "y", float(len(events))))
    stream = _stream(events)
    peer = Cooccurrence(stream)
    n = len(events)
    peer.update(0, n - 1)
    lo, hi = stream.example_range(n - 1, n)
    qlo, qhi = stream.query_range(lo, hi)
    q = stream.queries
    recall, ndcg = peer.ranks(
        lo,
        q_local=q.example[qlo:qhi] - lo,
        sizes=np.maximum(q.available[qlo:qhi], q.target[qlo:qhi] + 1),
        available=q.available[qlo:qhi],
        target=q.target[qlo:qhi],
        history=q.history[qlo:qhi],
        k=1,
    )
    assert recall.tolist() == [1.0] and ndcg.tolist() == [1.0]


@pytest.mark.skipif(als_unavailable() is not None, reason="the eval extra is not installed")
def test_als_refits_once_per_day_and_scores_seen_pairs() -> None:
    events = []
    for day in range(3):
        for u in range(4):
            for i in range(3):
                t = day * 86_400.0 + u * 10 + i
                events.append(_rating(len(events), f"u{u}", f"i{(u + i + day) % 5}", t))
    stream = _stream(events)
    als = PeriodicAls(stream, AlsConfig(factors=4, iterations=3), seed=0)
    for start in range(0, len(events), 4):
        als.before_batch(start)
        als.update(start, start + 4)
    assert als.fits == 2  # days 1 and 2; day 0 had nothing to fit on yet
    assert als.pair_scores(0, len(events)).any()


def test_paired_difference() -> None:
    a = np.array([1.0, 0.0, 1.0, 1.0])
    b = np.array([0.0, 0.0, 1.0, 0.0])
    diff, se = paired_difference(a, b)
    assert diff == pytest.approx(0.5)
    assert se == pytest.approx(np.std([1, 0, 0, 1], ddof=1) / 2)
