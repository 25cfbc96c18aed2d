"""Admission decisions, independent of any store."""

from __future__ import annotations

import numpy as np

from freshrec.table.admission import admission_draws, decide_admission
from freshrec.table.config import CountingAdmission, NoAdmission, ProbabilisticAdmission


def _decide(config, exists, prior, occ, times=None):  # type: ignore[no-untyped-def]
    n = len(exists)
    return decide_admission(
        config,
        np.arange(1, n + 1, dtype=np.uint64),
        exists=np.array(exists, dtype=bool),
        prior_counts=np.array(prior, dtype=np.int64),
        occurrences=np.array(occ, dtype=np.int64),
        event_time=np.zeros(n) if times is None else np.array(times, dtype=np.float64),
    )


def test_no_admission_admits_all() -> None:
    d = _decide(NoAdmission(), [False, True], [0, 4], [1, 2])
    assert d.admitted.tolist() == [True, True] and d.counts.tolist() == [1, 6]


def test_counting_admits_on_min_count() -> None:
    d = _decide(
        CountingAdmission(min_count=3), [False, False, False, True], [0, 1, 2, 0], [2, 1, 1, 1]
    )
    assert d.admitted.tolist() == [False, False, True, True]
    assert d.counts.tolist() == [2, 2, 3, 1]


def test_probabilistic_is_deterministic_and_grows_with_occurrences() -> None:
    config = ProbabilisticAdmission(probability=0.1, seed=5)
    n = 50_000
    once = _decide(config, [False] * n, [0] * n, [1] * n)
    again = _decide(config, [False] * n, [0] * n, [1] * n)
    assert np.array_equal(once.admitted, again.admitted)
    five = _decide(config, [False] * n, [0] * n, [5] * n)
    expected = 1 - 0.9**5
    assert abs(five.admitted.mean() - expected) < 3 * (expected * (1 - expected) / n) ** 0.5
    assert five.admitted[once.admitted].all()  # more occurrences never admit fewer ids
    existing = _decide(config, [True] * 10, [0] * 10, [1] * 10)
    assert existing.admitted.all()


def test_draws_depend_on_event_time_and_seed() -> None:
    ids = np.arange(1000, dtype=np.uint64)
    a = admission_draws(1, ids, np.zeros(1000))
    assert not np.array_equal(a, admission_draws(1, ids, np.ones(1000)))
    assert not np.array_equal(a, admission_draws(2, ids, np.zeros(1000)))
    assert np.array_equal(a, admission_draws(1, ids, np.zeros(1000)))
