"""The packed layout's bucket of an id: in range, stable, and spread even for sequential ids."""

from __future__ import annotations

import numpy as np
import pytest

from freshrec.table.config import TableConfig
from freshrec.table.redis.packed import bucket_of_ids


def test_buckets_are_in_range_stable_and_even_for_sequential_ids() -> None:
    ids = np.arange(1, 320_001, dtype=np.uint64)
    buckets = bucket_of_ids(ids, 10_000)
    assert buckets.dtype == np.uint64 and int(buckets.max()) < 10_000
    np.testing.assert_array_equal(buckets, bucket_of_ids(ids.copy(), 10_000))
    counts = np.bincount(buckets.astype(np.int64), minlength=10_000)
    # 32 rows per bucket on average; a Poisson(32) spread stays well inside a listpack's 128.
    assert counts.min() > 5 and counts.max() < 70
    assert abs(counts.std() - np.sqrt(32)) < 1.0
    # Known value: SplitMix64's finalizer of 1 (a fixed layout, so stored tables stay readable).
    assert (
        int(bucket_of_ids(np.array([1], dtype=np.uint64), 2**32)[0]) == 0x5692161D100B05E5 % 2**32
    )


def test_packed_bucket_count_is_validated() -> None:
    with pytest.raises(ValueError, match="packed_buckets"):
        TableConfig(name="t", dim=4, layout="packed", packed_buckets=0)
