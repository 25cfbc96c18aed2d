"""The hashing-trick baseline shares rows between colliding ids, and says how many collide."""

from __future__ import annotations

import numpy as np

from freshrec.table import HashingTrickStore, InMemoryEmbeddingStore
from freshrec.table.config import SgdConfig, TableConfig, ZerosInit


def test_colliding_ids_share_one_row() -> None:
    config = TableConfig(name="h", dim=2, optimizer=SgdConfig(lr=1.0), initializer=ZerosInit())
    store = HashingTrickStore(InMemoryEmbeddingStore(config), buckets=10)
    ids = np.array([3, 13, 4, 2**64 - 3], dtype=np.uint64)  # 3, 13 and 2**64-3 share bucket 3
    grads = np.array([[1, 0], [0, 1], [5, 5], [1, 1]], dtype=np.float32)
    result = store.apply_gradients(ids, grads, 1.0)
    assert sorted(result.written.tolist()) == sorted(ids.tolist())
    assert result.created == 2
    got = store.lookup(np.array([3, 13, 23, 4], dtype=np.uint64))
    np.testing.assert_array_equal(got.vectors, [[-2, -2], [-2, -2], [-2, -2], [-5, -5]])
    rows = store.read_rows(np.array([23, 5, 4], dtype=np.uint64))
    assert rows.ids.tolist() == [23, 4]
    stats = store.collision_stats()
    assert (stats.ids_seen, stats.buckets_used, stats.colliding_ids) == (4, 2, 3)
    assert stats.collision_rate == 0.75
    assert store.stats().rows == 2


def test_collisions_grow_as_buckets_shrink() -> None:
    config = TableConfig(name="h", dim=1)
    ids = np.unique(np.random.default_rng(0).integers(0, 2**63, size=5000, dtype=np.uint64))
    rates = []
    for buckets in (1_000_000, 10_000, 1_000):
        store = HashingTrickStore(InMemoryEmbeddingStore(config), buckets=buckets)
        store.apply_gradients(ids, np.zeros((ids.shape[0], 1), np.float32), 0.0)
        rates.append(store.collision_stats().collision_rate)
    assert rates[0] < 0.02 < rates[1] < rates[2]
